"""diagnose(run): detect the significant jumps, explain each, and collect run-level findings.

    >>> import whyspike
    >>> d = whyspike.diagnose(whyspike.load_run("log.csv"))     # doctest: +SKIP
    >>> d.spikes[0].causes[0].id                                 # doctest: +SKIP
    'lr_schedule'
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .detect import Spike, detect_spikes
from .errors import UsageError
from .explain import explain
from .explain.findings import Finding
from .explain.lr import lr_changes
from .explain.missing import MissingSignal
from .run import Run, Series

SCHEMA = "whyspike/diagnosis-v1"


@dataclass
class Diagnosis:
    run: Run
    spikes: list[Spike]
    findings: list[Finding]
    missing: list[MissingSignal]
    metrics: list[str] = field(default_factory=list)  # the series that were searched

    def to_dict(self) -> dict:
        """DESIGN.md contract 2."""
        return {
            "schema": SCHEMA,
            "source": {"path": self.run.source.path, "format": self.run.source.format},
            "findings": [f.to_dict() for f in self.findings],
            "spikes": [_spike_dict(s) for s in self.spikes],
            "metrics": self.metrics,
            "setup": {k: v for k, v in vars(self.run.setup).items() if k != "config" and v is not None},
            "missing": [m.to_dict() for m in self.missing],
            "warnings": list(self.run.warnings),
        }


def _num(v):
    return v.item() if hasattr(v, "item") else v


def _spike_dict(s: Spike) -> dict:
    d = {
        "metric": s.metric, "axis": s.axis, "at": _num(s.at), "direction": s.direction, "shape": s.shape,
        "size": round(s.size, 6), "noise": round(s.noise, 6), "significance": round(s.significance, 2),
        "before": round(s.before, 6), "after": round(s.after, 6),
        "causes": [c.to_dict() for c in s.causes],
    }
    if s.binomial_noise is not None:
        d["binomial_noise"] = round(s.binomial_noise, 6)
    if s.shape == "transient":
        d["width"] = s.width
    return d


def _lr_still_matters(run: Run, change) -> bool:
    """An LR change below 1e-4 of the run's peak LR moves nothing: it is no reason to look for a jump there."""
    lr = run.learning_rate(change.axis)
    if lr is None or change.series == "config":
        return True
    peak = float(np.nanmax(lr.y)) if len(lr) else 0.0
    return peak <= 0 or max(change.before, change.after) >= 1e-4 * peak


def _int_or_none(v) -> int | None:
    try:
        return int(v) if v else None
    except (TypeError, ValueError):
        return None


def _full_batches(run: Run, s: Series) -> Series:
    """The series without its points from short batches (an epoch's last, smaller batch), when batch sizes are
    logged: a batch of 8 after batches of 32 is twice as noisy and would be scored as if it were not."""
    samples = run.series.get("step/samples") if s.axis == "step" else None
    if samples is None or s.name == samples.name:
        return s
    # samples.x is sorted and unique (make_series): look every step up at once, NaN where no size was logged
    i = np.clip(np.searchsorted(samples.x, s.x), 0, len(samples) - 1)
    sizes = np.where(samples.x[i] == s.x, samples.y[i], np.nan)
    full = np.nanmedian(sizes) if np.isfinite(sizes).any() else np.nan
    keep = ~(sizes < 0.5 * full)
    if keep.all():
        return s
    return replace(s, x=s.x[keep], y=s.y[keep], wall_time=None if s.wall_time is None else s.wall_time[keep])


def diagnose(run: Run, metric: str | None = None) -> Diagnosis:
    """Detect and explain the jumps in ``run`` (every accuracy/loss series, or only ``metric``)."""
    if metric is not None:
        if metric not in run.series:
            names = ", ".join(sorted(run.series)[:12])
            raise UsageError(f"{run.source.path}: no series named {metric!r} — available: {names}")
        targets = [run.series[metric]]
    else:
        targets = run.metric_series
    changes = [c for c in lr_changes(run) if _lr_still_matters(run, c)]
    rewinds = [e for e in run.events if e.kind in ("step_rewind", "wall_gap", "run_start")]
    spikes: list[Spike] = []
    for s in targets:
        hints = [c.at for c in changes if c.axis == s.axis] + [e.at for e in rewinds if e.axis == s.axis]
        spikes.extend(detect_spikes(_full_batches(run, s), eval_size=run.setup.eval_size, hints=hints,
                                    batch_size=_int_or_none(run.setup.batch_size)))
    spikes.sort(key=lambda s: -s.significance)
    findings, missing = explain(run, spikes)
    return Diagnosis(run, spikes, findings, missing, [s.name for s in targets])

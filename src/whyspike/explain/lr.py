"""Learning-rate changes read from a logged LR series, or from a configured step schedule when none is logged.

A change is a ratio of at least 1.25 between consecutive logged values: decays, plateau reductions, restarts,
increases. The end of a warmup ramp (the LR rising for several points, then flat or falling) is one too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..run import Run, Series

MIN_RATIO = 1.25


@dataclass(frozen=True)
class LrChange:
    axis: str
    at: float  # first position logged with the new LR
    before: float
    after: float
    kind: str  # decay | increase | restart | warmup_end
    series: str  # the LR series it was read from, or "config"

    @property
    def factor(self) -> float:
        return self.after / self.before if self.before else float("inf")


def _from_series(s: Series) -> list[LrChange]:
    ok = np.isfinite(s.y) & (s.y >= 0)
    x, y = s.x[ok], s.y[ok]
    if len(y) < 2:
        return []
    out: list[LrChange] = []
    initial = y[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = y[1:] / y[:-1]
    for i in np.flatnonzero((ratio >= MIN_RATIO) | (ratio <= 1 / MIN_RATIO)) + 1:
        if y[i] > y[i - 1]:
            # back up to (nearly) the starting LR after having decayed: a (warm) restart or a resume that lost
            # the scheduler state; which one is for the resume module to say
            kind = "restart" if y[i] >= 0.8 * initial and y[: i].min() < 0.5 * initial else "increase"
        else:
            kind = "decay"
        out.append(LrChange(s.axis, float(x[i]), float(y[i - 1]), float(y[i]), kind, s.name))
    peak = _warmup_peak(y)
    if peak is not None:
        out.append(LrChange(s.axis, float(x[peak]), float(y[0]), float(y[peak]), "warmup_end", s.name))
    return out


def _warmup_peak(y: np.ndarray) -> int | None:
    """Index where a warmup ramp ends: the LR rose over >= 3 points to at least 3x its first value, then stops."""
    if len(y) < 5:
        return None
    peak = int(np.argmax(y))
    if peak < 3 or y[0] > y[peak] / 3:
        return None
    rise = np.diff(y[: peak + 1])
    if np.mean(rise >= 0) < 0.9:
        return None
    if peak == len(y) - 1:
        return None  # still ramping: the warmup has not ended within the log
    return peak


def _from_config(run: Run) -> list[LrChange]:
    st = run.setup
    if not st.lr_milestones or not st.learning_rate or not st.lr_decay_factor:
        return []
    lr = st.learning_rate
    out = []
    for m in sorted(st.lr_milestones):
        out.append(LrChange("epoch", float(m), lr, lr * st.lr_decay_factor, "decay", "config"))
        lr *= st.lr_decay_factor
    return out


def lr_changes(run: Run) -> list[LrChange]:
    """All LR changes the run shows, on every axis that has an LR series (config milestones if none does)."""
    out: list[LrChange] = []
    seen_axes = set()
    for s in run.find(kind="lr"):
        if s.axis in seen_axes:
            continue  # several LR series on one axis (param groups): the longest speaks for them
        seen_axes.add(s.axis)
        out.extend(_from_series(s))
    if "epoch" not in seen_axes:
        out.extend(_from_config(run))
    return sorted(out, key=lambda c: (c.axis, c.at))

"""Explain: turn each spike into ranked causes and the run into findings, from the evidence the run holds."""

from __future__ import annotations

from ..detect import Spike
from ..run import Run
from .cause import Cause, Context
from .causes import MODULES
from .findings import Finding, run_findings
from .missing import MissingSignal, missing_signals

MIN_CONFIDENCE = 0.08


def explain_spike(spike: Spike, ctx: Context) -> list[Cause]:
    """Every cause module's hypothesis for ``spike``, best first; ``unknown`` when none is credible."""
    causes = [c for m in MODULES if (c := m.assess(spike, ctx)) is not None and c.confidence >= MIN_CONFIDENCE]
    causes.sort(key=lambda c: -c.confidence)
    if not causes or causes[0].confidence < 0.3:
        recorded = ctx.run.source.format == "whyspike-run"
        causes.append(Cause("unknown", 0.2, ["no cause family fits the evidence in this log well"], "—",
                            "re-record with --detailed (train-set eval, PreciseBN, per-example correctness)"
                            if recorded else
                            "record the run with a whyspike recorder to log LR, gradient norms and BN statistics"))
        causes.sort(key=lambda c: -c.confidence)
    return causes


def explain(run: Run, spikes: list[Spike]) -> tuple[list[Finding], list[MissingSignal]]:
    """Attach ranked causes to each spike (in place); return the run's findings and the signals it lacks."""
    ctx = Context.build(run, spikes)
    for s in spikes:
        s.causes = explain_spike(s, ctx)
    return run_findings(ctx), missing_signals(run)


__all__ = ["Cause", "Context", "Finding", "MissingSignal", "explain", "explain_spike"]

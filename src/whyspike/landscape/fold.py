"""Landscape measurements folded into a diagnosis: each :class:`~whyspike.landscape.evidence.LandscapeEvidence`
adds its confidence adjustment to its cause at the measured jump and puts its sentences first in that cause's
evidence (a cause the measurements speak for but the logs did not propose is added). No torch needed."""

from __future__ import annotations

from ..explain.cause import Cause
from .evidence import landscape_evidence


def measured_spike(diagnosis, report: dict):
    """The spike of ``diagnosis`` the landscape report measured (same epoch give or take one, its metric first)."""
    sp = report.get("spike") or {}
    at = sp.get("at")
    if at is None:
        return None
    near = [s for s in diagnosis.spikes if s.axis == sp.get("axis", "epoch") and abs(float(s.at) - float(at)) <= 1]
    near.sort(key=lambda s: (s.metric != sp.get("metric"), abs(float(s.at) - float(at)), -s.significance))
    return near[0] if near else None


def fold(diagnosis, report: dict) -> bool:
    """Apply ``report`` (a ``whyspike/landscape-v1`` dict) to the spike it measured; False when there is none."""
    spike = measured_spike(diagnosis, report)
    if spike is None:
        return False
    causes = {c.id: c for c in spike.causes}
    for ev in landscape_evidence(report):
        c = causes.get(ev.cause)
        if c is None:
            if ev.confidence_delta <= 0:
                continue
            c = causes[ev.cause] = Cause(ev.cause, 0.0, [], "", "")
        c.confidence = min(1.0, max(0.0, c.confidence + ev.confidence_delta))
        c.evidence[:0] = [f"landscape: {e}" for e in ev.evidence]
    spike.causes = sorted(causes.values(), key=lambda c: -c.confidence)
    return True

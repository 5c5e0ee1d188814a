"""Probe verdicts folded into a diagnosis: each intervention is evidence for or against the cause it tests, so a
cause a probe confirmed rises (and says "confirmed by probe"), one a probe refuted falls."""

from __future__ import annotations

from ..explain.cause import Cause

# which cause an intervention tests, and whether "removed"/"moved" confirms it
TESTS = {"lr.shift": "lr_schedule", "lr.decay": "lr_schedule", "lr.hold": "lr_schedule", "lr.warmup": "lr_warmup",
         "bn.recompute": "batchnorm_statistics", "bn.norm": "batchnorm_statistics",
         "bn.momentum": "batchnorm_statistics", "lr.scale": "optimization_instability", "wd": "grokking",
         "wd.scale": "grokking", "momentum": "stochastic", "batch.scale": "stochastic", "shuffle": "data_pipeline",
         "skip": "data_pipeline"}


def probed_spike(diagnosis, result: dict):
    """The spike of ``diagnosis`` a probe result is about: at the probed epoch (give or take one), the probed
    metric's name first; None when the diagnosis has no such spike."""
    at = result.get("spike", {}).get("at")
    if at is None:
        return None
    near = [s for s in diagnosis.spikes if s.axis == "epoch" and abs(float(s.at) - float(at)) <= 1]
    near.sort(key=lambda s: (s.metric != result.get("metric"), abs(float(s.at) - float(at)), -s.significance))
    return near[0] if near else None


def fold(diagnosis, result: dict) -> bool:
    """Update the causes of the probed spike of ``diagnosis`` in place (re-ranked) from a probe result document;
    False when the diagnosis has no spike at the probed epoch."""
    spike = probed_spike(diagnosis, result)
    if spike is None:
        return False
    causes = {c.id: c for c in spike.causes}
    for v in result.get("interventions", []):
        cid = TESTS.get(v["name"].split("=")[0])
        if cid is None or v.get("verdict") not in ("moved", "removed", "unchanged"):
            continue
        c = causes.get(cid)
        if c is None:
            c = causes[cid] = Cause(cid, 0.2, [], "", "")
        confirmed = v["verdict"] == "moved" if v["name"].startswith("lr.shift") else v["verdict"] in ("moved",
                                                                                                          "removed")
        if confirmed:
            c.confidence = max(c.confidence, 0.95)
            c.evidence.insert(0, f"confirmed by probe {v['name']}: {v.get('message', v['verdict'])}")
        else:
            c.confidence = min(c.confidence, 0.15)
            c.evidence.insert(0, f"refuted by probe {v['name']}: {v.get('message', v['verdict'])}")
    band = result.get("baseline", {})
    if band.get("jumps"):
        c = causes.get("stochastic") or Cause("stochastic", 0.2, [], "", "")
        causes["stochastic"] = c
        if band.get("reproducible"):
            c.confidence = min(c.confidence, 0.1)
            c.evidence.insert(0, "refuted by probe seeds: the jump recurs at the same epoch across seeds")
        else:
            c.confidence = max(c.confidence, 0.8)
            c.evidence.insert(0, "supported by probe seeds: the jump does not recur at the same epoch across seeds")
    spike.causes = sorted(causes.values(), key=lambda c: -c.confidence)
    return True

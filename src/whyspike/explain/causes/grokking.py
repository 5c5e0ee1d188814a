"""grokking: validation accuracy rises abruptly long after the training set is fit."""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt


def assess(spike: Spike, ctx: Context) -> Cause | None:
    s = ctx.series(spike)
    better = (spike.direction == "up") == bool(s.role.higher_is_better)
    if s.role.split != "val" or not better or ctx.changes_near(spike):
        return None
    # grokking is a large, steep rise in generalization, not a small late drift
    if s.role.kind == "accuracy" and spike.size < 0.1 * s.role.scale:
        return None
    if s.role.kind == "loss" and spike.size < 0.3 * abs(spike.before):
        return None
    if s.role.kind not in ("accuracy", "loss"):
        return None
    start = ctx.start(spike)
    for tr in ctx.run.find(kind="accuracy", split="train", axis=spike.axis):
        ok = np.isfinite(tr.y)
        x, y = tr.x[ok], tr.y[ok]
        sat = np.flatnonzero(y >= 0.98 * tr.role.scale)
        if not len(sat) or x[sat[0]] >= start:
            continue
        fit_at = float(x[sat[0]])
        lead = start - fit_at
        span = max(start - float(x[0]), 1)
        if lead < 0.3 * span or lead < 3:
            continue
        unit = ctx.unit(spike.axis)
        ev = [f"{tr.name} reached {fmt(y[sat[0]])} at {unit} {fmt(fit_at)}, {fmt(lead)} {unit}s before "
              f"{spike.metric} rose {fmt(spike.before)} -> {fmt(spike.after)} at {fmt(start)}"]
        conf = 0.6
        for wn in ctx.run.find(kind="weight_norm", axis=spike.axis):
            before, after = wn.value_at(fit_at), wn.value_at(start)
            if before and after and after < 0.9 * before:
                conf += 0.2
                ev.append(f"{wn.name} fell {fmt(before)} -> {fmt(after)} meanwhile: weight decay shrinking the "
                          "memorizing solution")
                break
        wd = ctx.run.setup.weight_decay
        if wd:
            conf += 0.05
            ev.append(f"weight decay is on ({fmt(wd)})")
        elif wd == 0:  # known to be off: the usual driver of a late generalization is missing
            conf -= 0.25
            ev.append("but weight decay is off (0), and without it a late rise in generalization rarely comes")
        return Cause("grokking", min(conf, 0.9), ev,
                     "the rise comes at the same point with weight decay off, or does not move when lr*wd changes",
                     "re-run with weight decay x0.5 and x2: a grokking jump moves roughly as 1/(lr*wd); with wd=0 it "
                     "usually does not come at all")
    return None

"""stochastic: SGD / momentum noise, initialization, data order — a jump tied to no event."""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt
from .resume import _rewind_before


def assess(spike: Spike, ctx: Context) -> Cause | None:
    unit = ctx.unit(spike.axis)
    r = ctx.radius(spike, epochs=3)
    near_lr = ctx.changes_near(spike, before=r, after=r)
    near_ev = ctx.events_near(spike, ("step_rewind", "wall_gap", "run_start"), r)
    if near_lr or near_ev or _rewind_before(spike, ctx):
        return Cause("stochastic", 0.05, ["a logged event sits near the jump, which makes chance the weaker reading"],
                     "the jump keeps its position across seeds", "re-run with 3 seeds")
    full = ctx.full_batch()
    if full:
        return Cause("stochastic", 0.05,
                     [f"every step uses the whole training set ({full} examples): there is no minibatch sampling "
                      "noise, so chance can only enter through the initialization"],
                     "the jump moves or vanishes with another initialization seed",
                     "re-run with 3 initialization seeds")
    conf = 0.35 if spike.shape == "transient" else 0.25
    ev = [f"no learning-rate change, resume or other logged event within {fmt(r)} {unit}s of {fmt(spike.at)}"]
    if spike.significance < 8:
        conf += 0.1
        ev.append(f"the change is {spike.significance:.1f}x its noise: real, but of the size chance swings reach in "
                  "a long noisy run")
    lr = ctx.run.learning_rate(spike.axis)
    if lr is not None:
        i = int(np.searchsorted(lr.x, ctx.start(spike), side="right")) - 1
        top = float(np.nanmax(lr.y)) if len(lr) else 0.0
        if 0 <= i < len(lr) and top > 0 and lr.y[i] >= 0.5 * top:
            conf += 0.05
            ev.append(f"{lr.name} was still {fmt(float(lr.y[i]))}, in its high phase, where SGD noise is largest")
    return Cause("stochastic", conf, ev,
                 "the jump comes at the same position with other initialization and data-order seeds",
                 "re-run with 3 initialization seeds and, separately, 3 data-order seeds: a stochastic jump moves or "
                 "vanishes; lowering the LR or doubling the batch shrinks such swings")

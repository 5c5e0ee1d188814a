"""optimization_instability: a step too large for the curvature (catapult, edge of stability, Adam spikes)."""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt


def assess(spike: Spike, ctx: Context) -> Cause | None:
    s = ctx.series(spike)
    worse = (spike.direction == "up") != bool(s.role.higher_is_better)
    if not worse:
        return None
    unit = ctx.unit(spike.axis)
    start = ctx.start(spike)
    ev: list[str] = []
    conf = 0.2 if spike.shape == "transient" else 0.12
    lr = ctx.run.learning_rate(spike.axis)
    if lr is not None:
        here = _value_near(lr, start)
        top, low = float(np.nanmax(lr.y)), float(np.nanmin(lr.y))
        # "at its peak" only means something when the LR moves at all
        if here is not None and top > 0 and top > 1.5 * low and here >= 0.9 * top:
            conf += 0.2
            ev.append(f"{lr.name} was at its peak ({fmt(here)}) when {spike.metric} worsened: the largest step "
                      "size of the run")
    first = float(s.x[0])
    if start - first <= max(3, 0.05 * (float(s.x[-1]) - first)) and spike.axis == "step":
        conf += 0.1
        ev.append(f"the spike comes in the first steps ({unit} {fmt(start)}), before the curvature has adapted")
    for g in ctx.run.find(kind="grad_norm", axis=spike.axis):
        v = _value_near(g, start)
        med = float(np.nanmedian(g.y))
        if v is not None and med > 0 and v > 3 * med:
            conf += 0.3
            ev.append(f"{g.name} reached {fmt(v)} at {unit} {fmt(start)}, {fmt(v / med)}x its median")
            break
    if s.role.split == "val" and ctx.run.find(kind=s.role.kind, split="train", axis=spike.axis) and not any(
            ctx.run.series[p.metric].role.split == "train" for p in ctx.partners(spike)):
        conf -= 0.1  # an optimizer blow-up shows in the training curve too; this one did not
    if not np.all(np.isfinite(s.y[spike.start_index :])):
        conf += 0.2
        ev.append(f"{spike.metric} turns NaN/inf after the spike: divergence")
    if not ev:
        ev.append(f"{spike.metric} worsened abruptly ({fmt(spike.before)} -> {fmt(spike.after)}) with no logged "
                  "event nearby; a step too large for the local curvature is one way that happens")
    return Cause("optimization_instability", min(conf, 0.9), ev,
                 "halving the learning rate from the checkpoint before the spike leaves it unchanged",
                 "branch from the checkpoint before the spike with lr x0.5 (and with gradient clipping): an "
                 "instability spike vanishes; compare the top Hessian eigenvalue with 2/lr there")


def _value_near(s, at: float) -> float | None:
    i = int(np.searchsorted(s.x, at, side="right")) - 1
    if 0 <= i < len(s):
        v = float(s.y[i])
        return v if np.isfinite(v) else None
    return None

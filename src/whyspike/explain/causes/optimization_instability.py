"""optimization_instability: a step too large for the curvature (catapult, edge of stability, Adam spikes)."""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt


REFUTED = "halving the learning rate from the checkpoint before the spike leaves it unchanged"
PROBE = ("branch from the checkpoint before the spike with lr x0.5 (and with gradient clipping): an instability "
         "spike vanishes; compare the top Hessian eigenvalue with 2/lr there")


def _worse(spike: Spike, ctx: Context) -> bool:
    return (spike.direction == "up") != bool(ctx.series(spike).role.higher_is_better)


def _catapult(spike: Spike, ctx: Context) -> Cause | None:
    """An improvement that undoes a rise of the same metric just before it — the way back from a spike (the catapult:
    a step too large for the curvature throws the weights out of a sharp valley; they settle in a flatter one)."""
    start, unit = ctx.start(spike), ctx.unit(spike.axis)
    radius = ctx.radius(spike)
    rise = _rise_before(spike, ctx, radius)
    if rise is None:
        return None
    low_at, low, high_at, high = rise
    verb = "fell" if spike.direction == "down" else "rose"
    conf = 0.45
    ev = [f"{spike.metric} went {fmt(low)} -> {fmt(high)} (worse) between {unit}s {fmt(low_at)} and {fmt(high_at)}, "
          f"then {verb} to {fmt(spike.after)} from {unit} {fmt(start)}: a spike and its way back, as in the "
          "catapult — a step too large for the curvature throws the weights out of a sharp valley and they settle "
          "in a flatter one"]
    full = ctx.full_batch()
    if full:
        conf += 0.1
        ev.append(f"training is full-batch ({full} examples per step): no sampling noise made that spike")
    return Cause("optimization_instability", conf, ev, REFUTED, PROBE)


def _rise_before(spike: Spike, ctx: Context, radius: float) -> tuple[float, float, float, float] | None:
    """(x_low, low, x_high, high) when, within ``radius`` before an improvement, the series first worsened by at
    least half the improvement and peaked right before it: the improvement undoes a spike (found as a spike by the
    detector, or too gradual a rise to be one)."""
    s = ctx.series(spike)
    start = ctx.start(spike)
    if not ctx.full_batch() and not (spike.local_noise < 0.1 * spike.size):
        return None  # a noisy curve rises and falls by itself within any window: no excursion can be read off it
    ok = np.isfinite(s.y) & (s.x >= start - radius) & (s.x < start)
    x, y = s.x[ok], s.y[ok]
    if len(y) < 4:
        return None
    sign = 1.0 if spike.direction == "down" else -1.0  # +1: the improvement is a fall, so the spike was a rise
    low = int(np.argmin(sign * y))  # the best point before it, then the worst after that one
    peak = low + int(np.argmax(sign * y[low:]))
    rise = sign * (y[peak] - y[low])
    near_peak = sign * (y[peak] - spike.before) >= -0.25 * spike.size  # the improvement starts from that peak
    if rise < 0.5 * spike.size or not near_peak or peak == low:
        return None
    return float(x[low]), float(y[low]), float(x[peak]), float(y[peak])


def assess(spike: Spike, ctx: Context) -> Cause | None:
    s = ctx.series(spike)
    if not _worse(spike, ctx):
        return _catapult(spike, ctx)
    unit = ctx.unit(spike.axis)
    start = ctx.start(spike)
    ev: list[str] = []
    conf = 0.2 if spike.shape == "transient" else 0.12
    full = ctx.full_batch()
    if full and s.role.split != "val":
        # gradient descent on the whole training set lowers the training loss at every step unless the step size
        # exceeds 2/curvature along some direction: there is no sampling noise to blame for a rise
        conf += 0.35
        ev.append(f"training is full-batch ({full} examples per step): without sampling noise gradient descent "
                  "only raises the training loss when the step is too large for the curvature (lr > 2/sharpness)")
    others = [o for o in ctx.spikes if o is not spike and o.metric == spike.metric and o.shape == "transient"
              and _worse(o, ctx) and not ctx.changes_near(o)]
    if len(others) >= 2 and not ctx.changes_near(spike):
        conf += 0.1
        ev.append(f"{spike.metric} spikes {len(others) + 1} times at a steady learning rate while trending "
                  "down: the edge-of-stability pattern (sharpness climbing to 2/lr, a spike, back below)")
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
    return Cause("optimization_instability", min(conf, 0.9), ev, REFUTED, PROBE)


def _value_near(s, at: float) -> float | None:
    i = int(np.searchsorted(s.x, at, side="right")) - 1
    if 0 <= i < len(s):
        v = float(s.y[i])
        return v if np.isfinite(v) else None
    return None

"""lr_warmup: a spike where a warmup ramp ends and the LR reaches its peak."""

from __future__ import annotations

from ...detect import Spike
from ..cause import Cause, Context, fmt


def assess(spike: Spike, ctx: Context) -> Cause | None:
    radius = ctx.radius(spike, epochs=3)
    near = [c for c in ctx.changes_near(spike, before=radius, after=radius) if c.kind == "warmup_end"]
    if not near:
        return None
    c = near[0]
    unit = ctx.unit(spike.axis)
    s = ctx.series(spike)
    worse = (spike.direction == "up") != bool(s.role.higher_is_better)
    conf = 0.7 if worse else 0.35
    ev = [f"{c.series}: the warmup ramp {fmt(c.before)} -> {fmt(c.after)} peaks at {unit} {fmt(c.at)}, "
          f"{fmt(abs(ctx.start(spike) - c.at))} {unit}(s) from the jump at {fmt(spike.at)}"]
    if worse:
        ev.append(f"{spike.metric} got worse there ({fmt(spike.before)} -> {fmt(spike.after)}): the peak LR is the "
                  "largest step size of the run")
    return Cause("lr_warmup", conf, ev,
                 "a twice longer warmup (or a lower peak LR) leaves the spike as large and in place",
                 "re-run with the warmup doubled (lr.warmup=x2) and, separately, with another data-order seed: "
                 "the spike should move or shrink with the warmup, not with the seed")

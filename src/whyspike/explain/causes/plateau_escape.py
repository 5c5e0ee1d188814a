"""plateau_escape: leaving a plateau or saddle — a long flat stretch at a poor value, then a sharp improvement."""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt


def assess(spike: Spike, ctx: Context) -> Cause | None:
    s = ctx.series(spike)
    better = (spike.direction == "up") == bool(s.role.higher_is_better)
    if not better or spike.shape != "step" or ctx.changes_near(spike):
        return None
    y = s.y[np.isfinite(s.y)]
    i = spike.start_index
    # the stretch before the jump, less its last few points: an escape accelerates smoothly, and the detector
    # places the change in the middle of that descent
    onset = max(1, spike.window // 4)
    pre = y[max(0, i - 3 * max(spike.window, 5)) : max(0, i - onset)]
    if len(pre) < 8:
        return None
    drift = abs(pre[-1] - pre[0])
    if drift > 0.25 * spike.size:
        return None  # it was still moving: not a plateau
    rest = y[i:]
    total = abs(np.nanmax(y) - np.nanmin(y))
    # large against the whole curve, or against where it stood (the later, smaller steps of a staircase)
    if total <= 0 or (spike.size < 0.2 * total and spike.size < 0.3 * abs(spike.before)):
        return None
    unit = ctx.unit(spike.axis)
    return Cause("plateau_escape", 0.45,
                 [f"{s.name} stayed within {fmt(drift)} of {fmt(float(np.median(pre)))} for {len(pre)} {unit}s, then "
                  f"moved {fmt(spike.size)} at {fmt(spike.at)} with no LR change nearby (final {fmt(float(rest[-1]))})"],
                 "a larger initialization scale leaves the plateau as long",
                 "re-run with the initialization scale x3 and with 3 seeds: a plateau shortens with larger init and "
                 "its end moves only a little across seeds")

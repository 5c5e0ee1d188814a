"""eval_noise: a change within the sampling noise of the evaluation set — not a real change."""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt


def assess(spike: Spike, ctx: Context) -> Cause | None:
    s = ctx.series(spike)
    n = ctx.run.setup.eval_size
    if s.role.kind != "accuracy" or s.role.split != "val" or not n:
        return None
    p = np.clip(spike.before / s.role.scale, 0, 1)
    sd = s.role.scale * np.sqrt(max(p * (1 - p), 0.25 / n) / n)
    z = spike.size / (sd * np.sqrt(2))
    how = "inferred from the granularity of the logged accuracies" if ctx.run.setup.eval_size_inferred else "given"
    ev = [f"the evaluation set has {n} examples ({how}): one accuracy reading has a sampling s.d. of {fmt(sd)}, "
          f"so the change of {fmt(spike.size)} is {z:.1f} s.d. of a difference of two readings"]
    conf = 0.7 if z < 2 else 0.4 if z < 3 else 0.04
    return Cause("eval_noise", conf, ev,
                 "a larger evaluation set (or a McNemar test on per-example predictions) shows the same change",
                 "bootstrap the evaluation set, or compare per-example predictions of consecutive checkpoints with a "
                 "McNemar test (no retraining)")

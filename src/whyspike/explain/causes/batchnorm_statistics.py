"""batchnorm_statistics: an eval-path discrepancy — train smooth and high, validation swinging.

BatchNorm running statistics that lag the weights are the usual cause (they are used only in eval mode).
"""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt


def _swing(y: np.ndarray) -> float:
    d = np.diff(y[np.isfinite(y)])
    return float(np.median(np.abs(d))) if len(d) >= 3 else float("nan")


def assess(spike: Spike, ctx: Context) -> Cause | None:
    s = ctx.series(spike)
    if s.role.split != "val" or s.role.kind not in ("accuracy", "loss"):
        return None
    if any(ctx.run.series[p.metric].role.split == "train" for p in ctx.partners(spike)):
        return None  # train jumped too: not an eval-path effect
    trains = ctx.run.find(kind=s.role.kind, split="train", axis=spike.axis)
    if not trains:
        return None
    tr = trains[0]
    i = spike.start_index
    lo, hi = max(0, i - 10), i + 10
    sw_val, sw_tr = _swing(s.y[lo:hi]), _swing(tr.y[lo:hi])
    if not (np.isfinite(sw_val) and np.isfinite(sw_tr)) or sw_val < 3 * max(sw_tr, 1e-12):
        return None
    ev = [f"around {ctx.unit(spike.axis)} {fmt(spike.at)} {s.name} swings by a median {fmt(sw_val)} per "
          f"{ctx.unit(spike.axis)} while {tr.name} moves only {fmt(sw_tr)}: the model is steady in train mode "
          "and unsteady in eval mode"]
    conf = 0.3
    if s.role.kind == "accuracy":
        gap = np.nanmedian(tr.y[lo:hi]) - np.nanmedian(s.y[lo:hi])
        if gap > 0.05 * s.role.scale:
            conf += 0.1
            ev.append(f"{tr.name} sits {fmt(gap)} above {s.name} there")
    if ctx.run.setup.has_batchnorm:
        conf += 0.15
        ev.append("the model has BatchNorm layers, whose running statistics are used only in eval mode")
    elif ctx.run.setup.has_batchnorm is None:
        ev.append("whether the model has BatchNorm is not in the log")
    return Cause("batchnorm_statistics", min(conf, 0.8), ev,
                 "re-evaluating the same checkpoints with recomputed BatchNorm statistics leaves the swings",
                 "recompute BN statistics on ~100 training batches with frozen weights (PreciseBN) and re-evaluate "
                 "the checkpoints around the jump — no retraining; also evaluate in train mode")

"""running_average: a train metric averaged over the epoch while the model changes (Keras' default)."""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt


def first_epoch_gap(ctx: Context, kind: str = "accuracy") -> tuple[str, str, float, float] | None:
    """(train name, val name, train[0], val[0]) when the first train value sits far on the bad side of val.

    Only the metric as the training loop reports it (``accuracy``, not ``train_eval_accuracy``) against its own
    validation twin (``val_accuracy``, not ``val_precise_bn_accuracy``) when such a pair exists.
    """
    trains = [s for s in ctx.run.find(kind=kind, split="train", axis="epoch") if "train_eval" not in s.name]
    vals = [s for s in ctx.run.find(kind=kind, split="val", axis="epoch") if "precise_bn" not in s.name]
    twins = [(t, v) for t in trains for v in vals if v.name in (f"val_{t.name}", f"validation/{t.name}")]
    for tr, va in twins or [(t, v) for t in trains for v in vals]:
        if len(tr) < 2 or len(va) < 1 or tr.x[0] != va.x[0]:
            continue
        t0, v0 = float(tr.y[0]), float(va.y[0])
        if not (np.isfinite(t0) and np.isfinite(v0)):
            continue
        scale = tr.role.scale if kind == "accuracy" else max(abs(v0), 1e-12)
        worse = (v0 - t0) if kind == "accuracy" else (t0 - v0)
        if worse > 0.1 * scale and _closes(tr, va, kind, worse):
            return tr.name, va.name, t0, v0
    return None


def _closes(tr, va, kind: str, first_gap: float) -> bool:
    """The gap is the first epoch's only: by the second it has (at least) halved. A gap that stays (training labels
    noisier than validation's, augmented training batches) has another cause than the averaging."""
    if len(tr) < 2 or len(va) < 2 or tr.x[1] != va.x[1]:
        return True  # nothing to compare with: the first epoch alone speaks
    t1, v1 = float(tr.y[1]), float(va.y[1])
    if not (np.isfinite(t1) and np.isfinite(v1)):
        return True
    gap = (v1 - t1) if kind == "accuracy" else (t1 - v1)
    return gap <= 0.5 * first_gap


def assess(spike: Spike, ctx: Context) -> Cause | None:
    s = ctx.series(spike)
    if s.axis != "epoch" or s.role.split != "train" or spike.start_index > 2:
        return None
    gap = first_epoch_gap(ctx, s.role.kind if s.role.kind in ("accuracy", "loss") else "accuracy")
    if gap is None:
        return None
    tr, va, t0, v0 = gap
    return Cause("running_average", 0.75,
                 [f"{tr} in the first epoch ({fmt(t0)}) is far worse than {va} measured at its end ({fmt(v0)}): "
                  "the train value is a running mean over an epoch in which the model improved quickly"],
                 "evaluating the training set with the end-of-epoch weights gives the same low value",
                 "re-evaluate the training set at each epoch end with frozen weights (no retraining) and compare")

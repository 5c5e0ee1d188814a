"""1-D linear interpolation between two checkpoints, and beyond both ends.

θ(α) = (1−α)·θ_a + α·θ_b for α on a grid over [-0.5, 1.5] by default (0 and 1 always included): the train (and
validation) loss and accuracy at each point, in evaluation mode. BatchNorm running statistics are interpolated
with the weights (integer counters are taken from the nearer end).

Barrier: the standard linear-mode-connectivity definition (Frankle et al. 2020; Entezari et al. 2022), the largest
excess of the loss over the straight line between the end losses,

    barrier = max_{α∈[0,1]} L(θ(α)) − [(1−α)·L(θ_a) + α·L(θ_b)]      (≥ 0; 0 = no barrier)

``rise_above_endpoints`` = max_{α∈[0,1]} L − max(L(0), L(1)) is reported too (≤ 0 when the path never goes above
the higher end). ``monotonic``: the loss on [0, 1] moves in one direction, every step against that direction
smaller than 1e-3 of the loss scale.

For a quadratic loss L(θ) = ½θᵀAθ, L(α) − line = −½·α(1−α)·dᵀAd with d = θ_b − θ_a, so the barrier is −dᵀAd/8 at
α = ½ when dᵀAd < 0 and 0 otherwise (checked in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import require
from ._hvp import EVAL_MODE, ModelLoss

torch = require("torch", "torch")


@dataclass
class Interpolation:
    alphas: list[float]
    train_loss: list[float]
    train_accuracy: list[float] | None
    val_loss: list[float] | None
    val_accuracy: list[float] | None
    barrier: float
    rise_above_endpoints: float
    monotonic: bool
    val_barrier: float | None = None
    nan_points: int = 0
    mode: str = EVAL_MODE
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(vars(self))


def default_alphas(points: int = 41, lo: float = -0.5, hi: float = 1.5) -> np.ndarray:
    a = np.round(np.linspace(lo, hi, points), 10)
    return np.unique(np.concatenate([a, [0.0, 1.0]]))


def _lerp_state(sa, sb, alpha):
    out = []
    for a, b in zip(sa, sb):
        if a.is_floating_point():
            out.append(a + alpha * (b - a))
        else:
            out.append(a if alpha < 0.5 else b)
    return out


def barrier_of(alphas, losses) -> tuple[float, float]:
    """(barrier, rise above the higher end) of a loss profile on [0, 1] (NaN points ignored)."""
    a = np.asarray(alphas, dtype=float)
    y = np.asarray(losses, dtype=float)
    inside = (a >= 0) & (a <= 1) & np.isfinite(y)
    i0, i1 = np.flatnonzero(a == 0), np.flatnonzero(a == 1)
    if not len(i0) or not len(i1) or not np.isfinite(y[i0[0]]) or not np.isfinite(y[i1[0]]) or not inside.any():
        return float("nan"), float("nan")
    l0, l1 = y[i0[0]], y[i1[0]]
    line = (1 - a[inside]) * l0 + a[inside] * l1
    return float(max(0.0, np.max(y[inside] - line))), float(np.max(y[inside]) - max(l0, l1))


def is_monotonic(alphas, losses, rel_tol: float = 1e-3) -> bool:
    a = np.asarray(alphas, dtype=float)
    y = np.asarray(losses, dtype=float)
    seg = y[(a >= 0) & (a <= 1)]
    if len(seg) < 2 or not np.all(np.isfinite(seg)):
        return False
    tol = rel_tol * max(np.max(np.abs(seg)), 1e-12)
    d = np.diff(seg)
    return bool(np.all(d <= tol) or np.all(d >= -tol))


def interpolate(ml: ModelLoss, theta_a, theta_b, *, state_a=None, state_b=None, alphas=None,
                progress: Callable[[int, int], None] | None = None) -> Interpolation:
    """Loss/accuracy along θ_a → θ_b (flat parameter vectors) on ``ml``'s train (and val) batches.

    The model's parameters and state are restored afterwards.
    """
    alphas = default_alphas() if alphas is None else np.asarray(alphas, dtype=float)
    saved, saved_state = ml.get_flat(), ml.get_state()
    ta, tb = theta_a.to(ml.dtype), theta_b.to(ml.dtype)
    d = tb - ta
    tl, ta_acc, vl, va = [], [], [], []
    try:
        for i, alpha in enumerate(alphas):
            ml.set_flat(ta + float(alpha) * d)
            if state_a is not None and state_b is not None:
                ml.set_state(_lerp_state(state_a, state_b, float(alpha)))
            e = ml.evaluate(ml.batches)
            tl.append(e.loss)
            ta_acc.append(e.accuracy)
            if ml.val_batches:
                ev = ml.evaluate(ml.val_batches)
                vl.append(ev.loss)
                va.append(ev.accuracy)
            if progress:
                progress(i + 1, len(alphas))
    finally:
        ml.set_flat(saved)
        ml.set_state(saved_state)
    done = alphas[: len(tl)]
    barrier, rise = barrier_of(done, tl)
    nan_points = int(sum(1 for v in tl if not math.isfinite(v)))
    warnings = []
    if nan_points:
        warnings.append(f"the train loss is NaN/inf at {nan_points} of {len(tl)} interpolation points "
                        "(kept as NaN; the barrier uses the finite ones)")
    out = Interpolation([float(a) for a in done], tl, None if any(a is None for a in ta_acc) else ta_acc,
                        vl or None, None if not va or any(a is None for a in va) else va, barrier, rise,
                        is_monotonic(done, tl), nan_points=nan_points, warnings=warnings)
    if vl:
        out.val_barrier = barrier_of(done, vl)[0]
    return out

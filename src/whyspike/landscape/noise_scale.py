"""The gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018, "An Empirical Model of Large-Batch
Training"), from the gradient norms of small batches and of their union.

Σ is the covariance of per-example gradients and G the true gradient. A batch of B examples drawn independently
has E|G_B|² = |G|² + tr(Σ)/B, so two batch sizes B_small < B_big give the unbiased estimates of their appendix A:

    |G|²   ≈ (B_big·|G_big|² − B_small·|G_small|²) / (B_big − B_small)
    tr(Σ)  ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)

Here the small batches are the given batches of the most common size (a short last batch is left out), |G_small|²
is the mean of their squared gradient norms, and the big batch is their union (B_big = k·B_small, its gradient the
mean of the k batch gradients). The standard errors are leave-one-batch-out jackknife estimates. A batch size well
below B_simple means each step's gradient is mostly noise: SGD noise can move the loss by amounts comparable to
the signal, a basis for the ``stochastic`` explanation; a batch size above it means the steps are nearly
deterministic.

The estimates assume the batches are independent draws from the training distribution; disjoint batches of a
finite set of N examples estimate tr(Σ) with the N/(N−1) sample correction instead.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, require
from ._hvp import CURVATURE_MODE, ModelLoss, _n_examples

torch = require("torch", "torch")


@dataclass
class NoiseScale:
    b_simple: float
    b_simple_stderr: float | None
    trace_sigma: float
    trace_sigma_stderr: float | None
    grad_sq: float
    grad_sq_stderr: float | None
    batch_size: int
    big_batch: int
    batches: int
    mode: str = CURVATURE_MODE

    def to_dict(self) -> dict:
        return dict(vars(self))


def noise_scale_estimates(small_sq: float, b_small: float, big_sq: float, b_big: float) -> tuple[float, float, float]:
    """(|G|², tr(Σ), B_simple) from mean squared small-batch gradient norm and the big batch's (appendix A)."""
    g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    s = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g2, s, (s / g2 if g2 != 0 else float("inf"))


def gradient_noise_scale(ml: ModelLoss, batches=None, *, keep_bytes: int = 256 * 2**20) -> NoiseScale:
    """B_simple at the model's current parameters from ``batches`` (default: the training batches)."""
    batches = ml.batches if batches is None else batches
    ml._need(batches)
    sizes = [_n_examples(b[1]) for b in batches]
    b_small = Counter(sizes).most_common(1)[0][0]
    use = [b for b, s in zip(batches, sizes) if s == b_small]
    k = len(use)
    if k < 2 or b_small < 1:
        raise InputError(None, f"the gradient noise scale needs at least 2 batches of the same size (got {k} of "
                         f"size {b_small})", "give more training batches (a few dozen make a steadier estimate)")
    keep = k * ml.n * 8 <= keep_bytes
    total = torch.zeros(ml.n, dtype=torch.float64)
    sq = np.empty(k)
    kept = []
    for i, (_, _, g) in enumerate(ml.batch_gradients(use)):
        g = g.to(torch.float64)
        if not torch.isfinite(g).all():
            raise FloatingPointError("a batch gradient is NaN/inf here: no noise scale")
        total += g
        sq[i] = float(g @ g)
        if keep:
            kept.append(g)
    mean_g = total / k
    big_sq = float(mean_g @ mean_g)
    small_sq = float(sq.mean())
    b_big = k * b_small
    g2, s, bs = noise_scale_estimates(small_sq, b_small, big_sq, b_big)
    # leave-one-batch-out jackknife: needs each g_i . mean_g (a second pass when the gradients were not kept)
    dots = np.array([float(g @ mean_g) for g in kept]) if keep else \
        np.array([float(g.to(torch.float64) @ mean_g) for _, _, g in ml.batch_gradients(use)])
    errs = [None, None, None]
    if k >= 3:
        loo = []
        for i in range(k):
            big_i = (k * k * big_sq - 2 * k * dots[i] + sq[i]) / (k - 1) ** 2
            small_i = (k * small_sq - sq[i]) / (k - 1)
            loo.append(noise_scale_estimates(small_i, b_small, big_i, (k - 1) * b_small))
        arr = np.array(loo)
        errs = [float(math.sqrt((k - 1) / k * np.sum((arr[:, j] - arr[:, j].mean()) ** 2))) for j in range(3)]
    return NoiseScale(bs, errs[2], s, errs[1], g2, errs[0], b_small, b_big, k)

"""Sharpness at a checkpoint and along the recorded checkpoints, against the optimizer's stability threshold.

Gradient descent with step η is stable on a quadratic only where the curvature is below 2/η. A catapult
(Lewkowycz et al. 2020) starts with λmax above 2/η: the loss rises for a few steps until the dynamics move to a
flatter region where λmax < 2/η, then falls. At the edge of stability (Cohen et al. 2021) λmax rises to 2/η and
hovers there. For Adam the quantity is the preconditioned sharpness λmax(P⁻¹H), computed here as the top eigenvalue
of the symmetric P^-1/2 H P^-1/2 (same spectrum), against (2+2β₁)/((1−β₁)η) = 38/η for β₁ = 0.9 (Cohen et al.
2022). The thresholds per optimizer are in :class:`~whyspike.landscape.sources.OptimizerInfo`.

Curvature is measured in curvature mode (BatchNorm on batch statistics, running statistics restored, dropout off;
see ``_hvp``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import require
from ._hvp import CURVATURE_MODE, ModelLoss
from .hutchinson import hutchinson_trace
from .eigen import LanczosResult, lanczos
from .sources import Checkpoint, OptimizerInfo, apply_state, load_state

torch = require("torch", "torch")


def top_eigenvalues(ml: ModelLoss, batches=None, k: int = 1, *, tol: float = 1e-4, max_iter: int = 80, seed: int = 0,
                    reuse_graph: bool | None = None) -> LanczosResult:
    """The ``k`` largest Hessian eigenvalues of the loss over ``batches`` at the model's current parameters."""
    with ml.hessian(batches, reuse_graph) as h:
        return lanczos(h, ml.n, k, tol=tol, max_iter=max_iter, seed=seed)


def preconditioned_top_eigenvalue(ml: ModelLoss, precond, batches=None, *, tol: float = 1e-4, max_iter: int = 80,
                                  seed: int = 0) -> LanczosResult:
    """λmax(P⁻¹H) for the diagonal preconditioner ``precond`` (flat, positive), via P^-1/2 H P^-1/2."""
    d = precond.to(torch.float64).clamp_min(1e-30).rsqrt()
    with ml.hessian(batches) as h:
        return lanczos(lambda v: d * h((d * v).to(ml.dtype)).to(torch.float64), ml.n, 1, tol=tol, max_iter=max_iter,
                       seed=seed)


@dataclass
class CurvaturePoint:
    """Curvature at one checkpoint. ``ratio`` = compared quantity / threshold: above 1 the next steps are unstable
    on the local quadratic model. ``compared`` names the quantity (``lambda_max``, or
    ``preconditioned_lambda_max`` for Adam/RMSprop)."""

    epoch: int | None
    step: int | None
    loss: float
    grad_norm: float
    lambda_max: float
    lambda_min: float
    hvps: int
    converged: bool
    lr: float | None = None
    optimizer: str | None = None
    threshold: float | None = None
    threshold_rule: str | None = None
    compared: str = "lambda_max"
    preconditioned_lambda_max: float | None = None
    trace: float | None = None
    trace_stderr: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def sharpness(self) -> float:
        v = self.preconditioned_lambda_max if self.compared == "preconditioned_lambda_max" else self.lambda_max
        return float("nan") if v is None else v

    @property
    def ratio(self) -> float | None:
        if self.threshold is None or not self.threshold > 0 or not math.isfinite(self.sharpness):
            return None
        return self.sharpness / self.threshold

    def to_dict(self) -> dict:
        d = {k: v for k, v in vars(self).items()}
        d["ratio"] = self.ratio
        return d


def measure_curvature(ml: ModelLoss, optimizer: OptimizerInfo | None = None, batches=None, *, trace_samples: int = 0,
                      tol: float = 1e-4, max_iter: int = 80, seed: int = 0, epoch=None, step=None) -> CurvaturePoint:
    """λmax, λmin (smallest Ritz value), gradient norm, loss, optionally the trace and the preconditioned λmax, at
    the model's current parameters."""
    loss, g = ml.loss_and_grad(batches)
    notes = []
    if not math.isfinite(loss) or not torch.isfinite(g).all():
        return CurvaturePoint(epoch, step, loss, float("nan"), float("nan"), float("nan"), 0, False,
                              notes=["the loss or its gradient is not finite here: no curvature"])
    with ml.hessian(batches) as h:
        r = lanczos(h, ml.n, 1, tol=tol, max_iter=max_iter, seed=seed)
        tr = hutchinson_trace(h, ml.n, trace_samples, seed=seed + 1, dtype=ml.dtype) if trace_samples else None
        hvps = h.count
    p = CurvaturePoint(epoch, step, loss, float(g.norm()), r.eigenvalues[0], r.smallest, hvps, r.converged)
    if not r.converged:
        notes.append(f"Lanczos stopped after {r.matvecs} products before reaching the tolerance "
                     f"(residual {r.residuals[0]:.2g})")
    if tr is not None:
        p.trace, p.trace_stderr = tr.trace, tr.stderr
    if optimizer is not None:
        p.lr, p.optimizer = optimizer.lr, optimizer.name
        p.threshold, p.threshold_rule = optimizer.threshold()
        notes.extend(optimizer.notes)
        if optimizer.preconditioned:
            p.compared = "preconditioned_lambda_max"
            pc = optimizer.preconditioner()
            if pc is not None:
                rp = preconditioned_top_eigenvalue(ml, pc, batches, tol=tol, max_iter=max_iter, seed=seed)
                p.preconditioned_lambda_max = rp.eigenvalues[0]
                p.hvps += rp.matvecs
            else:
                notes.append("no second-moment state in the checkpoint: preconditioned sharpness unknown")
    p.notes = notes
    return p


def curvature_over_checkpoints(ml: ModelLoss, checkpoints: Sequence[Checkpoint], batches=None, *,
                               trace_samples: int = 0, tol: float = 1e-4, max_iter: int = 80, seed: int = 0,
                               progress: Callable[[int, int], None] | None = None) -> list[CurvaturePoint]:
    """:func:`measure_curvature` at every checkpoint (the model is left at the last one)."""
    out = []
    for i, c in enumerate(checkpoints):
        cs = load_state(c, ml)
        apply_state(ml, cs)
        out.append(measure_curvature(ml, cs.optimizer, batches, trace_samples=trace_samples, tol=tol,
                                     max_iter=max_iter, seed=seed, epoch=c.epoch, step=c.step))
        if progress:
            progress(i + 1, len(checkpoints))
    return out


MODE = CURVATURE_MODE

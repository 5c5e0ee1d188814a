"""Hessian trace by Hutchinson's estimator with Rademacher probes.

For z with independent ±1 entries, E[zᵀHz] = tr(H) and Var[zᵀHz] = 2 Σ_{i≠j} H_ij² (smaller than Gaussian probes'
2‖H‖_F²). The estimate is the mean over ``samples`` probes and its standard error the sample standard deviation
over √samples, so a caller knows how far to trust it.

    >>> import torch
    >>> h = torch.diag(torch.tensor([3.0, 1.0, -2.0]))   # diagonal: every Rademacher probe gives the exact trace
    >>> hutchinson_trace(lambda v: h @ v, 3, samples=5).trace
    2.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError, require

torch = require("torch", "torch")


@dataclass
class TraceEstimate:
    trace: float
    stderr: float
    samples: int

    def to_dict(self) -> dict:
        return {"trace": self.trace, "stderr": self.stderr, "samples": self.samples}


def hutchinson_trace(matvec: Callable, n: int, samples: int = 32, *, seed: int = 0, dtype=torch.float32) -> TraceEstimate:
    """tr(H) ≈ mean of zᵀHz over ``samples`` Rademacher vectors z (``samples`` operator products)."""
    if samples < 1:
        raise UsageError(f"hutchinson_trace needs samples >= 1 (got {samples})")
    gen = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(samples):
        z = (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(dtype)
        vals.append(float(z.to(torch.float64) @ matvec(z).to(torch.float64)))
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1)) if len(vals) > 1 else float("nan")
    return TraceEstimate(mean, sd / math.sqrt(len(vals)), len(vals))

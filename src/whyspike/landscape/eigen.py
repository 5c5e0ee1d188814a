"""Top Hessian eigenvalues by Lanczos with full reorthogonalization on Hessian-vector products.

Power iteration converges at the rate λ₂/λ₁ and stalls at 1–2% error when the top of the spectrum is crowded (the
usual case for networks); Lanczos builds the Krylov space of all products taken so far and its Ritz values converge
like Chebyshev polynomials on the spectrum, so the top eigenvalue reaches 1e-3 relative error in a few dozen
products (``benchmarks/landscape.md``). Every new Lanczos vector is orthogonalized against all previous ones twice
(classical Gram-Schmidt, "twice is enough"): without it, rounding makes converged Ritz values reappear as spurious
copies.

Stopping rule: for a Ritz pair (θ, y) of the tridiagonal matrix, the residual ‖H y − θ y‖ = β_m |s_m| (the last
component of its eigenvector times the last off-diagonal), and the eigenvalue error is at most that residual, and at
most residual²/gap with the gap to the next Ritz value. Iteration stops when min(residual, residual²/gap) ≤
``tol``·|θ| for the ``k`` wanted values, or when an invariant subspace is found (β ≈ 0: the values are exact).

    >>> import torch
    >>> a = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))    # eigenvalues 1..100
    >>> r = lanczos(lambda v: a @ v, 100, k=2, seed=0)
    >>> [round(x, 2) for x in r.eigenvalues], r.matvecs < 60
    ([100.0, 99.0], True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError, require

torch = require("torch", "torch")


@dataclass
class LanczosResult:
    """``eigenvalues``: the ``k`` largest Ritz values, largest first; ``smallest``: the smallest Ritz value (the
    most negative curvature seen, useful at saddles); ``residuals``: the residual bound of each wanted value;
    ``matvecs``: operator applications used; ``history``: the largest Ritz value after each product."""

    eigenvalues: list[float]
    smallest: float
    residuals: list[float]
    matvecs: int
    converged: bool
    history: list[float] = field(default_factory=list)
    vectors: list | None = None

    def to_dict(self) -> dict:
        return {"eigenvalues": self.eigenvalues, "smallest": self.smallest, "residuals": self.residuals,
                "matvecs": self.matvecs, "converged": self.converged}


def lanczos(matvec: Callable, n: int, k: int = 1, *, max_iter: int = 80, tol: float = 1e-4, seed: int = 0,
            start=None, return_vectors: bool = False) -> LanczosResult:
    """The ``k`` largest eigenvalues of the symmetric operator ``matvec`` on vectors of length ``n``.

    ``matvec`` is given flat float64 torch vectors and may return any float dtype (the basis stays float64).
    ``max_iter`` bounds the number of products (and the basis' memory: ``max_iter`` vectors of ``n``).
    """
    if n < 1 or k < 1:
        raise UsageError(f"lanczos needs n >= 1 and k >= 1 (got n={n}, k={k})")
    k = min(k, n)
    m_max = int(min(max_iter, n))
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n, generator=gen, dtype=torch.float64) if start is None else start.to(torch.float64).clone()
    v /= v.norm()
    basis = torch.empty((m_max, n), dtype=torch.float64)
    alphas: list[float] = []
    betas: list[float] = []
    history: list[float] = []
    beta = 0.0
    theta = s = None
    converged = False
    for j in range(m_max):
        basis[j] = v
        w = matvec(v).to(torch.float64)
        if not torch.isfinite(w).all():
            raise FloatingPointError("the Hessian-vector product is not finite (NaN/inf loss or gradient here)")
        alpha = float(w @ v)
        alphas.append(alpha)
        w = w - alpha * v - (beta * basis[j - 1] if j > 0 else 0.0)
        q = basis[: j + 1]
        for _ in range(2):  # full reorthogonalization, twice
            w = w - q.T @ (q @ w)
        beta = float(w.norm())
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, s = np.linalg.eigh(t)
        history.append(float(theta[-1]))
        scale = max(abs(float(theta[-1])), abs(float(theta[0])), 1e-30)
        if beta <= 1e-10 * scale:  # invariant subspace: the Ritz values are eigenvalues
            converged = j + 1 >= k
            break
        if j + 1 >= k:
            res = beta * np.abs(s[-1, ::-1][:k])
            tops = theta[::-1]
            gaps = np.array([tops[i] - tops[i + 1] if i + 1 < len(tops) else np.inf for i in range(k)])
            # residual²/gap needs a gap to a next Ritz value: without one, only the residual bounds the error
            ok_gap = np.isfinite(gaps) & (gaps > 0)
            bound = np.where(ok_gap, np.minimum(res, res**2 / np.where(ok_gap, gaps, 1.0)), res)
            if np.all(bound <= tol * np.maximum(np.abs(tops[:k]), 1e-30)):
                converged = True
                break
        betas.append(beta)
        v = w / beta
    m = len(alphas)
    res = (beta * np.abs(s[-1, ::-1][:k])).tolist()
    vectors = None
    if return_vectors:
        y = torch.as_tensor(np.ascontiguousarray(s[:, ::-1][:, :k]), dtype=torch.float64)
        vectors = list((basis[:m].T @ y).T)
    return LanczosResult([float(x) for x in theta[::-1][:k]], float(theta[0]), [float(r) for r in res], m, converged,
                         history, vectors)


def power_iteration(matvec: Callable, n: int, *, max_iter: int = 100, tol: float = 1e-3, seed: int = 0):
    """Plain power iteration (PyHessian's method), kept for comparisons: returns (eigenvalue, products used).

    Stops when two successive Rayleigh quotients differ by less than ``tol`` relative, as PyHessian does, which is
    what makes it stop early with a percent-level error when λ₂ is close to λ₁."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n, generator=gen, dtype=torch.float64)
    v /= v.norm()
    prev = None
    for i in range(max_iter):
        w = matvec(v).to(torch.float64)
        lam = float(w @ v)
        v = w / w.norm()
        if prev is not None and abs(lam - prev) <= tol * (abs(prev) + 1e-6):
            return lam, i + 1
        prev = lam
    return prev, max_iter

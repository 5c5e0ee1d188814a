"""Synthetic training curves with known ground truth, for measuring detection (tests and benchmarks).

Each curve is a saturating learning curve plus Gaussian noise of a chosen level, optionally with a level shift or
a transient spike of known size (in units of the noise) at a known epoch.

    >>> x, y, truth = curve(100, noise=0.01, shift=8.0, at=60, seed=0)
    >>> truth
    ('step', 60)
"""

from __future__ import annotations

import numpy as np


def curve(n: int, *, noise: float, shift: float = 0.0, spike: float = 0.0, at: int | None = None,
          tau: float | None = None, seed: int = 0, start: float = 0.1, end: float = 0.8):
    """(x, y, truth) — accuracy-like curve start->end with time constant tau (default n/6).

    ``shift`` / ``spike`` are sizes in units of ``noise``; truth is (shape, at) or None for a clean curve.
    """
    rng = np.random.default_rng(seed)
    x = np.arange(n)
    tau = tau or n / 6
    y = start + (end - start) * (1 - np.exp(-x / tau)) + noise * rng.standard_normal(n)
    truth = None
    if at is not None and shift:
        y[at:] += shift * noise
        truth = ("step", at)
    elif at is not None and spike:
        y[at] += spike * noise
        truth = ("transient", at)
    return x, y, truth


def false_spike_rate(n: int, noise: float, runs: int, detect, seed: int = 0) -> float:
    """Fraction of noise-only curves in which ``detect(x, y)`` reports at least one spike."""
    hits = 0
    for r in range(runs):
        x, y, _ = curve(n, noise=noise, seed=seed + r)
        hits += bool(detect(x, y))
    return hits / runs


def recall(n: int, noise: float, size: float, shape: str, runs: int, detect, seed: int = 0, tol: int = 1) -> float:
    """Fraction of curves with one planted change found within ``tol`` points of where it was planted."""
    found = 0
    rng = np.random.default_rng(seed)
    for r in range(runs):
        at = int(rng.integers(n // 4, 3 * n // 4))
        kw = {"shift": size} if shape == "step" else {"spike": size}
        x, y, _ = curve(n, noise=noise, at=at, seed=seed + r, **kw)
        found += any(abs(s.at - at) <= tol and s.shape == shape for s in detect(x, y))
    return found / runs

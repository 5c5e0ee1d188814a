"""Sliding straight-line fits, vectorised with cumulative sums: the local trend on each side of every index.

A line fitted to the w points before t and one fitted to the w points from t on, both evaluated half-way between
t-1 and t, differ by the jump at t. Smooth curvature cancels to second order (each side misses a parabola by the
same amount at the window's edge), which is why ordinary early learning does not look like a jump.
"""

from __future__ import annotations

import numpy as np


class LineFits:
    """Least-squares lines over windows ``y[a : a+w]`` for every start ``a``, evaluated anywhere.

        >>> f = LineFits(np.arange(10.0) * 2 + 1)
        >>> float(f.at(start=np.array([2]), w=4, pos=np.array([5.5]))[0])   # the line 2i+1 at i=5.5
        12.0
    """

    def __init__(self, y: np.ndarray):
        n = len(y)
        i = np.arange(n, dtype=np.float64)
        self.n = n
        self.c0 = np.concatenate(([0.0], np.cumsum(y)))
        self.c1 = np.concatenate(([0.0], np.cumsum(i * y)))
        self.c2 = np.concatenate(([0.0], np.cumsum(y * y)))

    def residual_sigma(self, start: np.ndarray, w: int) -> np.ndarray:
        """Root-mean-square residual of each window's line (w-2 degrees of freedom).

        Larger than the point noise where the trend is not straight over the window: used as a lack-of-fit
        floor so that a long window across a bend is not mistaken for a precise measurement.
        """
        s0 = self.c0[start + w] - self.c0[start]
        s1 = (self.c1[start + w] - self.c1[start]) - start * s0
        s2 = self.c2[start + w] - self.c2[start]
        kbar = (w - 1) / 2.0
        skk = w * (w * w - 1) / 12.0
        rss = s2 - s0 * s0 / w - (s1 - kbar * s0) ** 2 / skk
        return np.sqrt(np.maximum(rss, 0.0) / max(w - 2, 1))

    def at(self, start: np.ndarray, w: int, pos: np.ndarray) -> np.ndarray:
        """Value at index ``pos`` of the line fitted to ``y[start : start+w]`` (start must be valid)."""
        s0 = self.c0[start + w] - self.c0[start]
        s1 = (self.c1[start + w] - self.c1[start]) - start * s0  # sum of k*y with k = 0..w-1
        kbar = (w - 1) / 2.0
        skk = w * (w * w - 1) / 12.0
        slope = (s1 - kbar * s0) / skk
        return s0 / w + slope * (pos - start - kbar)


def eval_variance(w: int, offset: float) -> float:
    """Variance (in units of σ²) of a w-point line fit evaluated ``offset`` index units from the window centre."""
    skk = w * (w * w - 1) / 12.0
    return 1.0 / w + offset * offset / skk


def gap_quadratic_kernel(w: int, k: int) -> tuple[np.ndarray, float, float]:
    """Weights that predict the mean of k points from a parabola fitted to w points on each side of them.

    Interpolating a parabola across the gap follows a bending trend (early learning) that two straight lines
    would both overshoot. Returns the kernel over ``y[t-w : t+k+w]`` (zeros at the k gap points) and the
    variance factors of the prediction contributed by the left and the right window.
    """
    u = np.concatenate((np.arange(-w, 0), np.arange(k, k + w))).astype(np.float64) - (k - 1) / 2.0
    X = np.stack((np.ones_like(u), u, u * u), axis=1)
    gap = np.arange(k, dtype=np.float64) - (k - 1) / 2.0
    e = np.array([1.0, gap.mean(), (gap * gap).mean()])
    a = e @ np.linalg.solve(X.T @ X, X.T)
    kernel = np.concatenate((a[:w], np.zeros(k), a[w:]))
    return kernel, float(a[:w] @ a[:w]), float(a[w:] @ a[w:])

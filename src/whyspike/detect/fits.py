"""Sliding straight-line fits, vectorised with cumulative sums: the local trend on each side of every index.

A line fitted to the w points before t and one fitted to the w points from t on, both evaluated half-way between
t-1 and t, differ by the jump at t. Smooth curvature cancels to second order (each side misses a parabola by the
same amount at the window's edge), which is why ordinary early learning does not look like a jump.
"""

from __future__ import annotations

import numpy as np


class LineFits:
    """Least-squares lines over every window ``y[s : s+w]``, by window start s (computed once per w).

        >>> f = LineFits(np.arange(10.0) * 2 + 1)
        >>> mean, slope, _ = f.windows(4)
        >>> float(mean[2] + slope[2] * (5.5 - 2 - 1.5))   # the line through y[2:6], at index 5.5
        12.0
    """

    def __init__(self, y: np.ndarray):
        n = len(y)
        i = np.arange(n, dtype=np.float64)
        self.n = n
        self.c0 = np.concatenate(([0.0], np.cumsum(y)))
        self.c1 = np.concatenate(([0.0], np.cumsum(i * y)))
        self.c2 = np.concatenate(([0.0], np.cumsum(y * y)))
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def windows(self, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, slope, residual σ) of the line fitted to each window of w points, indexed by its start.

        The line is ``mean + slope * (i - start - (w-1)/2)``. The residual σ (w-2 degrees of freedom) exceeds the
        point noise where the trend is not straight over the window: callers use it as a lack-of-fit floor, so a
        long window across a bend is not mistaken for a precise measurement.
        """
        if w not in self._cache:
            start = np.arange(self.n - w + 1, dtype=np.float64)
            s0 = self.c0[w:] - self.c0[:-w]
            s1 = (self.c1[w:] - self.c1[:-w]) - start * s0  # sum of k*y with k = 0..w-1
            s2 = self.c2[w:] - self.c2[:-w]
            kbar = (w - 1) / 2.0
            skk = w * (w * w - 1) / 12.0
            centred = s1 - kbar * s0
            rss = s2 - s0 * s0 / w - centred * centred / skk
            self._cache[w] = (s0 / w, centred / skk, np.sqrt(np.maximum(rss, 0.0) / max(w - 2, 1)))
        return self._cache[w]


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

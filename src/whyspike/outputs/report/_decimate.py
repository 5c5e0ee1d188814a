"""Decimation for the report's charts: at most two points per pixel bucket, the bucket's min and max.

A 100 000-step curve drawn on 1 500 pixels shows at most two values per pixel column anyway (the lowest and the
highest the line passes through), so keeping exactly those loses nothing a reader can see — unlike a plain
every-n-th subsample, which drops a one-step spike with probability 1 - 1/n. Windows around the detected jumps
are decimated much more finely, so that zooming into a jump shows the points as logged.

    >>> import numpy as np
    >>> x = np.arange(100_000); y = np.zeros(100_000); y[54_321] = 9.0
    >>> keep = decimate(x, y, buckets=500)
    >>> len(keep) <= 1002, 54_321 in keep
    (True, True)
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

BUCKETS = 1500  # pixel columns of a wide chart on a high-density screen, roughly
WINDOW_BUCKETS = 400  # inside a window around a jump: raw points up to 800, min/max per bucket beyond


def _extremes(bins: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Index of the smallest ``key`` in each run of equal ``bins`` (bins sorted ascending)."""
    order = np.lexsort((key, bins))
    b = bins[order]
    first = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    return order[first]


def decimate(x: np.ndarray, y: np.ndarray, buckets: int = BUCKETS,
             windows: Iterable[tuple[float, float]] = ()) -> np.ndarray:
    """Sorted indices of the points to keep from the series (``x`` sorted ascending).

    Per bucket of equal width in ``x``: the index of the minimum and of the maximum finite value, and the first
    non-finite value (so a NaN still breaks the line where it was logged); always the first and last point. Inside
    each ``(lo, hi)`` window of ``windows`` the same is done with :data:`WINDOW_BUCKETS` buckets of its own.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    if n <= 2 * buckets:
        return np.arange(n)
    parts = [_buckets(x, y, buckets), np.array([0, n - 1])]
    for lo, hi in windows:
        i, j = np.searchsorted(x, lo, "left"), np.searchsorted(x, hi, "right")
        if j - i > 2 * WINDOW_BUCKETS:
            parts.append(i + _buckets(x[i:j], y[i:j], WINDOW_BUCKETS))
        elif j > i:
            parts.append(np.arange(i, j))
    return np.unique(np.concatenate(parts))


def _buckets(x: np.ndarray, y: np.ndarray, buckets: int) -> np.ndarray:
    span = x[-1] - x[0]
    if span <= 0:
        return np.array([0, len(x) - 1])
    bins = np.minimum(((x - x[0]) / span * buckets).astype(np.int64), buckets - 1)
    finite = np.isfinite(y)
    out = [_extremes(bins, np.where(finite, y, np.inf)), _extremes(bins, np.where(finite, -y, np.inf))]
    bad = np.flatnonzero(~finite)
    if len(bad):
        first_bad = np.r_[True, bins[bad][1:] != bins[bad][:-1]]
        out.append(bad[first_bad])
    return np.concatenate(out)


__all__ = ["BUCKETS", "decimate"]

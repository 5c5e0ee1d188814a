"""Noise levels that decide whether a change is a spike: local residual noise and binomial sampling noise.

Local noise comes from second differences, ``y[i+1] - 2 y[i] + y[i-1]``, which cancel a linear trend and have
variance 6σ² for white noise. Their mean square over the lowest 80% is robust to the very jumps we look for (a
jump spoils two second differences) and, unlike a median, stable enough on the ~24 values a window holds: an
underestimated noise is what turns a noisy stretch into a false spike.
"""

from __future__ import annotations

import numpy as np

KEEP = 0.8  # share of the smallest squared second differences kept
# E[z² | z² below its 80% quantile] for a standard normal z: (0.8 - 2·q·φ(q)) / 0.8 with q = 1.2816
_TRIMMED_MEAN_SQ = (0.8 - 2 * 1.2815515655446004 * 0.17549833193248685) / 0.8
EXACT_MAX_POINTS = 50_000


def _trimmed_sigma(sq_sorted: np.ndarray) -> np.ndarray:
    """σ from sorted squared second differences (last axis): mean of the lowest KEEP share, rescaled."""
    k = max(int(np.ceil(KEEP * sq_sorted.shape[-1])), 1)
    return np.sqrt(sq_sorted[..., :k].mean(axis=-1) / (6.0 * _TRIMMED_MEAN_SQ))


def side_noise(y: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Robust noise σ just before and just after each index t (arrays of len(y)).

    ``before[t]`` uses second differences entirely inside y[t-window-1 : t] and ``after[t]`` those inside
    y[t : t+window+1], so a jump at t never inflates the noise it is compared with. NaN where fewer than 3
    second differences exist on that side.
    """
    n = len(y)
    before = np.full(n, np.nan)
    after = np.full(n, np.nan)
    if n < 5:
        return before, after
    d2 = (y[2:] - 2.0 * y[1:-1] + y[:-2]) ** 2  # squared; d2[j] is centred on index j+1
    m = len(d2)
    if n <= EXACT_MAX_POINTS:
        w = min(window, m)
        med = _trimmed_sigma(np.sort(np.lib.stride_tricks.sliding_window_view(d2, w), axis=1))  # windows d2[s:s+w]
        # before[t]: window ends at the d2 centred on t-2 (uses y[t-3..t-1]) -> d2 index t-3 is the last
        s_before = np.arange(n) - 2 - w
        ok = s_before >= 0
        before[ok] = med[s_before[ok]]
        # after[t]: window starts at the d2 centred on t+1 (uses y[t..t+2]) -> d2 index t
        s_after = np.arange(n)
        ok = s_after + w <= m
        after[ok] = med[s_after[ok]]
        # near the ends, fall back to whatever (>= 3) second differences exist on that side
        for t in np.flatnonzero(np.isnan(before)):
            seg = d2[max(0, t - 2 - w) : max(0, t - 2)]
            if len(seg) >= 3:
                before[t] = _trimmed_sigma(np.sort(seg))
        for t in np.flatnonzero(np.isnan(after)):
            seg = d2[t : t + w]
            if len(seg) >= 3:
                after[t] = _trimmed_sigma(np.sort(seg))
        return before, after
    # long series: fixed blocks, each position taking the nearest complete block on its side
    b = max(window, 8)
    nb = m // b
    blocks = _trimmed_sigma(np.sort(d2[: nb * b].reshape(nb, b), axis=1))
    t = np.arange(n)
    kb = (t - 2) // b - 1  # last block that ends before d2 index t-2
    ka = (t + b - 1) // b  # first block that starts at or after d2 index t
    ok = (kb >= 0) & (kb < nb)
    before[ok] = blocks[kb[ok]]
    ok = ka < nb
    after[ok] = blocks[ka[ok]]
    return before, after


def binomial_sigma(p: np.ndarray | float, n: int, scale: float = 1.0) -> np.ndarray | float:
    """Standard deviation of an accuracy p (on a 0..scale axis) measured on n independent examples."""
    q = np.clip(np.asarray(p, dtype=float) / scale, 0.0, 1.0)
    return scale * np.sqrt(np.maximum(q * (1.0 - q), 0.25 / n) / n)


def quantization_sigma(y: np.ndarray) -> float:
    """Noise floor set by the printed precision of the values (rounding to d decimals: 10^-d / √12)."""
    v = y[np.isfinite(y)]
    if len(v) == 0:
        return 0.0
    v = v[: min(len(v), 2000)]
    for d in range(0, 9):
        if np.all(np.abs(np.round(v, d) - v) <= 1e-9 * np.maximum(1.0, np.abs(v))):
            return 10.0 ** (-d) / np.sqrt(12.0)
    return 0.0

"""Infer the size of an evaluation set from the granularity of the accuracies measured on it.

An accuracy measured on n examples is a multiple of 1/n. When the logged values carry more digits than that
granularity needs (float32 ``0.8799999952`` or ``88.56``), the smallest n that makes every value a multiple of 1/n
reveals the set size. Printing resolution is not evidence: with two decimals in percent every value is a multiple
of 1/10000, so n is only trusted when it is clearly coarser than the printed resolution.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> acc = rng.integers(20, 50, 30) / 50          # a 50-example eval set
    >>> infer_eval_size(acc.astype(np.float32).astype(np.float64))
    50
"""

from __future__ import annotations

import numpy as np

_MAX_N = 100_000


def _decimals(values: np.ndarray) -> int | None:
    """Fewest decimals (<= 8) that reproduce every value, or None when they are full-precision floats."""
    for d in range(0, 9):
        if np.all(np.abs(np.round(values, d) - values) <= 1e-9 * np.maximum(1.0, np.abs(values))):
            return d
    return None


def infer_eval_size(values: np.ndarray, *, percent: bool = False, min_distinct: int = 6) -> int | None:
    """The evaluation-set size implied by accuracies ``values`` (fractions, or percent with ``percent=True``).

    Returns None when the values do not reveal it: too few distinct values, or a granularity no coarser than the
    printing resolution.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if percent:
        v = v / 100.0
    v = np.unique(v[(v > 0) & (v < 1)])
    if len(v) < min_distinct:
        return None
    if len(v) > 400:  # enough to pin n down; bounded cost
        v = v[np.linspace(0, len(v) - 1, 400).astype(int)]
    d = _decimals(v * (100.0 if percent else 1.0))
    resolution = None if d is None else 10 ** (d + (2 if percent else 0))
    # float32 storage leaves ~1e-7 relative error; printing with d decimals leaves half a unit
    tol_abs = 0.5 / resolution if resolution else 0.0
    tol_abs = max(tol_abs, 2e-7) + 1e-12
    ns = np.arange(1, _MAX_N + 1, dtype=np.float64)
    best = None
    # scan in chunks to keep memory small; the first n that fits every value is the answer
    for lo in range(0, _MAX_N, 4096):
        chunk = ns[lo : lo + 4096]
        scaled = np.outer(chunk, v)
        ok = np.all(np.abs(scaled - np.round(scaled)) <= tol_abs * chunk[:, None] + 1e-9, axis=1)
        hit = np.flatnonzero(ok)
        if len(hit):
            best = int(chunk[hit[0]])
            break
    if best is None:
        return None
    if resolution is not None:
        # printed digits allow `resolution` values; a printed value is consistent with n when it is a rounding of
        # some k/n. Trust n only when landing on such values by chance, for every value, is very unlikely
        # (summed over every n the scan tried, hence the log(best) term)
        f = _reachable_fraction(best, resolution)
        if f >= 0.999 or np.log(best) + (len(v) - 1) * np.log(f) > np.log(1e-4):
            return None
    return best


def _reachable_fraction(n: int, resolution: int) -> float:
    """Share of the printable values m/resolution that round some k/n (ties count both ways)."""
    centres = np.arange(n + 1) * (resolution / n)
    lo = np.ceil(centres - 0.5 - 1e-9).astype(np.int64)
    hi = np.floor(centres + 0.5 + 1e-9).astype(np.int64)
    hit = np.zeros(resolution + 1, dtype=bool)
    hit[np.clip(lo, 0, resolution)] = True
    hit[np.clip(hi, 0, resolution)] = True
    return float(hit.mean())

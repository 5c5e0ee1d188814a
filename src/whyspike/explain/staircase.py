"""Read a staircase schedule back from its logged LR values: lr = initial * rate ** (number of decays so far).

Keras' ``ExponentialDecay(staircase=True)`` and similar schedules produce values that are exact integer powers of
one rate. The per-epoch increments of that power reveal how many decays happen per epoch — more than one means
``decay_steps`` counts optimizer steps — and divide the initial LR back out.

    >>> import numpy as np
    >>> lr = 0.01 * 0.5 ** np.floor(32 * (np.arange(30) + 1) / 10)     # the seed's Example 1, logged at epoch end
    >>> st = fit_staircase(lr)
    >>> st.rate, round(st.decays_per_epoch, 2), st.initial
    (0.5, 3.2, 0.01)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATES = (0.5, 0.1, 0.2, 0.25, 0.3, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 0.8, 0.7, 0.6, 0.75)


@dataclass(frozen=True)
class Staircase:
    rate: float
    decays: np.ndarray  # decays between consecutive logged values
    decays_per_epoch: float
    initial: float  # LR before the first decay (the configured initial LR)
    logged_after_first_epoch: bool  # True when the first logged value already holds the first epoch's decays


def _roundness(v: float) -> int:
    """Significant digits a person would have typed for v (initial LRs are round: 0.01, 3e-4, 0.1)."""
    for d in range(1, 8):
        if abs(float(f"{v:.{d}g}") - v) <= 1e-6 * abs(v):  # float32-logged values carry ~1e-7 noise
            return d
    return 8


def fit_staircase(lr: np.ndarray, rate_hint: float | None = None) -> Staircase | None:
    """The staircase that reproduces the epoch-level LR values ``lr`` exactly, or None."""
    y = np.asarray(lr, dtype=float)
    y = y[np.isfinite(y) & (y > 0)]
    if len(y) < 4:
        return None
    steps = np.log(y[1:] / y[:-1])
    if np.all(np.abs(steps) < 1e-9):
        return None
    rates = ((rate_hint,) if rate_hint else ()) + RATES
    for rate in rates:
        k = steps / np.log(rate)
        if np.all(np.abs(k - np.round(k)) < 1e-3) and np.all(np.round(k) >= 0):
            decays = np.round(k).astype(int)
            per_epoch = float(decays.mean())
            # was the first value logged before any decay, or after the first epoch's (floor(per_epoch)) decays?
            before = y[0]
            after_first = y[0] / rate ** int(np.floor(per_epoch))
            later = per_epoch >= 1 and _roundness(after_first) < _roundness(before)
            if later:  # the first epoch's decays count too: total decays over all logged epochs
                per_epoch = (int(np.floor(per_epoch)) + decays.sum()) / len(y)
            return Staircase(rate, decays, float(per_epoch), float(f"{after_first if later else before:.6g}"), later)
    return None

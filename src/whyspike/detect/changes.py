"""Candidate changes at one scale: level shifts (steps) and transient spikes, each with a z-score.

``step_scores`` compares the trend lines before and after each index; ``transient_scores`` compares k points
with the single trend that the points around them agree on. Both return per-index arrays; NaN where the window
does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fits import LineFits, eval_variance, gap_quadratic_kernel


@dataclass
class Scored:
    kind: str  # "step" | "transient"
    w: int  # trend window on each side
    k: int  # transient width (0 for a step)
    jump: np.ndarray  # signed change at each index (new level - old level, or spike - trend)
    sd: np.ndarray  # standard deviation of `jump` under the noise model
    level_before: np.ndarray  # trend value just before the change

    @property
    def z(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.jump / self.sd


def step_scores(fits: LineFits, sig_before: np.ndarray, sig_after: np.ndarray, w: int) -> Scored:
    n = fits.n
    jump = np.full(n, np.nan)
    sd = np.full(n, np.nan)
    before = np.full(n, np.nan)
    t = np.arange(w, n - w + 1)
    if len(t):
        pos = t - 0.5
        left = fits.at(t - w, w, pos)
        right = fits.at(t, w, pos)
        v = eval_variance(w, w / 2.0)
        sl = np.fmax(sig_before[t], fits.residual_sigma(t - w, w))
        sr = np.fmax(sig_after[t], fits.residual_sigma(t, w))
        jump[t] = right - left
        sd[t] = np.sqrt(v * (sl**2 + sr**2))
        before[t] = left
    return Scored("step", w, 0, jump, sd, before)


def transient_scores(fits: LineFits, y: np.ndarray, sig_before: np.ndarray, sig_after: np.ndarray,
                     w: int, k: int) -> tuple[Scored, np.ndarray]:
    """Spikes of width k starting at each index; also returns the z of the before/after level mismatch.

    The trend under the spike is a parabola through the w points on each side; a true transient has the
    before-line and the after-line agree across it (small mismatch), the edge of a step does not.
    """
    n = fits.n
    jump = np.full(n, np.nan)
    sd = np.full(n, np.nan)
    before = np.full(n, np.nan)
    mismatch = np.full(n, np.nan)
    t = np.arange(w, n - w - k + 1)
    if len(t):
        mid = t + (k - 1) / 2.0
        left = fits.at(t - w, w, mid)
        right = fits.at(t + k, w, mid)
        inside = (fits.c0[t + k] - fits.c0[t]) / k
        kernel, vl, vr = gap_quadratic_kernel(w, k)
        trend = np.correlate(y, kernel, mode="valid")[t - w]
        off = w / 2.0 + (k - 1) / 2.0 + 0.5
        v = eval_variance(w, off)
        sl = np.fmax(sig_before[t], fits.residual_sigma(t - w, w))
        sr = np.fmax(sig_after[t + k], fits.residual_sigma(t + k, w))
        sig_in = np.fmax(sl, sr)
        jump[t] = inside - trend
        sd[t] = np.sqrt(sig_in**2 / k + vl * sl**2 + vr * sr**2)
        before[t] = left
        with np.errstate(invalid="ignore", divide="ignore"):
            mismatch[t] = (right - left) / np.sqrt(v * (sl**2 + sr**2))
    return Scored("transient", w, k, jump, sd, before), mismatch

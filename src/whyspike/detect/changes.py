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
    m = n - 2 * w + 1  # boundaries t = w .. n-w
    if m > 0:
        mean, slope, resid = fits.windows(w)
        kbar = (w - 1) / 2.0
        # left window starts at t-w, right at t; both lines evaluated at t - 0.5
        left = mean[:m] + slope[:m] * (w - 0.5 - kbar)
        right = mean[w : w + m] + slope[w : w + m] * (-0.5 - kbar)
        t = slice(w, w + m)
        sl = np.fmax(sig_before[t], resid[:m])
        sr = np.fmax(sig_after[t], resid[w : w + m])
        jump[t] = right - left
        sd[t] = np.sqrt(eval_variance(w, w / 2.0) * (sl**2 + sr**2))
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
    m = n - 2 * w - k + 1  # spike starts t = w .. n-w-k
    if m > 0:
        mean, slope, resid = fits.windows(w)
        kbar = (w - 1) / 2.0
        t = slice(w, w + m)
        # both lines evaluated at the spike's centre t + (k-1)/2
        left = mean[:m] + slope[:m] * (w + (k - 1) / 2.0 - kbar)
        r = slice(w + k, w + k + m)
        right = mean[r] + slope[r] * (-(k + 1) / 2.0 - kbar)
        inside = (fits.c0[w + k : w + k + m] - fits.c0[w : w + m]) / k
        kernel, vl, vr = gap_quadratic_kernel(w, k)
        trend = np.correlate(y, kernel, mode="valid")[:m]
        v = eval_variance(w, w / 2.0 + (k - 1) / 2.0 + 0.5)
        sl = np.fmax(sig_before[t], resid[:m])
        sr = np.fmax(sig_after[r], resid[r])
        sig_in = np.fmax(sl, sr)
        jump[t] = inside - trend
        sd[t] = np.sqrt(sig_in**2 / k + vl * sl**2 + vr * sr**2)
        before[t] = left
        with np.errstate(invalid="ignore", divide="ignore"):
            mismatch[t] = (right - left) / np.sqrt(v * (sl**2 + sr**2))
    return Scored("transient", w, k, jump, sd, before), mismatch

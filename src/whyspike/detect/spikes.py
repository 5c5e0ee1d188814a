"""detect_spikes: the significant abrupt changes in one series, most significant first.

Scores every index at several window sizes (``changes``), keeps the candidates whose own windows are clean of any
stronger change already accepted, pairs a step with an opposite step shortly after into one transient, and
reports those above the threshold. Long step-level series are scanned on a pyramid of block means so the cost
stays linear and a slow drift over 10 000 steps is seen as clearly as a one-step spike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ..run import Series
from .changes import Scored, step_scores, transient_scores
from .fits import LineFits
from .noise import binomial_sigma, quantization_sigma, side_noise

SHORT_SERIES = 5000  # up to this many points every window size runs on the raw values
MIN_POINTS = 8


@dataclass
class Spike:
    """A significant change in one metric. ``at`` is numbered as the source numbers its axis."""

    metric: str
    axis: str
    at: float
    index: int  # position in the series' arrays
    direction: str  # "up" | "down": value, not goodness
    shape: str  # "step" | "transient"
    size: float  # magnitude in the metric's units
    noise: float  # standard deviation of `size` under the local noise model
    significance: float  # size / noise
    before: float  # trend level just before
    after: float  # new level (step) or peak value (transient)
    local_noise: float  # residual noise per point around the change
    binomial_noise: float | None = None  # sampling noise per point when the eval-set size is known
    width: int = 0  # points in a transient (0 for a step)
    window: int = 0  # trend window the change was scored with
    event_locked: bool = False  # tested at a position an event (LR change, resume) pointed to
    start_index: int = 0  # first index of the change (== index for steps)
    start: float | None = None  # the position of that first point, numbered as the source numbers it
    causes: list = field(default_factory=list)


def default_threshold(n_points: int) -> float:
    """z-score a change must reach when tested at every position (calibrated on noise-only series, see tests)."""
    return 2.0 + np.sqrt(2.0 * np.log(max(n_points, 10)))


EVENT_THRESHOLD = 3.5  # a change tested only where an event says to look needs no look-elsewhere correction


@dataclass
class _Cand:
    z: float
    kind: str
    t: int  # start index (raw)
    k: int  # width (raw points) for transients
    w: int  # window (raw points)
    jump: float
    sd: float
    level: float
    mismatch: float = 0.0

    def span(self) -> tuple[int, int]:
        return self.t - self.w, self.t + self.k + self.w

    def touches(self, other: "_Cand") -> bool:
        """True when this candidate's windows contain the other's change (then its score is contaminated)."""
        s, e = self.span()
        if other.kind == "step":  # a step sits between other.t-1 and other.t
            return s < other.t < e
        return s < other.t + other.k and e > other.t


def _floors(y: np.ndarray, series: Series, eval_size: int | None,
            batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-point noise floor: print precision, a tiny relative floor, and binomial noise when n is known (the eval
    set's size for a validation accuracy, the batch size for a per-step training accuracy: one batch of 16 going
    from 16/16 to 15/16 correct is no jump, however flat the 1.0s around it)."""
    q = quantization_sigma(y)
    if series.role.kind == "accuracy":
        floor = np.full(len(y), max(q, 1e-3 * series.role.scale))
    else:
        floor = np.maximum(q, 2e-3 * np.abs(y))
    binom = None
    if eval_size and series.role.kind == "accuracy" and series.role.split == "val":
        binom = binomial_sigma(y, eval_size, series.role.scale)
        floor = np.maximum(floor, binom)
    elif batch_size and series.role.kind == "accuracy" and series.axis == "step" and series.role.split != "val":
        binom = binomial_sigma(y, int(batch_size), series.role.scale)
        floor = np.maximum(floor, binom)
    return floor, binom


def _scan(y: np.ndarray, floor: np.ndarray, windows: Iterable[int], widths: Iterable[int], zmin: float) -> list[_Cand]:
    fits = LineFits(y)
    out: list[_Cand] = []
    for w in windows:
        if 2 * w + 1 > len(y):
            continue
        sb, sa = side_noise(y, max(2 * w, 24))
        sb = np.fmax(np.nan_to_num(sb, nan=np.inf), floor)  # no noise estimate -> cannot test there
        sa = np.fmax(np.nan_to_num(sa, nan=np.inf), floor)
        scored: list[tuple[Scored, np.ndarray | None]] = [(step_scores(fits, sb, sa, w), None)]
        for k in widths:
            if k * 2 <= w:
                scored.append(transient_scores(fits, y, sb, sa, w, k))
        for sc, mismatch in scored:
            z = np.abs(sc.z)
            hit = np.flatnonzero(np.nan_to_num(z, nan=0.0) >= zmin)
            if len(hit) > 2000:  # keep the strongest; the rest cannot survive suppression anyway
                hit = hit[np.argsort(z[hit])[-2000:]]
            for t in hit:
                mm = 0.0 if mismatch is None else float(mismatch[t])
                out.append(_Cand(float(z[t]), sc.kind, int(t), sc.k, w, float(sc.jump[t]), float(sc.sd[t]),
                                 float(sc.level_before[t]), mm))
    return out


def _candidates(y: np.ndarray, floor: np.ndarray, zmin: float) -> list[_Cand]:
    n = len(y)
    if n <= SHORT_SERIES:
        return _scan(y, floor, (3, 5, 8, 12, 20, 32), (1, 2, 3), zmin)
    cands = _scan(y, floor, (4, 16), (1, 2), zmin)
    b = 4
    while n // b >= 400:
        m = n // b
        yb = y[: m * b].reshape(m, b).mean(axis=1)
        fb = floor[: m * b].reshape(m, b).mean(axis=1) / np.sqrt(b)
        for c in _scan(yb, fb, (4, 16), (1, 2), zmin):
            c.t, c.k, c.w = c.t * b, c.k * b, c.w * b
            cands.append(c)
        b *= 4
    return cands


def _refine_step(c0: np.ndarray, c: _Cand) -> int:
    """Exact boundary of a step found on block means: the split that maximises the mean difference nearby.

    ``c0`` is the cumulative sum of the raw series with a leading 0.
    """
    h = max(c.w // 4, 1)
    n = len(c0) - 1
    lo, hi = max(c.t - h, h), min(c.t + h, n - h)
    if h <= 1 or hi <= lo:
        return c.t
    s = np.arange(lo, hi + 1)
    diff = (c0[s + h] - c0[s]) - (c0[s] - c0[s - h])
    aligned = np.where(np.sign(diff) == np.sign(c.jump), np.abs(diff), 0.0)
    return int(s[np.argmax(aligned)])


def detect_spikes(
    series: Series,
    *,
    eval_size: int | None = None,
    hints: Iterable[float] = (),
    threshold: float | None = None,
    batch_size: int | None = None,
) -> list[Spike]:
    """Significant steps and transient spikes in ``series``, most significant first.

    ``hints`` are positions (in the series' own numbering) where an event makes a change plausible; a change
    right there is tested at :data:`EVENT_THRESHOLD` instead of the position-wide ``threshold``.

        >>> import numpy as np
        >>> from whyspike.run import make_series
        >>> rng = np.random.default_rng(0)
        >>> y = 0.6 + 0.01 * rng.standard_normal(60); y[30:] += 0.2
        >>> [(s.at, s.shape, s.direction) for s in detect_spikes(make_series("val_acc", "epoch", np.arange(60), y))]
        [(30, 'step', 'up')]
    """
    finite = np.flatnonzero(np.isfinite(series.y))
    if len(finite) < MIN_POINTS:
        return []
    x = series.x[finite]
    y = series.y[finite].astype(np.float64)
    n = len(y)
    thr = default_threshold(n) if threshold is None else threshold
    floor, binom = _floors(y, series, eval_size, batch_size)
    hint_idx: set[int] = set()
    hint_at = np.asarray([float(h) for h in hints], dtype=float)
    centres = np.unique(np.clip(np.searchsorted(x, hint_at), 0, n - 1)) if len(hint_at) else np.empty(0, dtype=int)
    for i in centres:
        hint_idx.update(j for j in (i - 1, i, i + 1) if 0 <= j < n)
    # an event-locked test needs no look-elsewhere correction only while the events are few: an LR decaying
    # every 10 steps makes every 10th step an "event", and those many tests need the correction again
    thr_event = EVENT_THRESHOLD if len(centres) <= 3 else max(EVENT_THRESHOLD, default_threshold(3 * len(centres)))
    zmin = min(thr, thr_event) if hint_idx else thr
    cands = _candidates(y, floor, zmin)
    cands.sort(key=lambda c: -c.z)
    c0 = np.concatenate(([0.0], np.cumsum(y)))
    accepted: list[_Cand] = []
    for c in cands:
        if c.kind == "transient" and abs(c.mismatch) > 3.0:
            continue  # the levels around it disagree: the edge of a step, not a spike
        if c.kind == "step" and c.w > 32:  # found on block means: place it exactly
            c.t = _refine_step(c0, c)
            if len(centres):  # a slow-settling change found near a logged event starts at the event
                j = int(centres[np.argmin(np.abs(centres - c.t))])
                if abs(j - c.t) <= c.w // 2:
                    c.t = j
        locked = c.t in hint_idx
        if c.z < thr and not (locked and c.z >= thr_event):
            continue
        if any(c.touches(a) or a.t == c.t for a in accepted):
            continue
        accepted.append(c)
    accepted = _pair_opposite_steps(accepted, y)
    spikes = [_to_spike(series, x, y, c, binom, c.t in hint_idx) for c in accepted]
    spikes.sort(key=lambda s: -s.significance)
    return spikes


def _pair_opposite_steps(accepted: list[_Cand], y: np.ndarray) -> list[_Cand]:
    """A step followed shortly by an opposite step of similar size is one transient excursion."""
    steps = sorted((c for c in accepted if c.kind == "step"), key=lambda c: c.t)
    merged: set[int] = set()
    out = [c for c in accepted if c.kind != "step"]
    for i, a in enumerate(steps):
        if id(a) in merged:
            continue
        for b in steps[i + 1 :]:
            if id(b) in merged or b.t - a.t > max(10, a.w // 2):
                continue
            if np.sign(a.jump) != np.sign(b.jump) and 0.5 <= abs(b.jump) / abs(a.jump) <= 2.0:
                merged.update((id(a), id(b)))
                k = b.t - a.t
                z = min(a.z, b.z)
                out.append(_Cand(z, "transient", a.t, k, min(a.w, b.w), a.jump, a.sd, a.level))
                break
        else:
            out.append(a)
            continue
    return out


def _to_spike(series: Series, x: np.ndarray, y: np.ndarray, c: _Cand, binom, locked: bool) -> Spike:
    if c.kind == "step":
        idx = c.t
        after = c.level + c.jump
        local = c.sd
    else:
        seg = y[c.t : c.t + c.k]
        idx = c.t + int(np.argmax(np.abs(seg - c.level)))
        after = float(y[idx])
        local = c.sd
    size = abs(c.jump)
    lo, hi = max(0, c.t - c.w), min(len(y), c.t + c.k + c.w)
    resid = np.diff(y[lo:hi], n=2)
    local_noise = float(np.median(np.abs(resid)) / (0.6745 * np.sqrt(6))) if len(resid) >= 3 else float("nan")
    return Spike(
        metric=series.name,
        axis=series.axis,
        at=x[idx].item() if hasattr(x[idx], "item") else x[idx],
        index=int(idx),
        direction="up" if c.jump > 0 else "down",
        shape=c.kind,
        size=float(size),
        noise=float(local),
        significance=float(size / local) if local > 0 else float("inf"),
        before=float(c.level),
        after=float(after),
        local_noise=local_noise,
        binomial_noise=None if binom is None else float(binom[idx]),
        width=int(c.k),
        window=int(c.w),
        event_locked=locked,
        start_index=int(c.t),
        start=float(x[c.t]),
    )

"""The statistics of a probe: where a replica's jump is, the spread of the baseline over seeds (the noise band), and
the verdict on an intervention — removed, moved by Δ, or unchanged — with an effect size against that band and a
permutation-test p-value.

A replica's jump is the largest change of level in its curve near the original jump: for each epoch ``t`` the mean
of the ``width`` points from ``t`` minus the mean of the ``width`` points before it; its significance is that
difference over the curve's own noise (the median absolute first difference, robust to the jump itself).

>>> import numpy as np
>>> y = np.r_[np.full(10, 0.5), np.full(10, 0.8)] + 0.01 * np.random.default_rng(0).standard_normal(20)
>>> j = locate_jump(np.arange(20), y)
>>> j.at, round(j.size, 1), j.significance > 10
(10, 0.3, True)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .spec import ReplicaResult

# a jump is "there" in a replica when its level change is this many times the curve's noise
JUMP_THRESHOLD = 4.0
# a jump counts as removed when it shrinks below this share of the baseline's size
REMOVED_BELOW = 0.35
# at most this many label permutations are enumerated (beyond: a random sample of them)
MAX_PERMUTATIONS = 20000


@dataclass(frozen=True)
class Jump:
    at: int  # first epoch on the new level
    size: float  # mean level after - mean level before (signed)
    significance: float  # |size| over the noise of a difference of two means of `width` points


def curve_noise(y: np.ndarray) -> float:
    """Point-to-point noise of a curve: median absolute first difference / (0.6745 * sqrt 2), robust to one jump."""
    d = np.abs(np.diff(y[np.isfinite(y)]))
    if len(d) == 0:
        return math.nan
    return float(np.median(d) / (0.6745 * math.sqrt(2)))


def locate_jump(x, y, around: float | None = None, radius: float | None = None, width: int = 3,
                noise: float | None = None) -> Jump | None:
    """The largest change of level of ``y`` (indexed by epochs ``x``), within ``around ± radius`` when given;
    None when the curve is too short or not finite there. ``noise`` overrides the curve's own estimate (a seed band
    gives a better one)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n < 4 or not np.isfinite(y).all():
        finite = np.isfinite(y)
        if finite.sum() < 4:
            return None
        x, y, n = x[finite], y[finite], int(finite.sum())
    # a curve that does not move (an accuracy saturated at 1.0) has no point-to-point noise: floor it at a
    # thousandth of its scale, so that its first small change is not infinitely significant
    sigma = max(curve_noise(y) if noise is None else noise, 1e-3 * float(np.nanmax(np.abs(y))))
    best: tuple[float, int, float] | None = None
    for t in range(1, n):
        if around is not None and radius is not None and abs(x[t] - around) > radius:
            continue
        w = min(width, t, n - t)
        diff = float(y[t:t + w].mean() - y[t - w:t].mean())
        floor = sigma * math.sqrt(2.0 / w) if sigma and np.isfinite(sigma) and sigma > 0 else math.nan
        sig = abs(diff) / floor if floor == floor and floor > 0 else (math.inf if diff else 0.0)
        if best is None or sig > best[0]:
            best = (sig, t, diff)
    if best is None:
        return None
    sig, t, diff = best
    return Jump(at=int(x[t]), size=diff, significance=float(sig))


def _series(r: ReplicaResult, metric: str) -> tuple[np.ndarray, np.ndarray]:
    y = getattr(r, metric, None)
    if y is None:
        raise ValueError(f"a replica has no metric {metric!r} (one of train_loss, train_accuracy, val_loss, "
                         "val_accuracy)")
    return np.asarray(r.epochs, dtype=np.float64), np.asarray(y, dtype=np.float64)


@dataclass
class Band:
    """The baseline replicated over seeds: where and how big its jump is in each, and the curves' envelope."""

    metric: str
    jumps: list[Jump | None]
    x: list[float] = field(default_factory=list)
    lo: list[float] = field(default_factory=list)
    hi: list[float] = field(default_factory=list)
    median: list[float] = field(default_factory=list)
    noise: float = math.nan  # per-point spread of the curves across seeds (median over epochs)

    @property
    def present(self) -> list[Jump]:
        return [j for j in self.jumps if j is not None and j.significance >= JUMP_THRESHOLD]

    @property
    def reproducible(self) -> bool:
        """A jump in most seeds, in the same direction, its epoch spread within 1 epoch."""
        p = self.present
        if len(p) * 2 <= len(self.jumps) or len({math.copysign(1, j.size) for j in p}) > 1:
            return False
        return len(p) < 2 or float(np.std([j.at for j in p])) <= 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["jumps"] = [None if j is None else asdict(j) for j in self.jumps]
        d["reproducible"] = self.reproducible
        return _json_safe(d)


def seed_band(results: list[ReplicaResult], metric: str, around: float | None = None,
              radius: float | None = None) -> Band:
    """The band of the baseline replicas (those that ran): their jumps and the 10-90% envelope of their curves."""
    ok = [r for r in results if r.ok and len(r.epochs)]
    curves = [_series(r, metric) for r in ok]
    band = Band(metric, [])
    if not curves:
        return band
    xs = sorted(set().union(*(c[0].tolist() for c in curves)))
    grid = np.full((len(curves), len(xs)), np.nan)
    index = {x: i for i, x in enumerate(xs)}
    for k, (x, y) in enumerate(curves):
        grid[k, [index[v] for v in x.tolist()]] = y
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            band.x = xs
            band.lo = np.nanpercentile(grid, 10, axis=0).tolist()
            band.hi = np.nanpercentile(grid, 90, axis=0).tolist()
            band.median = np.nanmedian(grid, axis=0).tolist()
            spread = np.nanstd(grid, axis=0) if len(curves) > 1 else np.full(len(xs), np.nan)
            band.noise = float(np.nanmedian(spread)) if np.isfinite(spread).any() else math.nan
    band.jumps = [locate_jump(x, y, around, radius) for x, y in curves]
    return band


@dataclass
class Verdict:
    """An intervention against the baseline band."""

    name: str
    verdict: str  # "removed" | "moved" | "unchanged" | "no_jump" (nothing to move in the baseline) | "error"
    shift: float | None = None  # treated jump epoch - baseline jump epoch (mean over replicas)
    size_ratio: float | None = None  # treated jump size / baseline jump size
    effect_size: float | None = None  # the change over the baseline's seed spread (floored: see judge)
    p_value: float | None = None  # permutation test over the replicas (None: too few to test)
    message: str = ""
    jumps: list[Jump | None] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["jumps"] = [None if j is None else asdict(j) for j in self.jumps]
        return _json_safe(d)


def permutation_p(a: list[float], b: list[float], rng: np.random.Generator | None = None) -> float | None:
    """Two-sided p-value of the difference of means of ``a`` and ``b`` under exchangeable labels (every split when
    there are few, else MAX_PERMUTATIONS random ones); None when a group is empty or there is one split only."""
    a = [float(v) for v in a if v is not None and math.isfinite(v)]
    b = [float(v) for v in b if v is not None and math.isfinite(v)]
    if not a or not b:
        return None
    pooled = np.array(a + b)
    n, k = len(pooled), len(a)
    observed = abs(np.mean(a) - np.mean(b))
    total = math.comb(n, k)
    if total < 2:
        return None
    eps = 1e-12 * max(1.0, float(np.abs(pooled).max()))
    if total <= MAX_PERMUTATIONS:
        s = pooled.sum()
        hits = 0
        for idx in itertools.combinations(range(n), k):
            sa = pooled[list(idx)].sum()
            hits += abs(sa / k - (s - sa) / (n - k)) >= observed - eps
        return hits / total
    rng = rng or np.random.default_rng(0)
    hits = 1  # the observed split itself
    for _ in range(MAX_PERMUTATIONS):
        p = rng.permutation(pooled)
        hits += abs(p[:k].mean() - p[k:].mean()) >= observed - eps
    return hits / (MAX_PERMUTATIONS + 1)


def judge(name: str, band: Band, treated: list[ReplicaResult], around: float, radius: float,
          expected_shift: float | None = None) -> Verdict:
    """The verdict on ``treated`` replicas against the baseline ``band`` for the jump near epoch ``around``.

    The treated replicas are searched within ``radius`` of where the jump is expected (``around + expected_shift``
    when the intervention moves its supposed cause) and of where it was. Effect sizes divide by the baseline's
    spread over seeds, floored at one epoch (a jump's epoch is only known to about one) and at the curves' noise
    (size): a deterministic baseline would otherwise make every change infinitely large. Removed: the jump shrank
    below REMOVED_BELOW of its size, or below 70% and no longer significant in most replicas.
    """
    errors = [r.error for r in treated if not r.ok]
    ran = [r for r in treated if r.ok and len(r.epochs)]
    if not ran:
        why = errors[0] if errors else "no replica ran"
        return Verdict(name, "error", message=why)
    base = band.present
    if not base:
        best = max((j.significance for j in band.jumps if j is not None), default=0.0)
        return Verdict(name, "no_jump", message=f"the baseline shows no jump near epoch {around:g} to move or remove "
                       f"(largest level change {best:.1f}x its noise, below {JUMP_THRESHOLD:g}x)")
    centre = around + (expected_shift or 0.0)
    r_treated = radius + abs(expected_shift or 0.0)
    jumps = []
    for r in ran:
        x, y = _series(r, band.metric)
        jumps.append(locate_jump(x, y, centre, r_treated))
    base_at = [j.at for j in base]
    base_size = [j.size for j in base]
    mean_at, mean_size = float(np.mean(base_at)), float(np.mean(base_size))
    sd_at = max(float(np.std(base_at, ddof=1)) if len(base) > 1 else 0.0, 1.0)
    noise = band.noise if math.isfinite(band.noise) else 0.0
    # the noise of a level difference within one curve: what a size change is measured against with few seeds
    within = float(np.median([abs(j.size) / j.significance for j in base if j.significance > 0] or [0.0]))
    sd_size = max(float(np.std(base_size, ddof=1)) if len(base) > 1 else 0.0, noise, within, 1e-12)
    # a treated jump goes the same way as the baseline's (else it counts as size 0); it is removed when it shrinks
    # below REMOVED_BELOW of the baseline's size on average (its significance in one short replica curve is too
    # noisy a criterion: a jump can be intact and below the threshold in one replica)
    same_way = [j for j in jumps if j is not None and math.copysign(1, j.size) == math.copysign(1, mean_size)]
    sizes = [j.size if j in same_way else 0.0 for j in jumps]
    ratio = float(np.mean(sizes)) / mean_size if mean_size else None
    present = sum(j.significance >= JUMP_THRESHOLD for j in same_way)
    if not same_way or (ratio is not None and ratio < REMOVED_BELOW) or (
            present * 2 < len(jumps) and ratio is not None and ratio < 0.7):
        effect = (float(np.mean(sizes)) - mean_size) / sd_size
        return Verdict(name, "removed", size_ratio=ratio, effect_size=effect,
                       p_value=permutation_p(base_size, sizes), jumps=jumps,
                       message=f"the jump is gone: {present} of {len(jumps)} replicas still jump, at "
                               f"{_pct(ratio)} of the baseline's size")
    ats = [j.at for j in same_way]
    shift = float(np.mean(ats)) - mean_at
    effect = shift / sd_at
    p = permutation_p(base_at, ats)
    moved = abs(shift) >= 1.0 and abs(effect) >= 2.0
    if moved:
        exact = expected_shift is not None and abs(shift - expected_shift) < 0.5
        msg = f"the jump moved by {shift:+g} epochs (epoch {mean_at:g} -> {float(np.mean(ats)):g})" + (
            f", exactly the {expected_shift:+g} the intervention moved its cause" if exact else
            f" where the intervention moved its cause by {expected_shift:+g}" if expected_shift is not None else "")
        verdict = "moved"
    else:
        msg = f"the jump stayed at epoch {float(np.mean(ats)):g} (baseline {mean_at:g}), at {_pct(ratio)} of its size"
        if expected_shift:
            msg += f", although the intervention moved its supposed cause by {expected_shift:+g} epochs"
        verdict = "unchanged"
    return Verdict(name, verdict, shift=shift, size_ratio=ratio, effect_size=effect, p_value=p, jumps=jumps,
                   message=msg)


def _pct(v: float | None) -> str:
    return "?" if v is None or not math.isfinite(v) else f"{v:.0%}"


def _json_safe(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        return _json_safe(v.item())
    return v

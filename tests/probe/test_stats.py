"""The probe statistics against hand-computed ground truth: jump location, exact permutation p-values, verdicts."""

from __future__ import annotations

import math

import numpy as np

from whyspike.probe.spec import ReplicaResult, ReplicaSpec
from whyspike.probe.stats import judge, locate_jump, permutation_p, seed_band


def test_a_saturated_curve_locates_its_largest_change_not_its_first():
    y = np.ones(20)
    y[5] = 0.99  # a flicker at 1.0: no point-to-point noise at all around it
    y[12:] = 0.5
    j = locate_jump(np.arange(20), y)
    assert j.at == 12 and j.size == -0.5 and math.isfinite(j.significance)


def test_permutation_p_is_exact_for_small_groups():
    # 3 vs 3 fully separated: 2 of the C(6,3) = 20 splits are as extreme (two-sided)
    assert permutation_p([1, 2, 3], [4, 5, 6]) == 2 / 20
    assert permutation_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert permutation_p([], [1.0]) is None


def _replica(name: str, y) -> ReplicaResult:
    y = np.asarray(y, dtype=float)
    nan = np.full(len(y), np.nan)
    return ReplicaResult(name, ReplicaSpec(name=name), np.arange(len(y)), nan, y, nan, nan, nan, nan)


def _step_curve(at: int, size: float, seed: int, n: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.5 + size * (np.arange(n) >= at) + 0.005 * rng.standard_normal(n)


def test_verdicts_moved_removed_unchanged():
    base = [_replica(f"b{s}", _step_curve(12, 0.1, s)) for s in range(3)]
    band = seed_band(base, "train_accuracy", 12, 3)
    assert band.reproducible and [j.at for j in band.jumps] == [12, 12, 12]
    moved = judge("lr.shift=+3", band, [_replica(f"m{s}", _step_curve(15, 0.1, 10 + s)) for s in range(3)], 12, 3,
                  expected_shift=3)
    assert moved.verdict == "moved" and moved.shift == 3 and moved.p_value == 2 / 20
    removed = judge("lr.decay=off", band, [_replica(f"r{s}", _step_curve(12, 0.0, 20 + s)) for s in range(3)], 12, 3)
    assert removed.verdict == "removed" and removed.size_ratio < 0.35
    same = judge("wd=off", band, [_replica(f"u{s}", _step_curve(12, 0.1, 30 + s)) for s in range(3)], 12, 3)
    assert same.verdict == "unchanged" and same.shift == 0

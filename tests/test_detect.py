"""Detection against synthetic curves with known ground truth (independent of any importer)."""

import numpy as np
import pytest

from whyspike.detect import detect_spikes
from whyspike.detect.synthetic import curve, false_spike_rate, recall
from whyspike.run import make_series


def _detect(x, y, name="val_accuracy"):
    return detect_spikes(make_series(name, "epoch", x, y))


@pytest.mark.parametrize("noise", [0.002, 0.01, 0.03])
@pytest.mark.parametrize("n", [40, 200])
def test_noise_only_curves_rarely_report_a_spike(n, noise):
    # measured over 1000 curves in benchmarks/detection_quality.md: 0-4% per curve; 60 curves here
    assert false_spike_rate(n, noise, 60, _detect, seed=100) <= 0.07


def test_smooth_early_learning_is_not_a_spike():
    for tau in (2.0, 4.0, 8.0):
        x = np.arange(60)
        y = 0.1 + 0.85 * (1 - np.exp(-x / tau)) + 0.003 * np.random.default_rng(int(tau)).standard_normal(60)
        assert _detect(x, y) == [], tau
        loss = 2.3 * np.exp(-x / tau) + 0.05 + 0.003 * np.random.default_rng(7).standard_normal(60)
        assert _detect(x, loss, "loss") == [], tau


def test_level_shift_found_at_its_epoch_with_size_and_direction():
    x, y, _ = curve(100, noise=0.01, shift=10, at=60, seed=3)
    spikes = _detect(x, y)
    assert len(spikes) == 1
    s = spikes[0]
    assert (s.at, s.shape, s.direction) == (60, "step", "up")
    assert s.size == pytest.approx(0.10, abs=0.03)
    assert s.significance == pytest.approx(s.size / s.noise)
    x, y, _ = curve(100, noise=0.01, shift=-10, at=45, seed=4)
    assert [(s.at, s.direction) for s in _detect(x, y)] == [(45, "down")]


def test_transient_spike_found_at_its_peak():
    x, y, _ = curve(120, noise=0.01, spike=-12, at=70, seed=5)
    spikes = _detect(x, y)
    assert [(s.at, s.shape, s.direction) for s in spikes] == [(70, "transient", "down")]


def test_recall_on_real_shifts():
    assert recall(100, 0.01, 10, "step", 30, _detect, seed=11) >= 0.9
    assert recall(100, 0.01, 12, "transient", 30, _detect, seed=12) >= 0.9


def test_event_hint_lowers_the_bar_only_where_the_event_is():
    # a 2.2-sigma shift on a flat stretch: below the look-everywhere threshold, above the event-locked one
    def found(hints, seed):
        x, y, _ = curve(120, noise=0.01, shift=2.2, at=80, seed=seed, tau=10)
        return any(abs(sp.at - 80) <= 1 for sp in detect_spikes(make_series("val_accuracy", "epoch", x, y), hints=hints))

    seeds = range(21, 41)
    with_event = np.mean([found([80], s) for s in seeds])
    elsewhere = np.mean([found([30], s) for s in seeds])
    assert with_event >= 0.6
    assert elsewhere <= 0.25


def test_binomial_floor_with_known_eval_size():
    # a 3-point move on a 50-example set is sampling noise, even when the series is otherwise very smooth
    x = np.arange(60)
    y = np.full(60, 0.80)
    y[30:] = 0.84
    s = make_series("val_accuracy", "epoch", x, y)
    assert detect_spikes(s, eval_size=50) == []
    assert [sp.at for sp in detect_spikes(s, eval_size=100000)] == [30]


def test_nan_values_are_skipped_not_fatal():
    x, y, _ = curve(80, noise=0.01, shift=10, at=50, seed=8)
    y[10] = np.nan
    y[20] = np.inf
    assert [sp.at for sp in _detect(x, y)] == [50]


def test_long_step_series_is_scanned_linearly_and_finds_the_shift():
    rng = np.random.default_rng(0)
    n = 200_000
    y = 1.0 + 0.05 * rng.standard_normal(n)
    y[150_000:] -= 0.3
    y[80_000] += 1.5
    spikes = detect_spikes(make_series("train/loss", "step", np.arange(n), y))
    found = {(sp.shape, sp.at) for sp in spikes}
    assert ("step", 150_000) in found
    assert ("transient", 80_000) in found
    assert len(spikes) <= 3


def test_one_batch_missing_one_example_is_no_jump_when_the_batch_size_is_known():
    """Per-step training accuracy of batches of 16, saturated at 1.0: one batch at 15/16 is binomial noise."""
    import numpy as np

    from whyspike.detect import detect_spikes
    from whyspike.run import make_series

    y = np.ones(240)
    y[227] = 15 / 16
    s = make_series("step/accuracy", "step", np.arange(240), y)
    assert detect_spikes(s)  # with nothing known of the batch, a flat series makes any dip look significant
    assert detect_spikes(s, batch_size=16) == []

"""Every scenario, CI-sized: a real training recorded by whyspike's own recorder, diagnosed from its run directory,
and the diagnosis must name the scenario's ground truth first for its jump (or raise the finding that is the
truth). Each also checks, from the recorded data, that the mechanism really happened as configured — so a
scenario that stopped demonstrating its mechanism fails here even if the verdict still matched."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from whyspike import scenarios
from whyspike.diagnosis import diagnose
from whyspike.importers import load_run


def needs(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (pip install 'whyspike[keras,torch]')")


def _record(name, tmp_path):
    sc = scenarios.get(name)
    run_dir = sc.record(tmp_path, "ci")
    d = diagnose(load_run(run_dir))
    return sc, run_dir, d, sc.outcome(d)


def _series(d, name):
    s = d.run.series[name]
    return s.x, s.y


# independent checks on the recording: the mechanism as configured, read from the data, not from the verdict
def check_seed_ex1(sc, run_dir, d, outcome):
    x, lr = _series(d, "lr")  # logged at each epoch's end: the LR of the next step
    np.testing.assert_allclose(lr, 0.01 * 0.5 ** np.floor(32 * (x + 1) / 10), rtol=1e-5)  # Keras' formula
    _, acc = _series(d, "accuracy")
    assert np.ptp(acc[3:]) < 0.005  # stalled: nothing moves after the first epochs
    assert "lr_vanished" in outcome.findings


def check_seed_ex1_intended(sc, run_dir, d, outcome):
    x, lr = _series(d, "lr")
    np.testing.assert_allclose(lr, 0.01 * 0.5 ** np.floor(32 * (x + 1) / 320), rtol=1e-5)
    assert outcome.jump.at == 10 and outcome.jump.direction == "down"


def check_seed_noise(sc, run_dir, d, outcome):
    _, acc = _series(d, "accuracy")
    assert np.max(np.abs(np.diff(acc))) < 0.06  # epoch-to-epoch wobble of a few hundredths
    assert not [s for s in d.spikes if s.metric == "accuracy" and s.causes[0].id != "stochastic"]


def check_lr_step_decay(sc, run_dir, d, outcome):
    x, lr = _series(d, "lr")
    assert lr[x == 19][0] == pytest.approx(0.2) and lr[x == 20][0] == pytest.approx(0.02)
    assert "loss" in {s.metric for s in d.spikes if s.at == 20}  # train and validation move together


def check_grokking(sc, run_dir, d, outcome):
    x, acc = _series(d, "step/accuracy")
    fit = x[np.argmax(acc >= 0.98)]
    assert acc.max() >= 0.98 and outcome.jump.start - fit >= 200  # memorized long before validation rose
    _, val = _series(d, "step/val_accuracy")
    assert val.max() > 0.9 and val[:5].max() < 0.2


def check_catapult(sc, run_dir, d, outcome):
    _, loss = _series(d, "step/loss")
    low = int(np.argmin(loss[:15]))  # the loss first falls for a few steps ...
    assert loss[low:40].max() > 5 * loss[low]  # ... then shoots up ...
    assert loss[-1] < loss[low]  # ... and landed lower
    assert json.loads((run_dir / "meta.json").read_text())["sharpness_at_init"] > 0


def check_edge_of_stability(sc, run_dir, d, outcome):
    ups = [s for s in d.spikes if s.metric == "step/loss" and s.direction == "up"]
    assert len(ups) >= 3  # spikes again and again at a constant LR
    assert len(np.unique(_series(d, "step/lr")[1])) == 1


def check_deep_linear_plateau(sc, run_dir, d, outcome):
    _, loss = _series(d, "step/loss")
    assert abs(loss[100] - loss[0]) < 0.05 * loss[0]  # flat for the first 100 steps
    assert outcome.jump.after < 0.5 * outcome.jump.before


def check_warmup_spike(sc, run_dir, d, outcome):
    x, lr = _series(d, "step/lr")
    assert int(x[np.argmax(lr)]) == sc.config("ci").warmup_steps - 1
    assert outcome.jump.at < sc.config("ci").warmup_steps + 40


def check_warm_restarts(sc, run_dir, d, outcome):
    x, lr = _series(d, "lr")
    restarts = x[1:][lr[1:] > 5 * lr[:-1]]
    assert list(restarts) == [15, 30]


def check_batchnorm_lag(sc, run_dir, d, outcome):
    x, val = _series(d, "val_accuracy")
    _, precise = _series(d, "val_precise_bn_accuracy")
    before = x < outcome.jump.start
    assert val[before].mean() < 0.4 and precise[before].mean() > 0.9  # same weights, recomputed statistics


def check_stochastic_jump(sc, run_dir, d, outcome):
    _, lr = _series(d, "step/lr")
    assert len(np.unique(lr)) == 1  # nothing was scheduled
    assert outcome.jump.shape == "transient"


def check_small_eval_set(sc, run_dir, d, outcome):
    _, val = _series(d, "val_accuracy")
    assert np.allclose(val * 50, np.round(val * 50), atol=1e-4)  # 50 examples: steps of 0.02
    assert np.max(np.diff(val[5:])) >= 0.08  # a leap a person would call a jump ...
    assert not [s for s in d.spikes if s.metric == "val_accuracy"]  # ... inside the binomial noise


def check_resume(sc, run_dir, d, outcome):
    assert any(e.kind == "step_rewind" for e in d.run.events)
    assert "resume_detected" in outcome.findings
    assert outcome.jump.after > 2 * outcome.jump.before


def check_augmentation_switch(sc, run_dir, d, outcome):
    x, aug = _series(d, "augment")
    assert list(aug[x < 30]) == [1.0] * 30 and not aug[x >= 30].any()
    assert not [s for s in d.spikes if s.metric == "augment"]  # a setting is not a jump


def check_keras_running_average(sc, run_dir, d, outcome):
    _, acc = _series(d, "accuracy")
    _, at_end = _series(d, "train_eval_accuracy")
    assert at_end[0] - acc[0] > 0.2 and abs(at_end[1] - acc[1]) < 0.05


CHECKS = {
    "seed-ex1": check_seed_ex1, "seed-ex1-intended": check_seed_ex1_intended, "seed-ex2": check_seed_noise,
    "seed-ex3": check_seed_noise, "lr-step-decay": check_lr_step_decay, "grokking": check_grokking,
    "catapult": check_catapult, "edge-of-stability": check_edge_of_stability,
    "deep-linear-plateau": check_deep_linear_plateau, "warmup-spike": check_warmup_spike,
    "warm-restarts": check_warm_restarts, "batchnorm-lag": check_batchnorm_lag,
    "stochastic-jump": check_stochastic_jump, "small-eval-set": check_small_eval_set,
    "resume-without-optimizer-state": check_resume, "augmentation-switch": check_augmentation_switch,
    "keras-running-average": check_keras_running_average,
}


def test_every_scenario_has_a_check():
    assert set(CHECKS) == set(scenarios.names())


@pytest.mark.parametrize("name", [n for n in scenarios.names() if scenarios.get(n).framework == "torch"])
@needs("torch")
def test_torch_scenario_names_its_ground_truth_first(name, tmp_path):
    sc, run_dir, d, outcome = _record(name, tmp_path)
    assert outcome.ok, outcome.summary() + " " + outcome.note
    CHECKS[name](sc, run_dir, d, outcome)


@pytest.mark.parametrize("name", [n for n in scenarios.names() if scenarios.get(n).framework == "keras"])
@needs("torch", "keras")
def test_keras_scenario_names_its_ground_truth_first(name, tmp_path):
    sc, run_dir, d, outcome = _record(name, tmp_path)
    assert outcome.ok, outcome.summary() + " " + outcome.note
    CHECKS[name](sc, run_dir, d, outcome)

"""The seed article's Example 1 (a real Keras 3 run, tests/data/seed): its schedule decays per optimizer step."""

from pathlib import Path

import numpy as np

import whyspike
from whyspike.diagnosis import diagnose
from whyspike.explain.staircase import fit_staircase

SEED = Path(__file__).parent / "data" / "seed"


def test_lr_log_matches_keras_exponential_decay_formula():
    # independent ground truth: lr = 0.01 * 0.5 ** floor(iterations / 10) with 32 steps per epoch, logged at epoch end
    run = whyspike.load_run(SEED / "ex1_lr_decay.csv")
    lr = run.series["learning_rate"]
    expected = 0.01 * 0.5 ** np.floor(32 * (lr.x + 1) / 10)
    np.testing.assert_allclose(lr.y, expected, rtol=1e-6)


def test_staircase_read_back():
    st = fit_staircase(0.01 * 0.5 ** np.floor(32 * (np.arange(30) + 1) / 10))
    assert st.rate == 0.5 and st.initial == 0.01 and abs(st.decays_per_epoch - 3.2) < 1e-9
    assert fit_staircase(np.full(10, 0.1)) is None


def test_example1_diagnosis_says_lr_vanished_training_stopped_no_jump_and_the_fix():
    run = whyspike.load_run(SEED / "ex1_lr_decay.csv")
    run.setup.steps_per_epoch = 32  # 1000 samples / batch 32, as in the program
    d = diagnose(run)
    ids = [f.id for f in d.findings]
    assert "lr_vanished" in ids and "schedule_units" in ids
    vanished = next(f for f in d.findings if f.id == "lr_vanished").message
    assert "from 0.01" in vanished and "1.3e-31" in vanished
    assert "stopped after epoch 1" in vanished and "first 2 epochs" in vanished
    units = next(f for f in d.findings if f.id == "schedule_units").message
    assert "epoch 10, 20" in units and "no jump happened there" in units
    assert "decay_steps = 10 x steps_per_epoch = 320" in units
    assert [s for s in d.spikes if s.metric == "accuracy"] == []


def test_example1_history_json_without_steps_per_epoch_still_flags_units():
    d = diagnose(whyspike.load_run(SEED / "ex1_history.json"))
    units = next(f for f in d.findings if f.id == "schedule_units").message
    assert "per optimizer step" in units and "decay_steps = N x steps_per_epoch" in units

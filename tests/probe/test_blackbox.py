"""The black-box engine: interventions injected into unchanged Keras scripts, and replicas run as subprocesses.

Two halves. The mechanics run in this process through ``whyspike run``'s Injection (Keras imported once): each
intervention against a closed form computed here — the LR at every recorded step, the hyper-parameters the
optimizer ends with, bit-identical or different losses for equal or different seeds. The end-to-end half runs the
seed's three examples (unchanged, through ``WHYSPIKE_MAX_EPOCHS`` and interventions only), a real LR-drop jump and
broken replicas through :func:`run_script_replica`, in child processes forked from one warm process.
"""

from __future__ import annotations

import importlib.util
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

SEED_EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "seed" / "examples"
DATA = Path(__file__).resolve().parent / "data"
HAS_KERAS = importlib.util.find_spec("keras") is not None and importlib.util.find_spec("torch") is not None
pytestmark = pytest.mark.skipif(not HAS_KERAS, reason="keras and torch are needed")


@pytest.fixture(scope="module", autouse=True)
def warm_process():
    """The children are forked from one warm process: start it now, its imports overlap the in-process tests."""
    from whyspike.probe.engines.blackbox import warm_up

    warm_up()
    yield


# ------------------------------------------------------------------------------------------ in-process mechanics

SCHEDULED = """
import numpy as np
from tensorflow import keras
keras.utils.set_random_seed(0)
x, y = np.random.rand(64, 4).astype("float32"), np.random.randint(0, 3, 64)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(3, activation="softmax")])
schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5, staircase=True)
model.compile(keras.optimizers.SGD(learning_rate=schedule, momentum=0.9), "sparse_categorical_crossentropy",
              metrics=["accuracy"])
model.fit(x, y, epochs=5, batch_size=16, verbose=0)   # 4 steps per epoch: the LR halves every epoch
"""

BY_CALLBACK = """
import numpy as np
from tensorflow import keras
keras.utils.set_random_seed(0)
x, y = np.random.rand(64, 4).astype("float32"), np.random.randint(0, 3, 64)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
model.compile(keras.optimizers.SGD(learning_rate=0.1), "sparse_categorical_crossentropy")
drop = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 if epoch < 2 else 0.01)
model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[drop])
"""

SEEDED = """
import random
import numpy as np
from tensorflow import keras
keras.utils.set_random_seed(123)
np.random.seed(5)
random.seed(7)
print("DRAWS", np.random.rand(), random.random(), np.random.default_rng(11).random())
x, y = np.random.rand(64, 4).astype("float32"), np.random.randint(0, 3, 64)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.5),
                          keras.layers.Dense(3, activation="softmax")])
model.compile(keras.optimizers.SGD(learning_rate=0.1), "sparse_categorical_crossentropy")
model.fit(x, y, epochs=2, batch_size=16, verbose=0)
"""

HYPER = """
import numpy as np
from tensorflow import keras
keras.utils.set_random_seed(0)
x, y = np.random.rand(64, 4).astype("float32"), np.random.randint(0, 3, 64)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                          keras.layers.Dense(3, activation="softmax")])
model.compile(keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.004), "sparse_categorical_crossentropy")
model.fit(x, y, epochs=1, batch_size=16, verbose=0)
o = model.optimizer
print("HYPER", json.dumps({"bn": model.layers[1].momentum, "eps": o.epsilon, "beta_2": o.beta_2,
                          "wd": o.weight_decay}))
""".replace("import numpy as np", "import json\nimport numpy as np", 1)


def run_here(tmp_path: Path, monkeypatch, code: str, interventions: dict, name: str = "s.py"):
    """Run ``code`` as a script through Injection in this process with ``interventions``; (outcome, step table)."""
    from whyspike.record.inject import Injection, Options

    script = tmp_path / name
    script.write_text(code)
    monkeypatch.setenv("WHYSPIKE_INTERVENE", json.dumps(interventions))
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    out = tmp_path / f"runs-{len(list(tmp_path.glob('runs-*')))}"
    with Injection(script, Options(out=out, live=False, checkpoints=0, threads=1)) as injection:
        outcome = injection.run([])
    steps = None
    if outcome.runs:
        from whyspike.probe.engines.blackbox import _table

        steps = _table(outcome.runs[0].path / "steps", "step")
    return outcome, steps


def lr_at(steps: dict) -> tuple[np.ndarray, np.ndarray]:
    return steps["step"].astype(int), steps["lr"]


@pytest.mark.parametrize("items, closed_form, steps_per_epoch", [
    ({}, lambda t: 0.1 * 0.5 ** (t // 4), 4),
    ({"lr.shift": "2"}, lambda t: 0.1 * 0.5 ** (np.maximum(0, t - 8) // 4), 4),
    ({"lr.shift": "-1"}, lambda t: 0.1 * 0.5 ** ((t + 4) // 4), 4),
    ({"lr.hold": "2"}, lambda t: 0.1 * 0.5 ** (np.minimum(t, 8) // 4), 4),
    ({"lr.decay": "off"}, lambda t: 0.1 + 0 * t, 4),
    ({"lr.scale": "0.5"}, lambda t: 0.05 * 0.5 ** (t // 4), 4),
    ({"momentum": "off"}, lambda t: 1.0 * 0.5 ** (t // 4), 4),  # 0.1 / (1 - 0.9)
    ({"batch.scale": "2"}, lambda t: 0.2 * 0.5 ** (t // 4), 2),  # 2 steps per epoch now, the schedule in steps
])
def test_lr_interventions_give_the_closed_form_lr_at_every_step(tmp_path, monkeypatch, items, closed_form,
                                                                  steps_per_epoch):
    outcome, steps = run_here(tmp_path, monkeypatch, SCHEDULED, items)
    assert outcome.error is None, outcome.error
    t, lr = lr_at(steps)
    assert len(t) == 5 * steps_per_epoch and t[0] == 0
    np.testing.assert_allclose(lr, closed_form(t), rtol=1e-6)
    if "momentum" in items:
        assert np.all(steps["momentum"] == 0.0)
    else:
        assert np.all(steps["momentum"] == pytest.approx(0.9))


@pytest.mark.parametrize("items, per_epoch", [
    ({}, [0.1, 0.1, 0.01, 0.01, 0.01]),
    ({"lr.shift": "2"}, [0.1, 0.1, 0.1, 0.1, 0.01]),
    ({"lr.decay": "off"}, [0.1] * 5),
    ({"lr.hold": "1"}, [0.1] * 5),
    ({"lr.scale": "3"}, [0.3, 0.3, 0.03, 0.03, 0.03]),
])
def test_a_learning_rate_scheduler_callback_is_shifted_held_and_scaled(tmp_path, monkeypatch, items, per_epoch):
    outcome, steps = run_here(tmp_path, monkeypatch, BY_CALLBACK, items)
    assert outcome.error is None, outcome.error
    t, lr = lr_at(steps)
    np.testing.assert_allclose(lr, np.repeat(per_epoch, 4), rtol=1e-6)


def test_seed_replaces_every_seed_the_script_sets(tmp_path, monkeypatch, capsys):
    draws, losses = {}, {}
    for k, seed in enumerate(("3", "3", "4")):
        outcome, steps = run_here(tmp_path, monkeypatch, SEEDED, {"seed": seed})
        assert outcome.error is None, outcome.error
        line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("DRAWS")][-1]
        draws[k], losses[k] = line, steps["loss"]
    # np.random.seed(5) and random.seed(7) became seed 3: the first draws are those of seed 3; the script's own
    # generator default_rng(11) is seeded from (3, 11)
    from whyspike.record._intervene import derived_seed

    own = np.random.default_rng(derived_seed("default_rng", 3, "11")).random()
    expect = f"DRAWS {np.random.RandomState(3).rand()} {random.Random(3).random()} {own}"
    assert draws[0] == draws[1] == expect and draws[2] != expect
    assert np.array_equal(losses[0], losses[1])  # bit-identical on CPU, one thread
    assert not np.allclose(losses[0], losses[2])


@pytest.mark.parametrize("stream", ["seed.data", "seed.noise", "seed.init"])
def test_each_seed_stream_alone_changes_the_training_and_is_reproducible(tmp_path, monkeypatch, stream):
    runs = []
    for value in ("1", "1", "2"):
        outcome, steps = run_here(tmp_path, monkeypatch, SEEDED, {"seed": "0", stream: value})
        assert outcome.error is None, outcome.error
        runs.append(steps["loss"])
    assert np.array_equal(runs[0], runs[1]) and not np.allclose(runs[0], runs[2])


ORDER = """
import numpy as np
from tensorflow import keras
keras.utils.set_random_seed(0)
x = np.random.rand(64, 4).astype("float32")
y = np.arange(64, dtype="float32")[:, None]  # the target is the sample's index: its batch mean shows the order
index = keras.metrics.MeanMetricWrapper(lambda t, p: keras.ops.mean(t, axis=-1), name="index")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5), keras.layers.Dense(1)])
model.compile(keras.optimizers.SGD(learning_rate=1e-4), "mse", metrics=[index])
model.fit(x, y, epochs=3, batch_size=8, verbose=0)
"""


def test_the_data_seed_moves_only_the_order_and_the_noise_seed_only_the_dropout(tmp_path, monkeypatch):
    runs = {}
    for data, noise in (("1", "1"), ("1", "2"), ("2", "1")):
        outcome, steps = run_here(tmp_path, monkeypatch, ORDER, {"seed": "0", "seed.data": data, "seed.noise": noise})
        assert outcome.error is None, outcome.error
        runs[data, noise] = steps
    order = {k: v["index"] for k, v in runs.items()}  # mean sample index of each batch: the order, batch by batch
    assert np.array_equal(order["1", "1"], order["1", "2"])  # another noise seed, the same order
    assert not np.array_equal(order["1", "1"], order["2", "1"])
    assert np.all(np.sort(order["1", "1"].reshape(3, 8), axis=1).sum(axis=1) == pytest.approx(8 * 31.5))
    assert not np.allclose(runs["1", "1"]["loss"], runs["1", "2"]["loss"])  # the masks changed the losses
    # the order of an epoch depends on (data seed, epoch) only: three epochs, three different orders
    by_epoch = order["1", "1"].reshape(3, 8)
    assert not np.array_equal(by_epoch[0], by_epoch[1]) and not np.array_equal(by_epoch[1], by_epoch[2])


def test_shuffle_fixed_keeps_one_order_and_reshuffle_draws_a_new_one_each_epoch(tmp_path, monkeypatch):
    for code in (ORDER, ORDER.replace("verbose=0)", "verbose=0, shuffle=False)")):
        runs = {}
        for how in ("fixed", "reshuffle"):
            outcome, steps = run_here(tmp_path, monkeypatch, code, {"seed": "0", "shuffle": how})
            assert outcome.error is None, outcome.error
            runs[how] = steps["index"].reshape(3, 8)  # mean sample index of each batch, per epoch
        fixed, new = runs["fixed"], runs["reshuffle"]
        assert np.array_equal(fixed[0], fixed[1]) and np.array_equal(fixed[1], fixed[2])
        assert not np.array_equal(fixed[0], np.arange(8) * 8 + 3.5)  # one drawn order, not the arrays' own
        assert not np.array_equal(new[0], new[1]) and not np.array_equal(new[1], new[2])


WARMUP = """
import numpy as np
from tensorflow import keras
keras.utils.set_random_seed(0)
x, y = np.random.rand(64, 4).astype("float32"), np.random.randint(0, 3, 64)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=12, warmup_target=0.1, warmup_steps=4)
model.compile(keras.optimizers.SGD(learning_rate=schedule), "sparse_categorical_crossentropy")
model.fit(x, y, epochs=5, batch_size=16, verbose=0)
"""


def test_lr_warmup_stretches_the_schedules_warmup(tmp_path, monkeypatch):
    import keras

    outcome, steps = run_here(tmp_path, monkeypatch, WARMUP, {"lr.warmup": "2"})
    assert outcome.error is None, outcome.error
    t, lr = lr_at(steps)
    longer = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=12, warmup_target=0.1, warmup_steps=8)
    expect = np.array([float(keras.ops.convert_to_numpy(longer(int(k)))) for k in t])
    np.testing.assert_allclose(lr, expect, rtol=1e-6)
    assert lr[:8].tolist() == sorted(lr[:8].tolist()) and lr[7] == pytest.approx(0.1 * 7 / 8)  # the longer ramp


PLATEAU = """
import numpy as np
from tensorflow import keras
keras.utils.set_random_seed(0)
x, y = np.random.rand(64, 4).astype("float32"), np.random.randint(0, 3, 64)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax",
                                                               kernel_regularizer=keras.regularizers.L2(0.01))])
model.compile(keras.optimizers.SGD(learning_rate=0.1), "sparse_categorical_crossentropy")
# min_delta=10: no epoch ever counts as an improvement, so the LR is cut after every epoch
cut = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[cut])
print("L2", model.layers[0].kernel_regularizer.l2)
"""


def test_reduce_lr_on_plateau_is_switched_off_or_scaled_and_l2_is_weight_decay(tmp_path, monkeypatch, capsys):
    for items, per_epoch, l2 in (({}, [0.1, 0.1, 0.05, 0.025], 0.01),
                                 ({"lr.decay": "off"}, [0.1] * 4, 0.01),
                                 ({"lr.hold": "2"}, [0.1, 0.1, 0.05, 0.05], 0.01),
                                 ({"lr.scale": "2", "wd.scale": "0.5"}, [0.2, 0.2, 0.1, 0.05], 0.005),
                                 ({"wd": "off"}, [0.1, 0.1, 0.05, 0.025], 0.0)):
        outcome, steps = run_here(tmp_path, monkeypatch, PLATEAU, items)
        assert outcome.error is None, outcome.error
        t, lr = lr_at(steps)
        np.testing.assert_allclose(lr, np.repeat(per_epoch, 4), rtol=1e-6, err_msg=str(items))
        got = float([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("L2")][-1].split()[1])
        assert got == pytest.approx(l2)
    outcome, _ = run_here(tmp_path, monkeypatch, PLATEAU, {"lr.shift": "1"})
    assert "ReduceLROnPlateau reacts to the metrics, it has no milestones to shift" in str(outcome.error)


def test_optimizer_and_batchnorm_hyper_parameters_are_set(tmp_path, monkeypatch, capsys):
    for items, expect in (({}, {"bn": 0.99, "eps": 1e-7, "beta_2": 0.999, "wd": 0.004}),
                          ({"bn.momentum": "0.1"}, {"bn": 0.9}),
                          ({"adam.eps": "0.001", "adam.beta2": "0.95"}, {"eps": 1e-3, "beta_2": 0.95}),
                          ({"wd.scale": "0.5"}, {"wd": 0.002}),
                          ({"wd": "off"}, {"wd": None})):
        outcome, _ = run_here(tmp_path, monkeypatch, HYPER, items)
        assert outcome.error is None, outcome.error
        got = json.loads([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("HYPER")][-1][6:])
        for key, value in expect.items():
            assert got[key] == (value if value is None else pytest.approx(value)), (items, key, got)


@pytest.mark.parametrize("code, items, message", [
    (HYPER, {"momentum": "off"}, "optimizer AdamW has no momentum hyper-parameter (its first-moment decay is beta_1"),
    (SCHEDULED, {"adam.eps": "1e-3"}, "adam.eps=1e-3: optimizer SGD has no epsilon hyper-parameter"),
    (SCHEDULED, {"bn.momentum": "0.1"}, "the model has no BatchNormalization layer"),
    (SCHEDULED, {"wd": "off"}, "there is no weight decay to change"),
    (SEEDED, {"lr.shift": "2"}, "the learning rate is constant (0.1; no LearningRateSchedule"),
    (HYPER, {"seed.noise": "1"}, "the model has no random layer"),
    (SCHEDULED, {"branch": "/nonexistent/checkpoints/epoch-0003"}, "not a whyspike Keras checkpoint"),
])
def test_an_intervention_the_training_cannot_take_stops_it_with_a_clear_error(tmp_path, monkeypatch, code, items,
                                                                               message):
    from whyspike.record._intervene import InterventionError

    outcome, _ = run_here(tmp_path, monkeypatch, code, items)
    assert isinstance(outcome.error, InterventionError)
    assert message in str(outcome.error)
    assert outcome.runs == []  # stopped before the recorder was attached: nothing half-trained is left


def test_a_recorded_run_reads_back_into_a_result_that_survives_json(tmp_path, monkeypatch):
    from whyspike.probe.engines.blackbox import ScriptReplicaResult, result_from_run

    outcome, steps = run_here(tmp_path, monkeypatch, SCHEDULED, {"lr.shift": "1", "seed": "2"})
    r = result_from_run(outcome.runs[0].path, "shifted")
    assert r.epochs.tolist() == [0, 1, 2, 3, 4] and np.array_equal(r.step_loss, steps["loss"])
    assert r.replica.overrides == {"lr.shift": "1", "seed": "2"} and r.replica.init_seed == 2
    np.testing.assert_allclose(r.lr, 0.1 * 0.5 ** (np.maximum(0, np.arange(5) * 4 + 3 - 4) // 4), rtol=1e-6)
    back = ScriptReplicaResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert np.array_equal(back.train_accuracy, r.train_accuracy) and back.run_dir == r.run_dir
    assert set(back.extra) == set(r.extra) and back.replica.overrides == r.replica.overrides


def test_bad_names_and_values_are_usage_errors():
    from whyspike.errors import UsageError
    from whyspike.record._intervene import parse_interventions

    for items, message in (({"lr.shfit": "3"}, "unknown intervention 'lr.shfit'"),
                           ({"skip": "4"}, "skip=4 is not possible in a black-box Keras script"),
                           ({"momentum": "1.5"}, "momentum=1.5 is out of range"),
                           ({"shuffle": "sometimes"}, "use shuffle=fixed or shuffle=reshuffle"),
                           ({"lr.shift": "two"}, "lr.shift='two' is not a whole number")):
        with pytest.raises(UsageError, match=None) as info:
            parse_interventions(items)
        assert message in str(info.value)
    assert parse_interventions({"lr.shift": "+3", "momentum": "off"}).lr_shift == 3


# ------------------------------------------------------------------------------------------ end to end, in children


def replica(script: Path, out: Path, interventions: dict | None = None, **kw):
    from whyspike.probe.engines.blackbox import run_script_replica

    kw.setdefault("seed", None)
    kw.setdefault("branch", None)
    result = run_script_replica(script, [], interventions=interventions or {}, out_dir=out, **kw)
    print(f"{result.name}: {result.seconds:.1f} s, error={result.error}")
    return result


def settles_at(y: np.ndarray) -> int | None:
    """The first epoch from which the curve stays above everything before it: where it reached its new level."""
    for e in range(1, len(y)):
        if np.min(y[e:]) > np.max(y[:e]):
            return e
    return None


def test_example1_as_intended_shifting_the_decay_moves_its_jump_by_exactly_the_shift(tmp_path):
    from whyspike.probe import stats

    script = DATA / "ex1_lr_decay_per_epoch.py"  # the seed's Example 1 with decay_steps = 10 x steps_per_epoch
    original = replica(script, tmp_path / "original", {"seed.data": "0"}, seed=0, checkpoints=30,
                       env={"WHYSPIKE_CHECKPOINT_BUDGET": "1"})
    assert original.ok, original.error
    branch = Path(original.run_dir) / "checkpoints" / "epoch-0008"
    shifted = replica(script, tmp_path / "shifted", {"seed.data": "0", "lr.shift": "3"}, seed=0, branch=branch)
    assert shifted.ok, shifted.error
    assert shifted.epochs.tolist() == list(range(9, 30))  # the branch trains only what follows epoch 8
    last = 32 * np.arange(30) + 31  # each epoch's last step (32 steps per epoch)
    np.testing.assert_allclose(original.lr, 0.01 * 0.5 ** (last // 320), rtol=1e-6)
    np.testing.assert_allclose(shifted.lr, 0.01 * 0.5 ** (np.maximum(0, last[9:] - 96) // 320), rtol=1e-6)
    # the branch replays the original bit for bit until the LRs part at step 320
    o = original.step_loss[np.isin(original.steps, shifted.steps)]
    k = int(np.searchsorted(shifted.steps, 320))
    assert k == 32 and np.array_equal(o[:k], shifted.step_loss[:k])
    assert not np.array_equal(o[k:k + 32], shifted.step_loss[k:k + 32])

    # the script draws its data unseeded: seed=1 trains on other data, and a branch into seed 0's run says so
    other = replica(script, tmp_path / "other", {"seed.data": "0"}, seed=1, branch=branch)
    assert "the script's training data differ from those of the run the checkpoint comes from" in other.error

    # the jumps: whyspike's detector (trend-aware, as `diagnose` uses it) on both curves, hinted at the decays
    from whyspike.detect.spikes import detect_spikes
    from whyspike.run import make_series

    x = np.arange(30)
    acc = original.train_accuracy
    moved = np.r_[acc[:9], shifted.train_accuracy]
    found_o = detect_spikes(make_series("accuracy", "epoch", x, acc), hints=[10, 20])
    found_s = detect_spikes(make_series("accuracy", "epoch", x, moved), hints=[13, 23])
    level = {m: stats.locate_jump(x, acc, around=m, radius=1) for m in (10, 20)}
    print(f"example 1 as intended: accuracy {np.round(acc, 3)}; shifted {np.round(moved, 3)}; spikes "
          f"{[(j.at, round(j.size, 3)) for j in found_o]} -> {[(j.at, round(j.size, 3)) for j in found_s]}; "
          f"level changes at the decays (probe statistic) {level}")
    at_decays = [j for j in found_o if min(abs(j.at - 10), abs(j.at - 20)) <= 1]
    for j in at_decays:  # a jump at a decay moves with it, exactly
        assert any(k.at == j.at + 3 and k.direction == j.direction for k in found_s), (j, found_s)
    if not at_decays:  # no jump to move: and the shift made none either
        assert not [k for k in found_s if min(abs(k.at - 13), abs(k.at - 23)) <= 1], found_s


def test_a_real_lr_drop_jump_moves_by_exactly_the_shift(tmp_path):
    from whyspike.probe import stats

    script = DATA / "lr_drop.py"  # digits, noisy labels, SGD 0.9 at LR 0.2, LR / 10 at epoch 8 (a callback)
    original = replica(script, tmp_path / "original", {"seed.data": "0"}, checkpoints=30,
                       env={"WHYSPIKE_CHECKPOINT_BUDGET": "1"})
    assert original.ok, original.error
    shifted = replica(script, tmp_path / "shifted", {"seed.data": "0", "lr.shift": "3"},
                      branch=Path(original.run_dir) / "checkpoints" / "epoch-0005")
    assert shifted.ok, shifted.error
    np.testing.assert_allclose(original.lr, np.where(np.arange(18) < 8, 0.2, 0.02), rtol=1e-6)
    np.testing.assert_allclose(shifted.lr, np.where(np.arange(6, 18) < 11, 0.2, 0.02), rtol=1e-6)
    x = np.arange(18)
    y0, y1 = original.val_accuracy, np.r_[original.val_accuracy[:6], shifted.val_accuracy]
    assert np.array_equal(y0[:8], y1[:8])  # the same epochs 6 and 7: the branch replays the original exactly
    j0 = stats.locate_jump(x, y0)
    j1 = stats.locate_jump(x, y1, around=j0.at + 3, radius=2)
    print(f"LR drop: original val accuracy {np.round(y0, 3)}, jump {j0}; shifted {np.round(y1, 3)}, jump {j1}")
    assert j0.at == 8 and j0.significance >= stats.JUMP_THRESHOLD and j0.size > 0.05
    assert j1.at == 11 and j1.size > 0.03
    assert settles_at(y0) == 8 and settles_at(y1) == 11  # the new level, reached exactly 3 epochs later


def test_example3_seed_spread_says_whether_the_largest_jump_is_reproducible(tmp_path):
    from whyspike.probe import stats

    script = SEED_EXAMPLES / "ex3_sgd_momentum.py"  # unchanged: 30 epochs, SGD + momentum, random labels
    results = [replica(script, tmp_path / f"seed{s}", seed=s) for s in range(4)]
    assert all(r.ok for r in results), [r.error for r in results]
    curves = np.array([r.train_accuracy for r in results])
    assert curves.shape == (4, 30) and len({c.tobytes() for c in curves}) == 4  # every seed its own training
    band = stats.seed_band(results, "train_accuracy")
    gains = np.diff(curves, axis=1)
    largest = gains.argmax(axis=1) + 1  # independent: the epoch of the largest one-epoch gain, per seed
    print(f"example 3: largest one-epoch gain per seed at epochs {largest.tolist()} of size "
          f"{np.round(gains.max(axis=1), 3).tolist()}; level-change jumps {band.jumps}; "
          f"reproducible: {band.reproducible}")
    assert len(band.jumps) == 4 and all(j is not None for j in band.jumps)
    assert np.ptp([j.at for j in band.jumps]) > 2 and len(set(largest.tolist())) > 1
    assert band.reproducible is False  # the largest jump wanders from seed to seed: SGD noise, not an event


def test_example2_bn_share_measures_the_batch_statistics_part_of_the_swings(tmp_path):
    from whyspike.probe.engines.blackbox import bn_series, bn_share

    script = SEED_EXAMPLES / "ex2_batchnorm.py"  # unchanged: no validation data, so it runs on the training set
    r = replica(script, tmp_path / "bn", seed=0, detailed=True, env={"WHYSPIKE_MAX_EPOCHS": "15"})
    assert r.ok, r.error
    running, recomputed, on = bn_series(r)
    assert on == "train" and len(running) == 15 and np.isfinite(recomputed).all()
    share = bn_share(r)
    d_run, d_rec = np.diff(running), np.diff(recomputed)
    assert share == pytest.approx(1 - np.var(d_rec, ddof=1) / np.var(d_run, ddof=1))
    assert not np.array_equal(running, recomputed)  # the statistics were really recomputed
    print(f"example 2: eval-mode accuracy with running statistics {np.round(running, 3)}; recomputed "
          f"{np.round(recomputed, 3)}; share of the epoch-to-epoch variance from BN statistics {share:.2f}")
    assert share <= 1.0


BN_LAG = DATA / "bn_lag.py"


def test_recomputed_statistics_remove_the_swings_of_a_bn_running_statistics_case(tmp_path):
    from whyspike.probe.engines.blackbox import bn_series, bn_share

    r = replica(BN_LAG, tmp_path / "lag", detailed=True)
    assert r.ok, r.error
    running, recomputed, on = bn_series(r)
    share = bn_share(r)
    print(f"BN lag: val accuracy {np.round(running, 3)}; recomputed {np.round(recomputed, 3)}; share {share:.2f}")
    assert on == "val"
    assert np.std(np.diff(running)) > 3 * np.std(np.diff(recomputed))
    assert share > 0.8 and np.min(recomputed[2:]) > np.median(running)


def test_broken_replicas_come_back_as_per_replica_errors(tmp_path):
    boom = tmp_path / "boom.py"
    boom.write_text("print('starting')\nraise RuntimeError('user bug')\n")
    r = replica(boom, tmp_path / "boom")
    assert r.error == "boom.py raised RuntimeError at boom.py:2: user bug" and r.reason == r.error
    assert "starting" in Path(r.log).read_text()

    r = replica(SEED_EXAMPLES / "ex1_lr_decay.py", tmp_path / "unknown", {"lr.shfit": "3"})
    assert "unknown intervention 'lr.shfit'" in r.error and not (tmp_path / "unknown").exists()  # nothing ran
    r = replica(SEED_EXAMPLES / "ex1_lr_decay.py", tmp_path / "skip", {"skip": "3"})
    assert "skip=3 is not possible in a black-box Keras script" in r.error

    r = replica(SEED_EXAMPLES / "ex1_lr_decay.py", tmp_path / "adam", {"momentum": "off"}, seed=0)
    assert r.error == ("momentum=off: optimizer Adam has no momentum hyper-parameter (its first-moment decay is "
                       "beta_1, not a momentum)")
    assert r.run_dir is None and len(r.epochs) == 0

    sleepy = tmp_path / "sleepy.py"
    sleepy.write_text("import time\ntime.sleep(120)\n")
    started = time.monotonic()
    r = replica(sleepy, tmp_path / "sleepy", timeout=2)
    assert r.error.startswith("timed out after 2 s (the child was killed)") and time.monotonic() - started < 30

    nan = tmp_path / "nan.py"
    nan.write_text(
        "import numpy as np\nfrom tensorflow import keras\nkeras.utils.set_random_seed(0)\n"
        "x, y = np.random.rand(64, 4).astype('float32') * 100, np.random.rand(64, 1).astype('float32')\n"
        "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])\n"
        "model.compile(keras.optimizers.SGD(learning_rate=1.0), 'mse')  # far above 2 / curvature: it blows up\n"
        "model.fit(x, y, epochs=3, batch_size=16, verbose=0)\n")
    r = replica(nan, tmp_path / "nan")
    print(r.step_loss, r.reason)
    assert r.ok and r.diverged and "the training loss became" in r.reason
    assert not np.isfinite(r.step_loss[-1]) and np.isfinite(r.step_loss[:-1]).all()
    assert np.isnan(r.train_loss[-1])

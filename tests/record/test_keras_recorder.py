"""The Keras 3 recorder on real tiny trainings (torch backend), every recorded value checked against an independent
computation: the schedule's formula, losses recomputed by hand before each step, autograd gradient norms, weights
reloaded from the checkpoints."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
if keras.backend.backend() != "torch":  # pragma: no cover - only when something imported keras on another backend
    pytest.skip(f"these tests run Keras on the torch backend; this process has {keras.backend.backend()}",
                allow_module_level=True)

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import whyspike  # noqa: E402
from whyspike.diagnosis import diagnose  # noqa: E402
from whyspike.errors import InputError, UsageError  # noqa: E402
from whyspike.record.keras import WhyspikeCallback, load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def table(run_dir: Path, kind: str) -> dict[str, np.ndarray]:
    parts = sorted((run_dir / kind).glob("part-*.parquet"))
    t = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    return {c: t.column(c).to_numpy(zero_copy_only=False).astype(float) for c in t.column_names}


def example1_model(decay_steps=10):
    """The seed's Example 1: 10 -> 128 -> 10 MLP, Adam on ExponentialDecay(0.01, decay_steps, 0.5, staircase)."""
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=decay_steps, decay_rate=0.5,
                                                           staircase=True)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def random_labels(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 10)).astype("float32"), keras.utils.to_categorical(rng.integers(0, 10, n), 10)


def quiet(path, **kwargs) -> WhyspikeCallback:
    kwargs.setdefault("verdict", False)
    return WhyspikeCallback(path, out=io.StringIO(), **kwargs)


def test_step_lr_is_the_schedule_at_the_step_and_epoch_lr_the_next_steps(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = random_labels()
    model = example1_model()
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[quiet(tmp_path / "run")])
    steps = table(tmp_path / "run", "steps")
    np.testing.assert_array_equal(steps["step"], np.arange(96))  # 32 steps per epoch, none lost or repeated
    np.testing.assert_allclose(steps["lr"], 0.01 * 0.5 ** np.floor(steps["step"] / 10), rtol=1e-6)
    np.testing.assert_array_equal(steps["epoch"], np.repeat([0, 1, 2], 32))
    epochs = table(tmp_path / "run", "epochs")
    # at epoch end: the LR the next step uses, as Keras' TensorBoard callback logs it
    np.testing.assert_allclose(epochs["lr"], 0.01 * 0.5 ** np.floor(32 * (epochs["epoch"] + 1) / 10), rtol=1e-6)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["lr_schedule"]["class_name"] == "ExponentialDecay"
    assert meta["lr_schedule"]["config"]["decay_steps"] == 10 and meta["lr_schedule"]["config"]["decay_rate"] == 0.5
    assert meta["steps_per_epoch"] == 32 and meta["epochs"] == 3 and meta["batch_size"] == 32
    assert meta["samples_per_epoch"] == 1000 and meta["optimizer"] == "Adam" and meta["learning_rate"] == 0.01
    assert meta["has_batchnorm"] is False and meta["model"]["n_params"] == 10 * 128 + 128 + 128 * 10 + 10
    assert meta["framework"]["backend"] == "torch" and meta["framework"]["keras"] == keras.__version__
    np.testing.assert_allclose(steps["beta_1"], 0.9)
    np.testing.assert_allclose(steps["beta_2"], 0.999)


class BatchLossByHand(keras.callbacks.Callback):
    """Before each step: the loss and accuracy of the coming batch with the current weights, computed by hand."""

    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.bs = x, y, batch_size
        self.loss, self.acc, self.grad_norm = [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        xb = self.x[batch * self.bs:(batch + 1) * self.bs]
        yb = self.y[batch * self.bs:(batch + 1) * self.bs]
        weights = [v.value for v in self.model.trainable_variables]
        pred = self.model(xb, training=True)
        p = torch.clamp(pred, 1e-7, 1 - 1e-7)
        loss = -(torch.as_tensor(yb) * torch.log(p)).sum(dim=1).mean()
        grads = torch.autograd.grad(loss, weights)
        self.grad_norm.append(float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))))
        self.loss.append(float(loss.detach()))
        self.acc.append(float((pred.argmax(1).numpy() == yb.argmax(1)).mean()))


def test_true_per_batch_loss_accuracy_and_grad_norm_match_a_recomputation_before_each_step(tmp_path):
    keras.utils.set_random_seed(1)
    x, y = random_labels(n=100, seed=1)  # 100 = 3 x 32 + 4: the last batch is smaller
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.5, momentum=0.9), "categorical_crossentropy", metrics=["accuracy"])
    by_hand = BatchLossByHand(x, y, 32)
    history = model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0,
                        callbacks=[by_hand, quiet(tmp_path / "run", tier="detailed")])
    steps = table(tmp_path / "run", "steps")
    np.testing.assert_array_equal(steps["samples"], [32, 32, 32, 4] * 2)
    np.testing.assert_allclose(steps["loss"], by_hand.loss, rtol=2e-5)
    np.testing.assert_allclose(steps["accuracy"], by_hand.acc, atol=1e-6)
    np.testing.assert_allclose(steps["grad_norm"], by_hand.grad_norm, rtol=1e-4)  # detailed tier, torch backend
    np.testing.assert_allclose(steps["momentum"], 0.9)
    for e in (0, 1):  # the batch values' size-weighted mean is Keras' own epoch figure
        w = steps["samples"][steps["epoch"] == e]
        assert np.sum(steps["loss"][steps["epoch"] == e] * w) / w.sum() == pytest.approx(history.history["loss"][e],
                                                                                          rel=1e-6)
        assert np.sum(steps["accuracy"][steps["epoch"] == e] * w) / w.sum() == pytest.approx(
            history.history["accuracy"][e], abs=1e-6)


def test_validation_in_fit_does_not_leak_into_the_last_batch_and_sets_eval_size(tmp_path):
    keras.utils.set_random_seed(2)
    x, y = random_labels(n=120, seed=2)
    model = example1_model()
    history = model.fit(x[:100], y[:100], epochs=2, batch_size=32, validation_data=(x[100:], y[100:]), verbose=0,
                        callbacks=[quiet(tmp_path / "run")])
    steps, epochs = table(tmp_path / "run", "steps"), table(tmp_path / "run", "epochs")
    for e in (0, 1):
        w = steps["samples"][steps["epoch"] == e]
        assert np.sum(steps["loss"][steps["epoch"] == e] * w) / w.sum() == pytest.approx(history.history["loss"][e],
                                                                                          rel=1e-6)
    np.testing.assert_allclose(epochs["val_accuracy"], history.history["val_accuracy"])
    np.testing.assert_allclose(epochs["loss"], history.history["loss"])
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["eval_size"] == 20 and meta["samples_per_epoch"] == 100


def test_every_n_steps(tmp_path):
    x, y = random_labels(n=320)
    model = example1_model()
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[quiet(tmp_path / "run", every=5)])
    steps = table(tmp_path / "run", "steps")
    np.testing.assert_array_equal(steps["step"], [0, 5, 10, 15])  # of steps 0..19
    np.testing.assert_allclose(steps["lr"], 0.01 * 0.5 ** np.floor(steps["step"] / 10), rtol=1e-6)
    assert np.all(steps["samples"] == 32)


def test_checkpoints_reload_weights_and_optimizer_and_reproduce_predictions(tmp_path):
    keras.utils.set_random_seed(3)
    x, y = random_labels(n=200, seed=3)
    model = example1_model()
    cb = quiet(tmp_path / "run", checkpoints=2)
    model.fit(x, y, epochs=12, batch_size=32, verbose=0, callbacks=[cb])
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    hold = cb.writer.hold_epochs  # the newest two, and the recent ones a late detection may still pin
    assert kept == [f"epoch-{e:04d}" for e in range(12) if e >= 10 or 11 - e < hold] and len(kept) < 12
    last = tmp_path / "run" / "checkpoints" / "epoch-0011"
    with np.load(last / "model.npz", allow_pickle=False) as z:  # plain arrays: nothing to unpickle
        assert len(z.files) == len(model.weights)
    fresh = example1_model()
    fresh.build((None, 10))
    manifest = load_checkpoint(last, fresh, fresh.optimizer)
    assert manifest["epoch"] == 11 and manifest["step"] == 12 * 7
    np.testing.assert_allclose(fresh.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    for a, b in zip(fresh.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a.value), keras.ops.convert_to_numpy(b.value))
    wrong = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)])
    with pytest.raises(InputError, match="built like the recorded one"):
        load_checkpoint(last, wrong)
    with pytest.raises(InputError, match="not a readable whyspike Keras checkpoint"):
        load_checkpoint(tmp_path, fresh)


def test_example1_run_directory_diagnoses_with_the_units_trap_and_the_fix(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    x, y = random_labels()
    model = example1_model()
    model.fit(x, y, epochs=22, batch_size=32, verbose=0, callbacks=[quiet(tmp_path / "run", checkpoints=0)])
    assert not (tmp_path / "run" / "checkpoints").exists()
    run = whyspike.load_run(tmp_path / "run")
    assert run.setup.steps_per_epoch == 32 and run.setup.lr_schedule["config"]["decay_steps"] == 10
    d = diagnose(run)
    found = {f.id: f for f in d.findings}
    units = found["schedule_units"].message
    assert "3.2 decays of x0.5 per epoch" in units and "decay_steps=10" in units
    assert "epoch 10, 20" in units and "no jump happened there" in units and "= 320" in units
    stop = found["lr_vanished"]
    stop_epoch = stop.at if run.series[stop.metric].axis == "epoch" else stop.at / 32
    assert stop_epoch <= 2  # training stalled within about two epochs
    assert not [s for s in d.spikes if s.axis == "epoch" and (abs(s.at - 10) <= 1 or abs(s.at - 20) <= 1)]
    from whyspike.cli import main

    assert main(["diagnose", str(tmp_path / "run"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source"]["format"] == "whyspike-run" and doc["setup"]["steps_per_epoch"] == 32


def test_example1_per_step_series_show_no_spurious_jumps(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = random_labels()
    model = example1_model()
    model.fit(x, y, epochs=30, batch_size=32, verbose=0, callbacks=[quiet(tmp_path / "run", checkpoints=0)])
    d = diagnose(whyspike.load_run(tmp_path / "run"))
    assert [(s.metric, s.at) for s in d.spikes] == []  # the model is frozen after epoch ~2: nothing can jump


def test_detailed_tier_exposes_batchnorm_lag_without_changing_the_training(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((600, 10)).astype("float32") + 20  # unnormalized inputs: BatchNorm's running means lag far
    y = keras.utils.to_categorical((x[:, 0] > 20.5).astype(int), 2)

    def train(tier):
        keras.utils.set_random_seed(7)
        model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                                  keras.layers.ReLU(), keras.layers.Dropout(0.1),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "categorical_crossentropy", metrics=["accuracy"])
        cbs = [quiet(tmp_path / tier, tier=tier, train_data=(x[:500], y[:500]),
                     validation_data=(x[500:], y[500:]), batch_size=50)] if tier else []
        model.fit(x[:500], y[:500], batch_size=50, epochs=4, validation_data=(x[500:], y[500:]), verbose=0,
                  callbacks=cbs)
        return model

    detailed, plain, unrecorded = train("detailed"), train("default"), train(None)
    # recording changes nothing: BN statistics, dropout seeds and the shuffling RNG were all put back
    for a, b, c in zip(detailed.weights, plain.weights, unrecorded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a.value), keras.ops.convert_to_numpy(c.value))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(b.value), keras.ops.convert_to_numpy(c.value))
    ep = table(tmp_path / "detailed", "epochs")
    assert ep["val_accuracy"][-1] < 0.6 and ep["train_eval_accuracy"][-1] < 0.6  # eval mode: stale statistics
    assert ep["val_precise_bn_accuracy"][-1] > 0.85  # the same weights with recomputed statistics
    assert "val_precise_bn_accuracy" not in table(tmp_path / "default", "epochs")
    correct = np.load(tmp_path / "detailed" / "examples" / "val-e0003.npy", allow_pickle=False)
    assert correct.dtype == bool and correct.shape == (100,)
    assert correct.mean() == pytest.approx(ep["val_accuracy"][-1], abs=1e-6)
    with np.load(tmp_path / "detailed" / "checkpoints" / "epoch-0003" / "model.npz") as z:
        trainable = {id(v) for v in detailed.trainable_weights}
        sq = sum(float((z[f"v{i:05d}"].astype(float) ** 2).sum()) for i, v in enumerate(detailed.weights)
                 if id(v) in trainable)
    assert ep["weight_norm"][-1] == pytest.approx(np.sqrt(sq), rel=1e-5)
    per_layer = sorted(k for k in ep if k.startswith("weight_norm/"))
    assert per_layer == sorted(f"weight_norm/{layer.name}" for layer in detailed.layers if layer.trainable_weights)
    d = diagnose(whyspike.load_run(tmp_path / "detailed"))
    assert d.run.setup.has_batchnorm is True and d.run.setup.eval_size == 100


def test_detailed_tier_on_a_model_without_batchnorm_says_so_once(tmp_path, capsys):
    x, y = random_labels(n=64)
    model = example1_model()
    cb = quiet(tmp_path / "run", tier="detailed", train_data=(x, y), validation_data=(x[:32], y[:32]), batch_size=32)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[cb])
    err = capsys.readouterr().err
    assert err.count("no BatchNormalization layer") == 1
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert any("PreciseBN skipped" in n for n in meta["notes"])
    assert "train_eval_accuracy" in table(tmp_path / "run", "epochs")


def test_nan_losses_are_recorded_and_break_nothing(tmp_path, capsys):
    x, y = random_labels(n=128)
    x[70] = np.nan  # batch 2 of every epoch: its loss and every later weight become NaN
    model = example1_model()
    history = model.fit(x, y, epochs=9, batch_size=32, verbose=0,
                        callbacks=[WhyspikeCallback(tmp_path / "run", out=io.StringIO())])
    assert len(history.history["loss"]) == 9
    steps = table(tmp_path / "run", "steps")
    assert np.isfinite(steps["loss"][:2]).all() and np.isnan(steps["loss"][2:]).all()
    assert "recording error" not in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "epoch-0008" / "model.npz").exists()
    d = diagnose(whyspike.load_run(tmp_path / "run"))
    assert any(f.id == "nan_or_inf" for f in d.findings)


def test_unwritable_run_dir_leaves_training_alone(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    x, y = random_labels(n=64)
    model = example1_model()
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0,
                        callbacks=[WhyspikeCallback(blocker / "run", out=io.StringIO())])
    assert len(history.history["loss"]) == 2
    err = capsys.readouterr().err
    assert err.count("recording stopped") == 1 and "training continues" in err and "Traceback" not in err


def test_an_error_inside_the_recorder_never_reaches_training(tmp_path, capsys, monkeypatch):
    from whyspike.record import keras as recorder

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(recorder._Recorder, "_schedule_at", broken)
    x, y = random_labels(n=64)
    model = example1_model()
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[quiet(tmp_path / "run")])
    assert len(history.history["loss"]) == 3
    err = capsys.readouterr().err
    assert err.count("recording error in steps (RuntimeError: disk on fire)") == 1
    assert len(table(tmp_path / "run", "epochs")["loss"]) == 3  # the epoch rows go on


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="unknown tier"):
        WhyspikeCallback(tier="everything")
    with pytest.raises(UsageError, match="integer N >= 1"):
        WhyspikeCallback(every=0)
    with pytest.raises(UsageError, match="0 turns checkpoints off"):
        WhyspikeCallback(checkpoints=-1)


def test_live_line_and_verdict(tmp_path):
    """The jumps that follow an LR cut (x0.02 at epoch 12) are announced once each at epoch end, with the cause;
    the verdict follows when training ends."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 10)).astype("float32")
    y = keras.utils.to_categorical((x @ rng.normal(size=(10, 4))).argmax(1), 4)
    y[:100] = keras.utils.to_categorical(rng.integers(0, 4, 100), 4)  # label noise keeps the high LR noisy
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.5, momentum=0.9), "categorical_crossentropy", metrics=["accuracy"])
    cut = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.5 if epoch < 12 else 0.01)
    out = io.StringIO()
    model.fit(x, y, epochs=20, batch_size=64, verbose=0, validation_data=(x[:128], y[:128]),
              callbacks=[cut, WhyspikeCallback(tmp_path / "run", out=out, live_budget=1.0)])
    text = out.getvalue()
    live = [line for line in text.splitlines() if " noise) — likely " in line]
    assert live and all("likely lr_schedule" in line and " at epoch 1" in line for line in live)
    assert len(live) == len(set(live))  # each jump announced once
    assert text.index(live[-1]) < text.index("run recorded in")  # the verdict comes at the end
    epochs = table(tmp_path / "run", "epochs")
    np.testing.assert_allclose(epochs["lr"], [0.5] * 12 + [0.01] * 8, rtol=1e-6)  # the scheduler acts at epoch begin
    steps = table(tmp_path / "run", "steps")
    assert np.allclose(steps["lr"][steps["epoch"] == 12], 0.01) and np.allclose(steps["lr"][steps["epoch"] == 11], 0.5)


def test_importing_the_recorder_imports_no_framework():
    code = ("import sys, whyspike.record.keras as k, whyspike.record.inject; "
            "assert 'keras' not in sys.modules and 'torch' not in sys.modules; print(k.TIERS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


JAX_SCRIPT = r"""
import json, os, sys
import numpy as np
import keras
from whyspike.record.keras import WhyspikeCallback
import pyarrow.parquet as pq
assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.random((100, 10)).astype("float32"); y = keras.utils.to_categorical(rng.integers(0, 10, 100), 10)
m = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation="relu"),
                      keras.layers.Dense(10, activation="softmax")])
m.compile(keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5, staircase=True)),
          "categorical_crossentropy", metrics=["accuracy"])
h = m.fit(x, y, epochs=3, batch_size=32, verbose=0, validation_data=(x[:20], y[:20]),
          callbacks=[WhyspikeCallback(sys.argv[1], verdict=False, live=False)])
t = pq.read_table(sys.argv[1] + "/steps").to_pandas()
print(json.dumps({"step": t["step"].tolist(), "lr": t["lr"].tolist(), "loss": t["loss"].tolist(),
                  "samples": t["samples"].tolist(), "epoch": t["epoch"].tolist(), "history": h.history}))
"""


@pytest.mark.skipif(__import__("importlib").util.find_spec("jax") is None,
                    reason="jax is not installed (pip install jax): the jax backend test needs it")
def test_jax_backend_records_the_same_signals(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "run")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    step = np.array(got["step"])
    np.testing.assert_array_equal(step, np.arange(12))
    np.testing.assert_allclose(got["lr"], 0.01 * 0.5 ** np.floor(step / 10), rtol=1e-6)
    assert got["samples"] == [32, 32, 32, 4] * 3
    loss, w, ep = np.array(got["loss"]), np.array(got["samples"]), np.array(got["epoch"])
    for e in range(3):
        assert np.sum(loss[ep == e] * w[ep == e]) / 100 == pytest.approx(got["history"]["loss"][e], rel=1e-6)


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorflow") is None,
                    reason="tensorflow is not installed: the tensorflow backend test needs it")
def test_tensorflow_backend_records_the_schedule(tmp_path):  # pragma: no cover - not installed on CI
    script = JAX_SCRIPT.replace('"jax"', '"tensorflow"')
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(got["lr"], 0.01 * 0.5 ** np.floor(np.array(got["step"]) / 10), rtol=1e-6)

"""Keras 3 models on the torch backend: Hessian-vector products against a hand-written torch function of the same
weights, BatchNorm/dropout state left alone, and a recorded Keras run read from model.json + probe_data."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
if keras.backend.backend() != "torch":  # pragma: no cover
    pytest.skip("these tests run Keras on the torch backend", allow_module_level=True)

from whyspike.cli import main  # noqa: E402
from whyspike.landscape import ModelLoss, top_eigenvalues  # noqa: E402
from whyspike.record.keras import WhyspikeCallback  # noqa: E402


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")


def test_keras_hvp_matches_the_exact_hessian():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(3)])
    x, y = data()
    xt, yt = torch.tensor(x), torch.tensor(y)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # called as loss(y_true, y_pred)
    ml = ModelLoss(model, loss, [(x[:40], y[:40]), (x[40:], y[40:])])
    assert ml.framework == "keras" and ml.n == 4 * 6 + 6 + 6 * 3 + 3

    def f(theta):  # the same network written by hand: kernels are (in, out) in Keras
        k1, b1, k2, b2 = (c.view(s) for c, s in zip(torch.split(theta, ml.sizes), ml.shapes))
        return F.cross_entropy(torch.tanh(xt @ k1 + b1) @ k2 + b2, yt)

    F = torch.nn.functional
    h = torch.autograd.functional.hessian(f, ml.get_flat()).double()
    v = torch.randn(ml.n, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ml.hvp(v).double(), h @ v.double(), atol=1e-5, rtol=1e-4)
    top = top_eigenvalues(ml).eigenvalues[0]
    assert abs(top - float(torch.linalg.eigvalsh(h)[-1])) / top <= 1e-3


def test_keras_batchnorm_and_dropout_are_left_as_they_were():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                              keras.layers.Activation("tanh"), keras.layers.Dropout(0.5), keras.layers.Dense(3)])
    x, y = data()
    ml = ModelLoss(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), [(x, y)])
    assert ml.has_batchnorm
    before = [w.numpy().copy() for w in model.weights]
    v = torch.randn(ml.n, generator=torch.Generator().manual_seed(1))
    with ml.hessian() as op:
        a, b = op(v), op(v)
    assert torch.equal(a, b)  # dropout off: the same matrix at every product
    ml.hvp(v)
    for w, old in zip(model.weights, before):
        assert np.array_equal(w.numpy(), old), w.path
    assert model.layers[3].rate == 0.5
    # train-mode statistics: the product differs from the one with the running (here: initial) statistics
    xt = torch.tensor(x)
    out_train = model(xt, training=True)
    out_eval = model(xt, training=False)
    assert not torch.allclose(out_train, out_eval, atol=1e-3)


@pytest.fixture
def keras_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WHYSPIKE_CHECKPOINT_BUDGET", "1")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    x, y = data(96)
    run = tmp_path / "run"
    model.fit(x, y, epochs=4, batch_size=32, shuffle=False, verbose=0,
              callbacks=[WhyspikeCallback(run, checkpoints=5, out=io.StringIO(), verdict=False)])
    return run, model, x, y


def test_recorded_keras_run_from_model_json_and_probe_data(keras_run, capsys):
    run, model, x, y = keras_run
    stored = (run / "model.json").read_text()  # the recorder stores the architecture
    assert json.loads(stored)["class_name"] == "Sequential"
    (run / "model.json").unlink()
    rc = main(["landscape", str(run), "--spike", "last"])
    assert rc == 1 and "model.json" in capsys.readouterr().err
    (run / "model.json").write_text(stored)
    rc = main(["landscape", str(run), "--spike", "last"])  # fit's data was not given to the callback: no sample
    assert rc == 1 and "probe_data/x.npy" in capsys.readouterr().err
    (run / "probe_data").mkdir()
    np.save(run / "probe_data" / "x.npy", x)
    np.save(run / "probe_data" / "y.npy", y)
    rc = main(["landscape", str(run), "--spike", "last", "--what", "hessian,interp,gns", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["framework"] == "keras"
    p = doc["curvature"][-1]
    assert p["compared"] == "preconditioned_lambda_max" and p["preconditioned_lambda_max"] > 0
    assert p["threshold"] == pytest.approx(38 / 0.01, rel=1e-6) and p["lr"] == pytest.approx(0.01)
    # the rebuilt model's loss at the last checkpoint is the recorded model's own loss there
    want = float(keras.losses.SparseCategoricalCrossentropy()(y, model(x)).detach())
    assert doc["interpolation"]["train_loss"][doc["interpolation"]["alphas"].index(1.0)] == pytest.approx(want, rel=1e-4)
    assert doc["noise_scale"]["batches"] == 3


def test_keras_checkpoint_of_another_architecture(keras_run, capsys, tmp_path):
    run = keras_run[0]
    f = tmp_path / "wide.py"
    f.write_text("import keras, numpy as np\n"
                 "def make():\n"
                 "    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(24, activation='tanh'),\n"
                 "                          keras.layers.Dense(3, activation='softmax')])\n"
                 "    x = np.zeros((8, 4), 'float32'); y = np.zeros(8, 'int64')\n"
                 "    return m, keras.losses.SparseCategoricalCrossentropy(), [(x, y)]\n")
    rc = main(["landscape", str(run), "--factory", f"{f}:make", "--spike", "last"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "checkpoints/epoch-000" in err and "/kernel' has shape (4, 16)" in err and "(4, 24)" in err


def test_the_recorder_stores_what_the_landscape_needs(tmp_path, monkeypatch, capsys):
    """With fit's arrays (``whyspike run`` passes them; so can a user), a recorded Keras run is measured with no
    factory: the architecture from model.json, the data from the stored sample."""
    monkeypatch.setenv("WHYSPIKE_CHECKPOINT_BUDGET", "1")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    x, y = data(96)
    run = tmp_path / "run"
    model.fit(x, y, epochs=3, batch_size=32, verbose=0,
              callbacks=[WhyspikeCallback(run, checkpoints=5, out=io.StringIO(), verdict=False, train_data=(x, y))])
    assert np.array_equal(np.load(run / "probe_data" / "x.npy"), x)
    assert np.array_equal(np.load(run / "probe_data" / "y.npy"), y)
    assert main(["landscape", str(run), "--spike", "last", "--what", "hessian", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["framework"] == "keras" and doc["curvature"][-1]["threshold"] == pytest.approx(2 / 0.1)


def test_diagnose_measures_the_curvature_of_a_recorded_keras_run_itself(tmp_path, monkeypatch, capsys):
    """A run directory with checkpoints, model.json and a data sample: `whyspike diagnose` measures the sharpness
    at the checkpoints around the main jump and cites it (--no-landscape skips it)."""
    monkeypatch.setenv("WHYSPIKE_CHECKPOINT_BUDGET", "1")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 4)).astype("float32")
    y = np.argmax(x @ rng.standard_normal((4, 3)) + 0.8 * rng.standard_normal((512, 3)), 1)  # noisy labels
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(32, activation="tanh"),
                              keras.layers.Dense(3, activation="softmax")])

    def lr(epoch, old):  # a step decay at epoch 12: a jump the diagnosis finds
        return 0.5 if epoch < 12 else 0.05

    model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    run = tmp_path / "run"
    model.fit(x, y, epochs=20, batch_size=32, verbose=0, validation_split=0.25,
              callbacks=[keras.callbacks.LearningRateScheduler(lr),
                         WhyspikeCallback(run, checkpoints=30, out=io.StringIO(), verdict=False, train_data=(x, y))])
    assert main(["diagnose", str(run), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["spikes"], "the step decay gives a jump"
    evidence = [e for s in doc["spikes"][:1] for c in s["causes"] for e in c["evidence"]]
    assert any(e.startswith("landscape: ") for e in evidence)
    assert main(["diagnose", str(run), "--format", "json", "--no-landscape"]) == 0
    evidence = [e for s in json.loads(capsys.readouterr().out)["spikes"][:1] for c in s["causes"] for e in c["evidence"]]
    assert not any(e.startswith("landscape: ") for e in evidence)

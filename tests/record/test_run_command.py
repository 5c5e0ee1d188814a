"""`whyspike run SCRIPT.py` end to end, in a subprocess as a user runs it: the seed article's three examples unchanged
(Keras 3, torch backend, `from tensorflow import keras` through the stand-in), and scripts that raise, exit, never
train, train two models, produce NaN, or are given an unwritable output directory."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from whyspike.cli import main

SEED_EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "seed" / "examples"
HAS_KERAS = importlib.util.find_spec("keras") is not None and importlib.util.find_spec("torch") is not None
needs_keras = pytest.mark.skipif(not HAS_KERAS, reason="keras and torch are needed (pip install 'whyspike[keras,torch]')")


def whyspike_run(tmp_path: Path, *args: str, env: dict | None = None, timeout: int = 300):
    environ = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "WHYSPIKE_MAX_EPOCHS")}
    environ.update(env or {})
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "whyspike", "run", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=timeout)
    done.seconds = time.monotonic() - started
    done.flat = " ".join(done.stdout.split())  # the verdict is wrapped at the terminal width
    return done


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []


def diagnose_json(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "whyspike", "diagnose", str(path), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def write(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(code)
    return path


@needs_keras
def test_example1_states_the_units_trap_the_stall_and_the_fix(tmp_path):
    script = SEED_EXAMPLES / "ex1_lr_decay.py"
    done = whyspike_run(tmp_path, "--threads", "1", "--out", "runs", str(script),
                        env={"WHYSPIKE_MAX_EPOCHS": "30"})
    assert done.returncode == 0, done.stderr
    text = done.flat
    assert "3.2 decays of x0.5 per epoch" in text  # the per-step decay
    assert re.search(r"to \d(\.\d+)?e-31 by", text)  # the LR at the end, ~1e-31
    assert "Training effectively stopped after" in text
    assert "decay at epoch 10, 20 — and no jump happened there" in text
    assert "decay_steps=10 steps" in text and "decay_steps = 10 x steps_per_epoch = 320" in text  # the fix
    assert "Traceback" not in done.stderr
    [run] = run_dirs(tmp_path / "runs")
    assert f"run recorded in runs/{run.name}" in text
    meta = json.loads((run / "meta.json").read_text())
    assert meta["lr_schedule"]["config"]["decay_steps"] == 10  # decay_steps=10 is the recorded config's
    assert meta["steps_per_epoch"] == 32 and meta["epochs"] == 30 and meta["framework"]["backend"] == "torch"
    doc = diagnose_json(run)
    stall = next(f for f in doc["findings"] if f["id"] == "lr_vanished")
    stall_epoch = stall["at"] if stall["metric"] == "lr" else stall["at"] / 32
    assert stall_epoch <= 2  # stalled after about two epochs
    assert not [s for s in doc["spikes"] if s["axis"] == "epoch" and min(abs(s["at"] - 10), abs(s["at"] - 20)) <= 1]
    print(f"example 1, 30 epochs: {done.seconds:.1f} s")


@needs_keras
@pytest.mark.parametrize("name", ["ex2_batchnorm.py", "ex3_sgd_momentum.py"])
def test_examples_2_and_3_say_whether_any_jump_stands_out_of_the_noise(tmp_path, name):
    done = whyspike_run(tmp_path, "--threads", "1", "--out", "runs", str(SEED_EXAMPLES / name))
    assert done.returncode == 0, done.stderr
    assert re.search(r"No significant jump in|\d+ significant jump\(s\) at", done.flat)
    assert re.search(r"x noise\)|No significant jump", done.flat)
    [run] = run_dirs(tmp_path / "runs")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["epochs"] == 30 and meta["has_batchnorm"] is (name == "ex2_batchnorm.py")
    print(f"{name}, 30 epochs: {done.seconds:.1f} s")


RAISES_IN_FIT = """
import numpy as np
from tensorflow import keras


class Boom(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("user bug at epoch 2")


model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
x, y = np.random.rand(64, 4), np.random.randint(0, 3, 64)
model.fit(x, y, epochs=10, batch_size=16, verbose=0, callbacks=[Boom()])
"""


@needs_keras
def test_a_script_that_raises_shows_its_own_traceback_and_keeps_the_recording(tmp_path):
    script = write(tmp_path, "raises.py", RAISES_IN_FIT)
    done = whyspike_run(tmp_path, "--threads", "1", "--out", "runs", "raises.py")
    assert done.returncode == 1
    err = done.stderr
    assert "raises.py raised RuntimeError" in err and "RuntimeError: user bug at epoch 2" in err
    assert f'File "{script}", line 9, in on_epoch_end' in err
    assert "runpy" not in err and "inject.py" not in err  # whyspike's plumbing is not the user's bug
    [run] = run_dirs(tmp_path / "runs")
    assert "run recorded in" in done.flat
    import pyarrow.parquet as pq

    epochs = pq.read_table(run / "epochs").column("epoch").to_pylist()
    steps = pq.read_table(run / "steps").column("step").to_pylist()
    assert sorted(epochs) == [0.0, 1.0] and sorted(steps) == list(range(12))  # epoch 2's steps are kept too


@needs_keras
def test_several_models_exit_code_arguments_and_the_epoch_cap(tmp_path):
    write(tmp_path, "two.py", """
import sys
import numpy as np
import tensorflow as tf
from tensorflow.keras.layers import Dense
import keras

print("argv", sys.argv[1:])
try:
    tf.data
except AttributeError as exc:
    print("stand-in:", exc)
x, y = np.random.rand(64, 4), np.random.randint(0, 3, 64)
for name in ("first", "second", "third"):
    model = keras.Sequential([keras.Input((4,)), Dense(3, activation="softmax")], name=name)
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    if name == "third":  # a script that records itself is not recorded twice
        from whyspike.record.keras import WhyspikeCallback
        model.fit(x, y, epochs=30, batch_size=16, verbose=0, callbacks=[WhyspikeCallback("own-run", live=False)])
    else:
        model.fit(x, y, epochs=30, batch_size=16, verbose=0)
sys.exit(3)
""")
    done = whyspike_run(tmp_path, "--threads", "1", "--out", "runs", "two.py", "a", "--b",
                        env={"WHYSPIKE_MAX_EPOCHS": "4"})
    assert done.returncode == 3, done.stderr
    assert "argv ['a', '--b']" in done.stdout
    assert "stand-in: tensorflow is not installed" in done.flat and "no tf.data" in done.flat
    assert "run 1 of 3 — first (keras)" in done.flat and "run 2 of 3 — second (keras)" in done.flat
    assert "run 3 of 3 — third (keras) whyspike: run recorded in own-run by the script's own WhyspikeCallback" \
        in done.flat
    assert done.flat.count("whyspike own-run [whyspike-run]") == 1  # its own verdict, printed once
    assert "WHYSPIKE_MAX_EPOCHS=4: fit(epochs=30) shortened to 4 epoch(s)" in done.stderr
    runs = run_dirs(tmp_path / "runs")
    assert len(runs) == 2 and (tmp_path / "own-run" / "meta.json").exists()
    for run in runs:
        assert json.loads((run / "meta.json").read_text())["epochs"] == 4
        assert f"run recorded in runs/{run.name}" in done.flat


@needs_keras
def test_nan_losses_end_to_end(tmp_path):
    write(tmp_path, "nan.py", """
import numpy as np
import keras
x, y = np.random.rand(64, 4), np.random.randint(0, 3, 64)
x[40] = np.nan
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=3, batch_size=16, verbose=0)
print("trained")
""")
    done = whyspike_run(tmp_path, "--threads", "1", "--out", "runs", "nan.py")
    assert done.returncode == 0, done.stderr
    assert "trained" in done.stdout and "nan_or_inf:" in done.flat
    assert "Traceback" not in done.stderr and "recording error" not in done.stderr


def test_a_script_that_never_trains_says_so(tmp_path):
    write(tmp_path, "plain.py", """
import sys
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([1, 2, 3])
plt.show()
print("hello from", sys.argv[0])
""")
    done = whyspike_run(tmp_path, "--out", "runs", "plain.py")
    assert done.returncode == 0, done.stderr
    assert "hello from plain.py" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == ("whyspike: no training was recorded: plain.py never called a "
                                                   "Keras Model.fit and stepped no PyTorch optimizer")
    assert run_dirs(tmp_path / "runs") == []


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_threads_option_and_a_torch_import_that_trains_nothing_leaves_no_run_dir(tmp_path):
    write(tmp_path, "threads.py", "import torch\nprint('threads', torch.get_num_threads())\n")
    done = whyspike_run(tmp_path, "--threads", "1", "--out", "runs", "threads.py")
    assert done.returncode == 0, done.stderr
    assert "threads 1" in done.stdout and "no training was recorded" in done.stderr
    assert run_dirs(tmp_path / "runs") == []


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_a_plain_pytorch_loop_is_recorded_through_the_global_hooks(tmp_path):
    from whyspike.record import torch as torch_recorder

    if not hasattr(torch_recorder, "install_global_hooks"):
        pytest.skip("whyspike.record.torch has no install_global_hooks")
    write(tmp_path, "loop.py", """
import torch
torch.manual_seed(0)
x, y = torch.randn(128, 4), torch.randint(0, 3, (128,))
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
model = torch.nn.Linear(4, 3)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(3):
    for xb, yb in data:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
""")
    done = whyspike_run(tmp_path, "--threads", "1", "--out", "runs", "loop.py")
    assert done.returncode == 0, done.stderr
    [run] = run_dirs(tmp_path / "runs")
    assert "run recorded in" in done.flat and any((run / "steps").glob("part-*.parquet"))


def test_unwritable_out_dir_is_one_clear_line_before_anything_runs(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    write(tmp_path, "marker.py", "open('ran', 'w').write('yes')\n")
    done = whyspike_run(tmp_path, "--out", "a-file/runs", "marker.py")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("whyspike: error: a-file/runs: cannot hold run directories")
    assert "--out" in lines[0] and not (tmp_path / "ran").exists()


def test_missing_script_and_bad_epoch_cap_are_clear_errors(tmp_path, capsys, monkeypatch):
    assert main(["run", str(tmp_path / "nope.py")]) == 1
    assert "nope.py: no such file" in capsys.readouterr().err
    write(tmp_path, "ok.py", "pass\n")
    monkeypatch.setenv("WHYSPIKE_MAX_EPOCHS", "many")
    assert main(["run", str(tmp_path / "ok.py")]) == 2
    assert "WHYSPIKE_MAX_EPOCHS='many' is not a positive whole number" in capsys.readouterr().err


def test_a_script_with_a_syntax_error_gets_python_s_own_message(tmp_path):
    write(tmp_path, "broken.py", "print('start')\ndef f(:\n    pass\n")
    done = whyspike_run(tmp_path, "--out", "runs", "broken.py")
    assert done.returncode == 1
    assert "SyntaxError" in done.stderr and "broken.py" in done.stderr and "line 2" in done.stderr
    assert "inject.py" not in done.stderr and "whyspike: no training was recorded" in done.stderr


@needs_keras
def test_an_intervention_the_script_cannot_take_is_one_line(tmp_path):
    """A probe's intervention that the script's training cannot take (momentum on Adam) is whyspike's error, not the
    script's: one line naming it, no traceback."""
    import textwrap

    script = write(tmp_path, "adam.py", textwrap.dedent("""
        import numpy as np, keras
        x = np.random.rand(64, 4).astype("float32"); y = np.random.randint(0, 3, 64)
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        m.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        m.fit(x, y, epochs=2, verbose=0)
        """))
    done = whyspike_run(tmp_path, str(script), "-q", env={"WHYSPIKE_INTERVENE": '{"momentum": "off"}'})
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("whyspike: error:")]
    assert len(errors) == 1 and "momentum=off" in errors[0] and "Adam" in errors[0]
    assert "Traceback" not in done.stderr

"""The run directory: crash-safe, readable while written, bounded, and never breaking the training loop."""

import errno
import json
import math
import os
import stat

import numpy as np
import pytest

import whyspike
from whyspike.diagnosis import diagnose
from whyspike.record import store
from whyspike.record.live import LiveExplainer
from whyspike.record.store import RunWriter


def _fill(w, epochs=40, spe=8, drop_at=25, seed=0):
    rng = np.random.default_rng(seed)
    for e in range(epochs):
        lr = 0.1 if e < drop_at else 0.01
        for s in range(spe):
            w.step(e * spe + s, loss=1.0 / (1 + e) + 0.01 * rng.standard_normal(), lr=lr)
        w.epoch(e, val_accuracy=0.6 + 0.004 * rng.standard_normal() + (0.1 if e >= drop_at else 0), lr=lr)


def test_round_trip_values_and_setup(tmp_path):
    w = RunWriter(tmp_path / "run", flush_rows=7)
    w.write_meta(optimizer="SGD", steps_per_epoch=8, batch_size=32, has_batchnorm=False,
                 lr_schedule={"class_name": "MultiStepLR", "milestones": [25]})
    _fill(w)
    w.close()
    run = whyspike.load_run(tmp_path / "run")
    assert run.source.format == "whyspike-run"
    loss = run.series["step/loss"]
    assert len(loss) == 320 and loss.axis == "step" and loss.x[-1] == 319
    assert run.series["val_accuracy"].axis == "epoch" and len(run.series["val_accuracy"]) == 40
    assert run.setup.optimizer == "SGD" and run.setup.steps_per_epoch == 8 and run.setup.has_batchnorm is False
    d = diagnose(run)
    top = [s for s in d.spikes if s.metric == "val_accuracy"][0]
    assert top.at == 25 and top.causes[0].id == "lr_schedule"


def test_a_half_written_part_never_breaks_reading(tmp_path):
    w = RunWriter(tmp_path / "run", flush_rows=10)
    _fill(w, epochs=12)
    w.flush()
    # what a kill -9 in the middle of a flush leaves behind: a temporary file, never a renamed partial part
    (tmp_path / "run" / "steps" / "part-99999.parquet.tmp").write_bytes(b"PAR1\x00\x00garbage")
    (tmp_path / "run" / "meta.json.tmp").write_text("{")
    run = whyspike.load_run(tmp_path / "run")
    assert len(run.series["step/loss"]) == 96


def test_rows_since_the_last_flush_are_all_that_a_crash_loses(tmp_path):
    w = RunWriter(tmp_path / "run", flush_rows=50, flush_seconds=1e9)
    w.write_meta(steps_per_epoch=10)
    for s in range(120):
        w.step(s, loss=1.0)
    # no close(): the writer is abandoned as a killed process would leave it
    run = whyspike.load_run(tmp_path / "run")
    assert len(run.series["step/loss"]) == 100


def test_compaction_bounds_the_number_of_files_and_keeps_every_row(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "COMPACT_AT", 8)
    w = RunWriter(tmp_path / "run", flush_rows=5)
    for s in range(200):
        w.step(s, loss=float(s))
    w.close()
    parts = list((tmp_path / "run" / "steps").glob("part-*.parquet"))
    assert len(parts) < 8
    run = whyspike.load_run(tmp_path / "run", format="whyspike-run")
    np.testing.assert_array_equal(run.series["step/loss"].y, np.arange(200.0))


def test_disk_full_stops_recording_without_raising(tmp_path, monkeypatch, capsys):
    w = RunWriter(tmp_path / "run", flush_rows=10)
    for s in range(30):
        w.step(s, loss=1.0)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", full)
    for s in range(30, 60):
        w.step(s, loss=1.0)  # must not raise
    w.epoch(0, val_accuracy=0.5)
    w.close()
    err = capsys.readouterr().err
    assert err.count("recording stopped") == 1 and "No space left" in err
    monkeypatch.undo()
    run = whyspike.load_run(tmp_path / "run", format="whyspike-run")
    assert len(run.series["step/loss"]) == 30  # what was flushed before stays readable


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_is_reported_once(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    w = RunWriter(ro / "run")
    w.step(0, loss=1.0)
    w.close()
    assert capsys.readouterr().err.count("recording stopped") == 1


def test_unwritable_path_is_reported_once(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    w = RunWriter(blocker / "run")  # a path below a file can never be created, even as root
    w.step(0, loss=1.0)
    w.epoch(0, val_accuracy=0.5)
    w.close()
    assert capsys.readouterr().err.count("recording stopped") == 1


def test_checkpoint_ring_buffer_keeps_last_k_and_pinned(tmp_path):
    w = RunWriter(tmp_path / "run", keep_checkpoints=2, hold_epochs=0, checkpoint_budget=1.0)
    for e in range(8):
        d = w.checkpoint_dir(e)
        (d / "weights.npz").write_bytes(b"x")
        if e == 3:
            w.pin(3)
        w.commit_checkpoint(e)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch-0002", "epoch-0003", "epoch-0006", "epoch-0007"]


def test_live_explainer_prints_one_line_per_new_jump(tmp_path):
    import io

    out = io.StringIO()
    w = RunWriter(tmp_path / "run")
    live = LiveExplainer(w, out=out, budget=1.0)  # no training time between epochs here: never skip
    rng = np.random.default_rng(1)
    for e in range(40):
        lr = 0.1 if e < 25 else 0.01
        w.epoch(e, val_accuracy=0.6 + 0.004 * rng.standard_normal() + (0.1 if e >= 25 else 0), lr=lr)
        live.epoch_end()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("whyspike:")]
    assert len(lines) == 1
    assert "val_accuracy up" in lines[0] and "epoch 25" in lines[0] and "lr_schedule" in lines[0]
    d = live.final()
    assert d is not None and d.spikes[0].at == 25
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["schema"] == "whyspike/run-v1"


def test_live_explainer_keeps_to_its_time_budget(tmp_path):
    import io
    import time

    w = RunWriter(tmp_path / "run")
    live = LiveExplainer(w, out=io.StringIO(), budget=0.05)
    rng = np.random.default_rng(2)
    ran = 0
    t0 = time.perf_counter()
    for e in range(60):
        w.epoch(e, val_accuracy=0.6 + 0.004 * rng.standard_normal())
        spent = live.budget.spent
        live.epoch_end()
        ran += live.budget.spent > spent
        time.sleep(0.001)  # a 1 ms "epoch" of training
    wall = time.perf_counter() - t0
    assert ran < 52  # most epochs were skipped: a diagnosis costs more than 1 ms
    # within budget, give or take the last diagnosis taking longer than the one before it
    assert live.budget.spent <= 0.05 * wall + live.budget.expected


def test_recent_checkpoints_are_held_until_a_late_detection_can_pin_them(tmp_path):
    w = RunWriter(tmp_path / "run", keep_checkpoints=2, hold_epochs=5, checkpoint_budget=1.0)
    for e in range(12):
        (w.checkpoint_dir(e) / "weights.npz").write_bytes(b"x")
        w.commit_checkpoint(e)
        if e == 9:
            w.pin(6)  # a jump at 6, confirmed at 9: its checkpoints are still there
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch-0005", "epoch-0006", "epoch-0007", "epoch-0008", "epoch-0009", "epoch-0010",
                     "epoch-0011"]


def test_checkpoints_keep_to_their_time_budget(tmp_path):
    import time

    t0 = time.perf_counter()
    w = RunWriter(tmp_path / "run", checkpoint_budget=0.05, keep_checkpoints=100, hold_epochs=0)
    saved = 0
    for e in range(40):
        time.sleep(0.002)  # a 2 ms "epoch"
        d = w.checkpoint_dir(e)
        if d is not None:
            (d / "weights.npz").write_bytes(b"x" * 100_000)
            w.commit_checkpoint(e)
            saved += 1
    assert 1 <= saved < 40  # only as often as 5% of the time allows, the first one included
    assert w.checkpoint_budget.spent <= 0.05 * (time.perf_counter() - t0) + w.checkpoint_budget.expected


def test_steps_appends_a_block_of_columns_mixed_with_single_rows(tmp_path):
    import pyarrow.parquet as pq

    w = RunWriter(tmp_path)
    w.step(0, loss=1.0, lr=0.1)
    w.steps({"step": np.array([1.0, 2.0, 3.0]), "loss": np.array([0.9, np.nan, 0.7]),
             "grad_norm": np.ma.masked_array([5.0, 0.0, 7.0], mask=[False, True, False]),
             "bad": np.array(["a", "b", "c"]), "short": np.array([1.0])})
    w.step(4, loss=0.6, accuracy=0.5)
    w.steps({"loss": np.array([1.0])})  # no step column: ignored, never raises
    w.close()
    table = pq.read_table(sorted((tmp_path / "steps").glob("part-*.parquet"))[-1]).to_pydict()
    assert table["step"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert table["lr"] == [0.1, None, None, None, None]  # missing from the block: null
    assert table["loss"][:2] == [1.0, 0.9] and math.isnan(table["loss"][2]) and table["loss"][3:] == [0.7, 0.6]
    assert table["grad_norm"] == [None, 5.0, None, 7.0, None]  # masked: null, not NaN
    assert table["accuracy"] == [None, None, None, None, 0.5]
    assert "bad" not in table and "short" not in table and all(t > 0 for t in table["wall_time"])
    run = whyspike.load_run(tmp_path)
    assert run.series["step/grad_norm"].x.tolist() == [1, 3]

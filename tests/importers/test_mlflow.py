"""The MLflow importer against stores written by real mlflow.

``tests/data/mlflow/`` holds a file store (``mlruns/``) and an SQLite store (``mlflow.db``) written by
:func:`write_fixture_runs` with real mlflow, so these tests run without it; where mlflow is installed the same runs
are written afresh and read back too. Regenerate the committed fixtures with ``python tests/importers/test_mlflow.py``.
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from whyspike.errors import EmptyLogError, InputError
from whyspike.importers import load_run
from whyspike.importers import mlflow as mlflow_importer

DATA = Path(__file__).resolve().parents[1] / "data" / "mlflow"

# what write_fixture_runs logs in the newer of its two runs
TRAIN_LOSS = [2.0 * 0.8**s for s in range(12)]  # per step 0..11
VAL_ACC = [0.5, 0.6, 0.9]  # with step=epoch 0..2, beside an `epoch` metric
VAL_LOSS = [0.9, float("nan"), float("inf")]
GRAD_NORM = [3.0, 2.0, 1.0]  # logged without a step
PARAMS = {"lr": 0.1, "batch_size": 32, "momentum": 0.9, "weight_decay": 0.0005, "optimizer": "SGD", "epochs": 3}


def write_fixture_runs(tracking_uri: str) -> None:
    """Two runs in one experiment: an older one with a single value, then the run the tests read."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("whyspike-fixture")
    with mlflow.start_run(run_name="older"):
        mlflow.log_param("lr", 0.5)
        mlflow.log_metric("train/loss", 9.0, step=0)
    time.sleep(0.05)  # distinct start times, in ms
    with mlflow.start_run(run_name="newer"):
        mlflow.log_params(PARAMS)
        for s, v in enumerate(TRAIN_LOSS):
            mlflow.log_metric("train/loss", v, step=s)
        for e, (acc, loss) in enumerate(zip(VAL_ACC, VAL_LOSS)):
            mlflow.log_metric("epoch", e, step=e)
            mlflow.log_metric("val_accuracy", acc, step=e)
            mlflow.log_metric("val_loss", loss, step=e)
        for v in GRAD_NORM:
            mlflow.log_metric("grad_norm", v)
    mlflow.set_tracking_uri(None)


def check_fixture_run(run) -> None:
    assert run.source.format == "mlflow"
    s = run.series["train/loss"]  # the slash is kept, not turned into a directory name
    assert s.axis == "step" and list(s.x) == list(range(12)) and list(s.y) == TRAIN_LOSS
    assert s.wall_time is not None and 1.5e9 < s.wall_time[0] < 3e9 and np.all(np.diff(s.wall_time) >= 0)
    acc = run.series["val_accuracy"]
    assert acc.axis == "epoch" and list(acc.x) == [0, 1, 2] and list(acc.y) == VAL_ACC
    loss = run.series["val_loss"]
    assert loss.axis == "epoch" and loss.y[0] == 0.9 and math.isnan(loss.y[1]) and loss.y[2] == math.inf
    g = run.series["grad_norm"]
    assert list(g.x) == [0, 1, 2] and list(g.y) == GRAD_NORM
    assert any("grad_norm" in w and "logging index" in w for w in run.warnings)
    # two runs: the newer is read, the warning names the other and how to pick it
    [multi] = [w for w in run.warnings if "MLflow runs found" in w]
    assert "'newer'" in multi and "'older'" in multi
    st = run.setup
    assert (st.learning_rate, st.batch_size, st.momentum, st.weight_decay, st.optimizer, st.epochs) == (
        0.1, 32, 0.9, 0.0005, "SGD", 3)
    assert st.config == {k: str(v) for k, v in PARAMS.items()}  # params as MLflow stores them: strings


def fixture_db(tmp_path: Path) -> Path:
    # a copy: the importer must not need to write, but a test should never risk the committed file
    dst = tmp_path / "mlflow.db"
    shutil.copy(DATA / "mlflow.db", dst)
    return dst


# ---------------------------------------------------------------------------------------------------- committed


def test_file_store_fixture_from_mlruns_root():
    check_fixture_run(load_run(DATA / "mlruns"))


def test_sqlite_fixture(tmp_path):
    db = fixture_db(tmp_path)
    before = db.read_bytes()
    check_fixture_run(load_run(db))
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_committed_sqlite_is_opened_read_only():
    before = (DATA / "mlflow.db").stat().st_mtime_ns
    load_run(DATA / "mlflow.db")
    assert (DATA / "mlflow.db").stat().st_mtime_ns == before
    assert not (DATA / "mlflow.db-journal").exists() and not (DATA / "mlflow.db-wal").exists()


def _newer_run_dir() -> Path:
    [run_dir] = [d for d in DATA.glob("mlruns/*/*") if (d / "meta.yaml").is_file()
                 and "run_name: newer" in (d / "meta.yaml").read_text()]
    return run_dir


def test_run_and_experiment_directories_select_runs():
    run_dir = _newer_run_dir()
    run = load_run(run_dir)
    assert list(run.series["train/loss"].y) == TRAIN_LOSS
    assert not any("MLflow runs found" in w for w in run.warnings)
    exp = load_run(run_dir.parent)  # the experiment directory: both runs, the newer read
    assert list(exp.series["train/loss"].y) == TRAIN_LOSS
    assert any("MLflow runs found" in w for w in exp.warnings)
    [older_dir] = [d for d in run_dir.parent.iterdir() if d.is_dir() and d != run_dir]
    older = load_run(older_dir)
    assert list(older.series["train/loss"].y) == [9.0] and older.setup.learning_rate == 0.5


def test_select_a_run_by_id_in_sqlite(tmp_path):
    db = fixture_db(tmp_path)
    con = sqlite3.connect(db)
    [older_id] = con.execute("SELECT run_uuid FROM runs WHERE name = 'older'").fetchone()
    con.close()
    run = mlflow_importer.load(db, run_id=older_id)
    assert list(run.series["train/loss"].y) == [9.0] and run.setup.learning_rate == 0.5
    with pytest.raises(InputError, match="no MLflow run 'nope'"):
        mlflow_importer.load(db, run_id="nope")


def test_sniffing_picks_mlflow_for_each_layout(tmp_path):
    from whyspike.importers._registry import sniff

    for p in (DATA / "mlruns", _newer_run_dir(), _newer_run_dir().parent, fixture_db(tmp_path)):
        assert sniff(p).format == "mlflow", p


def test_epoch_metric_on_global_steps_gives_epoch_boundaries(tmp_path):
    # Lightning-style: `epoch` logged at global steps, so steps are not epochs
    run_dir = tmp_path / "mlruns" / "1" / ("a" * 32)
    (run_dir / "metrics").mkdir(parents=True)
    (tmp_path / "mlruns" / "1" / "meta.yaml").write_text("experiment_id: '1'\nname: lit\n")
    (run_dir / "meta.yaml").write_text(f"run_id: {'a' * 32}\nstart_time: 1700000000000\nlifecycle_stage: active\n")
    (run_dir / "metrics" / "epoch").write_text("".join(f"1700000000{s:03d} {s // 50} {s}\n" for s in range(0, 200, 10)))
    (run_dir / "metrics" / "val_acc").write_text("".join(f"1700000000{s:03d} 0.{s // 50 + 5} {s}\n" for s in (49, 99, 149)))
    run = load_run(tmp_path / "mlruns")
    assert run.series["val_acc"].axis == "step" and list(run.series["val_acc"].x) == [49, 99, 149]
    assert [(e.kind, e.at, e.data["epoch"]) for e in run.events] == [
        ("epoch_boundary", 50, 1), ("epoch_boundary", 100, 2), ("epoch_boundary", 150, 3)]


# ---------------------------------------------------------------------------------------------------- bad input


def test_malformed_metric_lines_are_skipped_with_file_and_line(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(_newer_run_dir(), run_dir)
    f = run_dir / "metrics" / "train" / "loss"
    lines = f.read_text().splitlines()
    lines.insert(3, "not a metric line")
    lines.insert(6, "1700000000000 zero 5")
    f.write_text("\n".join(lines) + "\n")
    run = load_run(run_dir)
    assert list(run.series["train/loss"].y) == TRAIN_LOSS
    bad = [w for w in run.warnings if str(f) in w]
    assert len(bad) == 2 and "line 4" in bad[0] and "line 7" in bad[1]


def test_mlruns_without_runs_is_empty(tmp_path):
    root = tmp_path / "mlruns"
    (root / ".trash").mkdir(parents=True)
    (root / "0").mkdir()
    (root / "0" / "meta.yaml").write_text("experiment_id: '0'\nname: Default\nlifecycle_stage: active\n")
    with pytest.raises(EmptyLogError, match="holds no MLflow runs"):
        load_run(root)


def test_sqlite_without_mlflow_tables(tmp_path):
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE things (a INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="without MLflow's tables") as exc:
        load_run(db)
    assert "\n" not in str(exc.value)


def test_corrupt_sqlite_is_one_line_input_error(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(mlflow_importer.SQLITE_MAGIC + os.urandom(3000))
    with pytest.raises(InputError) as exc:
        load_run(db)
    assert "\n" not in str(exc.value) and str(db) in str(exc.value)
    cut = tmp_path / "cut" / "mlflow.db"
    cut.parent.mkdir()
    cut.write_bytes((DATA / "mlflow.db").read_bytes()[:20000])
    with pytest.raises(InputError) as exc:
        load_run(cut)
    assert "\n" not in str(exc.value)


def test_locked_sqlite_is_one_line_input_error(tmp_path, monkeypatch):
    db = fixture_db(tmp_path)
    monkeypatch.setattr(mlflow_importer, "SQLITE_TIMEOUT_S", 0.01)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(InputError, match="locked") as exc:
            load_run(db)
        assert "\n" not in str(exc.value)
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# ---------------------------------------------------------------------------------------------------- live mlflow


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # mlflow's own SQLAlchemy usage
def test_live_mlflow_file_store_and_sqlite(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")  # the SQL store needs it (not part of mlflow-skinny)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 keeps the file store in maintenance mode
    monkeypatch.chdir(tmp_path)
    write_fixture_runs((tmp_path / "mlruns").as_uri())
    check_fixture_run(load_run(tmp_path / "mlruns"))
    write_fixture_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_fixture_run(load_run(tmp_path / "mlflow.db"))


def _regenerate() -> None:  # pragma: no cover - run by hand
    """Rewrite tests/data/mlflow with the installed mlflow, then shrink the database (VACUUM, 512-byte pages)."""
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    os.chdir(DATA)
    write_fixture_runs((DATA / "mlruns").as_uri())
    write_fixture_runs(f"sqlite:///{DATA / 'mlflow.db'}")
    con = sqlite3.connect(DATA / "mlflow.db", isolation_level=None)
    con.execute("PRAGMA page_size = 512")
    con.execute("VACUUM")
    con.close()


if __name__ == "__main__":  # pragma: no cover
    _regenerate()

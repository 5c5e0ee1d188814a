"""The W&B importer against ``.wandb`` datastores written by real wandb in offline mode.

``tests/data/wandb/`` holds one offline run directory (only its ``run-<id>.wandb``) written by
:func:`write_fixture_run` with real wandb, so these tests run without it; where wandb is installed the same run is
written afresh and read back too. Regenerate the committed fixture with ``python tests/importers/test_wandb_offline.py``.
"""

from __future__ import annotations

import math
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

from whyspike.errors import CorruptLogError, EmptyLogError, InputError
from whyspike.importers import _protowire as pw
from whyspike.importers import load_run
from whyspike.importers._registry import sniff

DATA = Path(__file__).resolve().parents[1] / "data" / "wandb"

CONFIG = {"lr": 0.1, "batch_size": 32, "momentum": 0.9, "weight_decay": 0.0005, "optimizer": "sgd", "epochs": 3,
          "model": {"depth": 20}}
STEPS = 12
TRAIN_LOSS = [2.0 * 0.8**s for s in range(STEPS)]
VAL_ACC = [0.5, 0.6, 0.9]  # logged as {"val": {"acc": ...}} at the last step of each 4-step epoch


def fixture_row(step: int) -> dict:
    row = {"train/loss": TRAIN_LOSS[step], "epoch": step // 4, "lr": 0.1 if step < 8 else 0.01,
           "grad_norm": float("nan") if step == 5 else step + 0.5, "phase": "warmup" if step < 4 else "main"}
    if step % 4 == 3:
        row["val"] = {"acc": VAL_ACC[step // 4]}
    return row


def write_fixture_run(root: Path) -> Path:
    """Log the fixture run with real wandb, offline; returns its run directory."""
    import wandb

    run = wandb.init(mode="offline", dir=str(root), project="whyspike-fixture", config=CONFIG)
    for step in range(STEPS):
        wandb.log(fixture_row(step))
    run.finish()
    wandb.teardown()  # stop wandb's service process now rather than at interpreter exit
    [run_dir] = (root / "wandb").glob("offline-run-*")
    return run_dir


def check_fixture_run(run) -> None:
    assert run.source.format == "wandb"
    s = run.series["train/loss"]  # the slash is kept
    assert s.axis == "step" and list(s.x) == list(range(STEPS)) and list(s.y) == TRAIN_LOSS
    assert s.wall_time is not None and 1.5e9 < s.wall_time[0] < 3e9 and np.all(np.diff(s.wall_time) >= 0)
    acc = run.series["val.acc"]  # a logged dict, named as W&B shows it
    assert list(acc.x) == [3, 7, 11] and list(acc.y) == VAL_ACC
    assert acc.role.kind == "accuracy" and acc.role.split == "val"
    g = run.series["grad_norm"]
    assert math.isnan(g.y[5]) and g.y[6] == 6.5
    assert list(run.series["lr"].y) == [0.1] * 8 + [0.01] * 4
    assert "phase" not in run.series and not any(k.startswith("_") for k in run.series)
    assert [(e.kind, e.at, e.data["epoch"]) for e in run.events] == [("epoch_boundary", 4, 1), ("epoch_boundary", 8, 2)]
    assert run.setup.config == CONFIG
    st = run.setup
    assert (st.learning_rate, st.batch_size, st.momentum, st.weight_decay, st.optimizer, st.epochs) == (
        0.1, 32, 0.9, 0.0005, "sgd", 3)


def fixture_run_dir() -> Path:
    [run_dir] = DATA.glob("offline-run-*")
    return run_dir


def fixture_store() -> Path:
    [store] = fixture_run_dir().glob("run-*.wandb")
    return store


def chunk_data_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each chunk's data; the fixture fits in one 32 KiB block."""
    assert len(data) < 32768
    out, pos = [], 7
    while pos + 7 <= len(data):
        _, length, _ = struct.unpack_from("<IHB", data, pos)
        out.append((pos + 7, length))
        pos += 7 + length
    return out


# ---------------------------------------------------------------------------------------------------- committed


def test_committed_fixture_from_run_dir_file_and_wandb_folder():
    for p in (fixture_run_dir(), fixture_store(), DATA):
        run = load_run(p)
        check_fixture_run(run)
        assert not run.warnings, (p, run.warnings)


def test_sniffing(tmp_path):
    for p in (fixture_run_dir(), fixture_store(), DATA):
        assert sniff(p).format == "wandb", p
    renamed = tmp_path / "copy.bin"
    shutil.copy(fixture_store(), renamed)
    assert sniff(renamed).format == "wandb"  # from the ':W&B' header alone


def test_latest_of_several_runs_with_warning(tmp_path):
    wandb_dir = tmp_path / "wandb"
    older = wandb_dir / "offline-run-20200101_000000-old00001"
    shutil.copytree(fixture_run_dir(), wandb_dir / fixture_run_dir().name)
    older.mkdir(parents=True)
    (older / "run-old00001.wandb").write_bytes(fixture_store().read_bytes()[:7])  # header only: no rows
    run = load_run(tmp_path)  # a project directory holding wandb/
    check_fixture_run(run)
    [w] = run.warnings
    assert "2 W&B runs" in w and older.name in w and fixture_run_dir().name in w


def test_config_yaml_is_used_when_the_datastore_has_no_config(tmp_path):
    # The older W&B layout of files/config.yaml (each key, then `desc` and `value`); datastores written by
    # wandb >= 0.10 carry the config themselves, so only the format is synthetic here.
    run_dir = tmp_path / "offline-run-20240101_000000-abc12345"
    (run_dir / "files").mkdir(parents=True)
    data = fixture_store().read_bytes()
    # drop every record holding a config (Record.config = 5, Record.run = 17); the fixture's records are all FULL
    kept = bytearray(data[:7])
    for off, length in chunk_data_offsets(data):
        if not {num for num, _, _ in pw.fields(data[off : off + length])} & {5, 17}:
            kept += data[off - 7 : off + length]
    (run_dir / "run-abc12345.wandb").write_bytes(bytes(kept))
    (run_dir / "files" / "config.yaml").write_text(
        "wandb_version: 1\n\n_wandb:\n  desc: null\n  value:\n    cli_version: 0.15.0\n"
        "lr:\n  desc: null\n  value: 0.05\nbatch_size:\n  desc: null\n  value: 64\n"
        "optimizer:\n  desc: null\n  value: adam\nmodel:\n  desc: null\n  value:\n    depth: 20\n"
    )
    run = load_run(run_dir)
    assert run.setup.config == {"lr": 0.05, "batch_size": 64, "optimizer": "adam"}
    assert (run.setup.learning_rate, run.setup.batch_size, run.setup.optimizer) == (0.05, 64, "adam")
    assert list(run.series["train/loss"].y) == TRAIN_LOSS


# ---------------------------------------------------------------------------------------------------- bad input


def test_truncated_datastore_reads_the_valid_prefix(tmp_path):
    data = fixture_store().read_bytes()
    offsets = chunk_data_offsets(data)
    off, length = offsets[len(offsets) // 2]
    cut = tmp_path / "run-cut.wandb"
    cut.write_bytes(data[: off + length // 2])
    run = load_run(cut)
    n = len(run.series["train/loss"])
    assert 0 < n < STEPS and list(run.series["train/loss"].y) == TRAIN_LOSS[:n]
    [w] = run.warnings
    assert "ends inside a record" in w and f"read the {n} history row(s)" in w


def test_checksum_mismatch_stops_there(tmp_path):
    data = bytearray(fixture_store().read_bytes())
    offsets = chunk_data_offsets(bytes(data))
    off, length = offsets[len(offsets) // 2]
    data[off + length // 2] ^= 0xFF
    bad = tmp_path / "run-bad.wandb"
    bad.write_bytes(bytes(data))
    run = load_run(bad)
    n = len(run.series["train/loss"])
    assert 0 < n < STEPS and list(run.series["train/loss"].y) == TRAIN_LOSS[:n]
    [w] = run.warnings
    assert f"checksum mismatch in the record at byte {off - 7}" in w and "damaged" in w


def test_checksum_mismatch_before_any_row_is_corrupt(tmp_path):
    data = bytearray(fixture_store().read_bytes())
    off, length = chunk_data_offsets(bytes(data))[0]
    data[off + length // 2] ^= 0xFF
    bad = tmp_path / "run-bad.wandb"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="checksum mismatch") as exc:
        load_run(bad)
    assert "\n" not in str(exc.value)


def test_not_a_datastore(tmp_path):
    f = tmp_path / "run-x.wandb"
    f.write_bytes(b"this is not W&B data\n")
    with pytest.raises(InputError, match="not a W&B datastore"):
        load_run(f)
    f.write_bytes(b":W&B\x00\x00\x07")
    with pytest.raises(InputError, match="unknown header"):
        load_run(f)


def test_folders_without_runs_are_empty(tmp_path):
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "debug.log").write_text("")
    with pytest.raises(EmptyLogError, match="no W&B run"):
        load_run(tmp_path / "wandb", format="wandb")
    run_dir = tmp_path / "wandb" / "offline-run-20240101_000000-abc12345"
    run_dir.mkdir()
    with pytest.raises(EmptyLogError, match="without a .wandb datastore"):
        load_run(run_dir)


# ---------------------------------------------------------------------------------------------------- live wandb


def _offline_env(monkeypatch, root: Path) -> None:
    for k, v in {"WANDB_SILENT": "true", "WANDB_MODE": "offline", "WANDB_CONFIG_DIR": root / "config",
                 "WANDB_CACHE_DIR": root / "cache", "WANDB_DATA_DIR": root / "data",
                 "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}.items():
        monkeypatch.setenv(k, str(v))


def test_live_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    _offline_env(monkeypatch, tmp_path)
    run_dir = write_fixture_run(tmp_path)
    check_fixture_run(load_run(run_dir))


def test_live_wandb_run_spanning_many_blocks(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import wandb

    _offline_env(monkeypatch, tmp_path)
    # a 100 kB config record is split FIRST/MIDDLE/LAST across blocks; 2000 rows fill many more blocks
    run = wandb.init(mode="offline", dir=str(tmp_path), config={"blob": "x" * 100_000, "lr": 0.3})
    for s in range(2000):
        wandb.log({"loss": math.exp(-s / 500)})
    run.finish()
    wandb.teardown()
    [store] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    assert store.stat().st_size > 3 * 32768
    got = load_run(store)
    assert len(got.setup.config["blob"]) == 100_000 and got.setup.learning_rate == 0.3
    assert list(got.series["loss"].y) == [math.exp(-s / 500) for s in range(2000)] and not got.warnings


def test_typed_history_values_serialized_by_wandb_protobuf(tmp_path):
    # wandb may write a value in HistoryItem's typed fields (integer, number, ...) instead of value_json
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    import zlib

    records = []
    for step, (i, x) in enumerate([(-3, 0.25), (7, float("inf"))]):
        rec = pb.Record(num=step + 1)
        for name, setter in (("count", lambda it: setattr(it, "integer", i)),
                             ("x", lambda it: setattr(it, "number", x)),
                             ("flag", lambda it: setattr(it, "boolean", True)),
                             ("_step", lambda it: setattr(it, "value_json", str(step)))):
            item = rec.history.item.add()
            item.nested_key.append(name)
            setter(item)
        records.append(rec.SerializeToString())
    data = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
    for r in records:
        data += struct.pack("<IHB", zlib.crc32(b"\x01" + r), len(r), 1) + r
    f = tmp_path / "run-typed.wandb"
    f.write_bytes(data)
    run = load_run(f)
    assert list(run.series["count"].y) == [-3, 7] and list(run.series["x"].y) == [0.25, math.inf]
    assert list(run.series["x"].x) == [0, 1] and "flag" not in run.series


def _regenerate() -> None:  # pragma: no cover - run by hand
    import os

    for k, v in {"WANDB_SILENT": "true", "WANDB_MODE": "offline", "WANDB_DISABLE_GIT": "true",
                 "WANDB_DISABLE_CODE": "true"}.items():
        os.environ[k] = v
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = write_fixture_run(Path(tmp))
        shutil.rmtree(DATA, ignore_errors=True)
        (DATA / run_dir.name).mkdir(parents=True)
        for store in run_dir.glob("run-*.wandb"):
            shutil.copy(store, DATA / run_dir.name / store.name)


if __name__ == "__main__":  # pragma: no cover
    _regenerate()

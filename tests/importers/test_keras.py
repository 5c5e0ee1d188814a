"""Keras CSVLogger files and saved History JSON, written exactly as Keras writes them."""

import csv
import json

import numpy as np
import pandas as pd
import pytest

from whyspike.errors import CorruptLogError, EmptyLogError, InputError, UnknownFormatError
from whyspike.importers import load_run

HISTORY = {
    "accuracy": [0.41, 0.55, 0.62, 0.80, 0.83],
    "loss": [1.6, 1.2, 1.0, 0.6, 0.5],
    "val_accuracy": [0.45, 0.52, 0.60, 0.78, 0.79],
    "val_loss": [1.5, 1.3, 1.1, 0.7, 0.68],
    "learning_rate": [0.1, 0.1, 0.1, 0.01, 0.01],
}


def write_csvlogger(path, history, separator=",", missing=()):
    """What keras.callbacks.CSVLogger writes: epoch (0-based) then the keys sorted; "NA" for a missing key."""
    keys = sorted(history)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch"] + keys, delimiter=separator)
        writer.writeheader()
        for epoch in range(len(history[keys[0]])):
            row = {"epoch": epoch}
            row.update({k: ("NA" if (k, epoch) in missing else history[k][epoch]) for k in keys})
            writer.writerow(row)


def test_csvlogger_file(tmp_path):
    p = tmp_path / "training.log"
    write_csvlogger(p, HISTORY)
    run = load_run(p)
    assert run.source.format == "keras-csv"
    assert set(run.series) == set(HISTORY)
    va = run.series["val_accuracy"]
    assert va.axis == "epoch" and list(va.x) == [0, 1, 2, 3, 4]  # the epoch column is 0-based, used as is
    assert va.value_at(3) == 0.78 and run.series["learning_rate"].value_at(3) == 0.01
    assert va.role.split == "val" and va.role.kind == "accuracy" and not va.role.percent
    assert run.warnings == []


def test_csvlogger_other_separator_and_na_cells(tmp_path):
    p = tmp_path / "log.csv"
    write_csvlogger(p, HISTORY, separator=";", missing={("val_loss", 2)})
    run = load_run(p)
    assert run.source.format == "keras-csv"
    assert list(run.series["val_loss"].x) == [0, 1, 3, 4] and run.warnings == []


def test_csvlogger_lr_column_and_appended_resume(tmp_path):
    h = {"accuracy": [0.5, 0.6, 0.7], "loss": [1.0, 0.8, 0.7], "lr": [0.01, 0.01, 0.001]}
    p = tmp_path / "log.csv"
    write_csvlogger(p, h)
    with open(p, "a", newline="") as fh:  # CSVLogger(append=True) after resuming from epoch 1
        fh.write("1,0.65,0.75,0.01\n2,0.72,0.68,0.001\n")
    run = load_run(p)
    assert run.series["lr"].role.kind == "lr"
    assert list(run.series["accuracy"].x) == [0, 1, 2] and run.series["accuracy"].value_at(2) == 0.72
    assert any(e.kind == "step_rewind" and e.at == 1 for e in run.events)


def test_csvlogger_header_only(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n")
    with pytest.raises(EmptyLogError):
        load_run(p)


def test_csvlogger_forced_on_a_table_without_epoch(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,loss\n1,0.5\n")
    with pytest.raises(InputError, match="no numeric 'epoch' column"):
        load_run(p, format="keras-csv")


def test_history_json(tmp_path):
    p = tmp_path / "history.json"
    p.write_text(json.dumps(HISTORY))
    run = load_run(p)
    assert run.source.format == "keras-history"
    va = run.series["val_accuracy"]
    assert list(va.x) == [1, 2, 3, 4, 5]  # no numbering in a History: 1-based, as Keras prints epochs
    assert va.value_at(4) == 0.78 and run.series["learning_rate"].value_at(4) == 0.01


def test_history_json_indented_with_nan_and_validation_freq(tmp_path):
    h = {"loss": [1.0, 0.9, float("nan"), 0.7], "val_loss": [0.95, 0.75]}
    p = tmp_path / "hist.json"
    p.write_text(json.dumps(h, indent=2))
    run = load_run(p)
    assert run.source.format == "keras-history"
    assert np.isnan(run.series["loss"].value_at(3))
    assert list(run.series["val_loss"].x) == [2, 4]
    assert any("validation_freq=2" in w for w in run.warnings)


def test_history_object_with_params_and_pandas_json(tmp_path):
    p = tmp_path / "h.json"
    p.write_text(json.dumps({"history": {"loss": [0.5, 0.4]}, "params": {"epochs": 10, "steps": 390, "verbose": 1},
                             "epoch": [3, 4]}))
    run = load_run(p)
    assert list(run.series["loss"].x) == [4, 5]  # resumed with initial_epoch=3: Keras printed "Epoch 4/10"
    assert run.setup.epochs == 10 and run.setup.steps_per_epoch == 390
    q = tmp_path / "df.json"
    pd.DataFrame(HISTORY).to_json(q)
    run = load_run(q)
    assert run.source.format == "keras-history" and run.series["val_loss"].value_at(5) == 0.68


def test_json_that_is_not_a_history(tmp_path):
    p = tmp_path / "list.json"
    p.write_text("[1, 2, 3]")
    with pytest.raises(UnknownFormatError):
        load_run(p)
    with pytest.raises(InputError, match="not a Keras History"):
        load_run(p, format="keras-history")
    q = tmp_path / "config.json"
    q.write_text(json.dumps({"lr": 0.1, "batch_size": 32}))
    with pytest.raises(UnknownFormatError):
        load_run(q)
    with pytest.raises(InputError, match="not a Keras History"):
        load_run(q, format="keras-history")
    r = tmp_path / "cut.json"
    r.write_text('{"loss": [0.5, 0.4')
    with pytest.raises(CorruptLogError, match="not valid JSON"):
        load_run(r, format="keras-history")

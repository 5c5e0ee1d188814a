"""W&B history exported as CSV (run.history().to_csv()) and a chart's CSV export."""

import numpy as np
import pandas as pd
import pytest

from whyspike.errors import InputError
from whyspike.importers import load_run


def history_frame(n=30, per_epoch=10):
    step = np.arange(n)
    df = pd.DataFrame({
        "_step": step,
        "_runtime": 1.5 * step + 3.0,
        "_timestamp": 1.7e9 + 1.5 * step,
        "train/loss": 2.0 - 0.05 * step,
        "epoch": step // per_epoch,
        "val/acc": np.where(step % per_epoch == per_epoch - 1, 0.5 + 0.01 * step, np.nan),
        "model": "resnet18",
    })
    return df


def test_history_export(tmp_path):
    p = tmp_path / "history.csv"
    history_frame().to_csv(p)  # with the pandas index as an unnamed first column
    run = load_run(p)
    assert run.source.format == "wandb-csv"
    loss, acc = run.series["train/loss"], run.series["val/acc"]
    assert loss.axis == acc.axis == "step" and len(loss) == 30
    assert list(acc.x) == [9, 19, 29] and acc.value_at(19) == pytest.approx(0.69)  # empty cells: not logged
    assert acc.role.split == "val" and loss.role.kind == "loss"
    assert loss.wall_time is not None and loss.wall_time[2] == pytest.approx(1.7e9 + 3.0)
    assert "_timestamp" not in run.series and "_step" not in run.series and "_runtime" in run.series
    assert run.series["epoch"].value_at(25) == 2
    assert run.setup.steps_per_epoch == 10
    assert any("'model'" in w for w in run.warnings)  # a text column is named, not read


def test_chart_export(tmp_path):
    p = tmp_path / "chart.csv"
    p.write_text('"Step","run-a - train/loss","run-a - train/loss__MIN","run-a - train/loss__MAX"\n'
                 '"0","2.0","1.9","2.1"\n"50","1.5","1.4","1.6"\n"100","1.1","1.0","1.2"\n')
    run = load_run(p)
    assert run.source.format == "wandb-csv"
    assert list(run.series) == ["run-a - train/loss"] and list(run.series["run-a - train/loss"].x) == [0, 50, 100]


def test_forced_on_a_csv_without_step(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("epoch,loss\n0,1\n")
    with pytest.raises(InputError, match="'_step'"):
        load_run(p, format="wandb-csv")

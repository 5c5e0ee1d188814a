"""The `table` importer and the shared table reader: real pytorch-classification logs, dialects, bad input, speed."""

import time

import numpy as np
import pandas as pd
import pytest

from whyspike.errors import EmptyLogError, InputError, UnknownFormatError
from whyspike.importers import load_run
from whyspike.importers._tabular import detect_dialect, steps_per_epoch

PC = "pytorch-classification"
COLUMNS = ["Learning Rate", "Train Loss", "Valid Loss", "Train Acc.", "Valid Acc."]


# ------------------------------------------------------------------------------------------------- real logs


@pytest.mark.parametrize(
    "name, drop_at, before, after, lr_before, lr_after, n",
    [
        # SOURCES.md counts these rows from 1; as 0-based epochs the jump lands where the LR drops
        ("baseline_cifar10_resnet-110", 81, 88.56, 92.70, 0.1, 0.01, 164),
        ("baseline_cifar10_vgg19_bn", 81, 79.49, 91.72, 0.1, 0.01, 164),
        ("baseline_cifar100_densenet-bc-100-12", 150, 67.76, 76.33, 0.1, 0.01, 300),
        ("baseline_imagenet_resnet18", 31, 36.336, 56.84, 0.1, 0.01, 76),
        ("baseline_lr0.005_cifar10_resnet-110", 81, 86.33, 87.70, 0.005, 0.0005, 164),
        ("baseline_cifar100_WRN-28-10-drop", 60, 64.01, 77.08, 0.1, 0.02, 200),
    ],
)
def test_pytorch_classification_logs(real_logs, name, drop_at, before, after, lr_before, lr_after, n):
    run = load_run(real_logs / PC / f"{name}.log.txt")
    assert run.source.format == "table"
    assert list(run.series) == COLUMNS  # the trailing tab adds no column
    acc, lr = run.series["Valid Acc."], run.series["Learning Rate"]
    assert acc.axis == "epoch" and len(acc) == n and acc.x[0] == 0  # row index = 0-based epoch
    assert acc.value_at(drop_at - 1) == pytest.approx(before)
    assert acc.value_at(drop_at) == pytest.approx(after)
    assert lr.value_at(drop_at - 1) == pytest.approx(lr_before)
    assert lr.value_at(drop_at) == pytest.approx(lr_after)
    assert acc.role.kind == "accuracy" and acc.role.split == "val" and acc.role.percent
    assert run.series["Train Loss"].role.kind == "loss" and lr.role.kind == "lr"
    assert run.warnings == []


def test_every_pytorch_classification_log_reads(real_logs):
    for path in sorted((real_logs / PC).glob("*.log.txt")):
        run = load_run(path)
        assert {"Learning Rate", "Valid Acc.", "Train Loss"} <= set(run.series), path.name
        assert all(np.isfinite(s.y).all() for s in run.series.values()), path.name


def test_geolr_messy_log(real_logs):
    run = load_run(real_logs / PC / "geolr_lr0.005_nodecay_cifar100_resnet-110.log.txt")
    assert run.source.format == "table"
    assert set(run.series) == {"Train Loss", "Valid Loss", "Train Acc.", "Valid Acc.", "Time", "Learning Rate"}
    acc = run.series["Valid Acc."]
    assert list(acc.x[:3]) == [0, 1, 2] and acc.x[-1] == 118  # the Epoch column, used as is
    assert acc.value_at(0) == pytest.approx(7.56) and acc.value_at(118) == pytest.approx(67.21)
    lr = run.series["Learning Rate"]
    assert lr.axis == "epoch" and len(lr) == 119 and lr.role.kind == "lr"
    # the largest of the 335 per-group LRs; row 36 is one where no group sits at 0.1
    assert lr.value_at(0) == pytest.approx(0.1)
    assert lr.value_at(36) == pytest.approx(0.09852535195498559)
    assert run.setup.config["param_group_lists"] == {"Learning Rate": {"groups": 335, "differ": True}}
    assert any("Learning Rate" in w and "335 groups" in w and "differ" in w for w in run.warnings)


# ------------------------------------------------------------------------------------------------- dialects


def test_csv_written_by_pandas_with_step_column(tmp_path):
    df = pd.DataFrame({"step": [10, 20, 30, 40], "loss": [2.0, 1.5, 1.2, 1.1], "acc": [0.1, 0.3, 0.5, 0.55]})
    p = tmp_path / "log.csv"
    df.to_csv(p, index=False)
    run = load_run(p)
    assert run.source.format == "table"
    assert run.series["loss"].axis == "step" and list(run.series["loss"].x) == [10, 20, 30, 40]
    assert "step" not in run.series


def test_whitespace_aligned_table_without_axis(tmp_path):
    p = tmp_path / "train.log"
    p.write_text("loss      acc     val_acc\n1.50   0.40    0.38\n1.10   0.55    0.51\n0.90   0.61    0.58\n")
    run = load_run(p)
    assert run.source.format == "table"
    assert list(run.series["val_acc"].x) == [0, 1, 2] and run.series["val_acc"].value_at(2) == 0.58


def test_semicolon_percent_and_tensor_cells(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("Epoch;Train Acc;Loss\n1;50.5%;tensor(1.25, device='cuda:0')\n2;61.0%;tensor(0.98, device='cuda:0')\n")
    run = load_run(p)
    assert list(run.series["Train Acc"].x) == [1, 2] and run.series["Train Acc"].value_at(2) == 61.0
    assert run.series["Loss"].value_at(1) == 1.25 and run.warnings == []


def test_quoted_header_bom_and_crlf(tmp_path):
    p = tmp_path / "log.csv"
    p.write_bytes('\ufeff"epoch","val loss, smoothed"\r\n0,1.5\r\n1,1.2\r\n'.encode("utf-8"))
    run = load_run(p, format="table")
    assert list(run.series) == ["val loss, smoothed"] and run.series["val loss, smoothed"].value_at(1) == 1.2


def test_mixed_epoch_and_step_rows_in_a_generic_table(tmp_path):
    rows = ["epoch,step,loss,val_acc"]
    for e in range(3):
        rows += [f"{e},{e * 4 + i},{2 - 0.1 * (e * 4 + i):.2f}," for i in range(4)]
        rows.append(f"{e},{e * 4 + 3},,{0.5 + 0.1 * e:.1f}")
    p = tmp_path / "log.csv"
    p.write_text("\n".join(rows) + "\n")
    run = load_run(p, format="table")
    assert run.series["loss"].axis == "step" and len(run.series["loss"]) == 12
    assert run.series["val_acc"].axis == "epoch" and list(run.series["val_acc"].x) == [0, 1, 2]
    assert run.setup.steps_per_epoch == 4
    assert [e.at for e in run.events if e.kind == "epoch_boundary"] == [4, 8]


def test_detect_dialect():
    assert detect_dialect("a\tb\t\n1\t2\t\n3\t4\t\n").names == ("a", "b", "")
    d = detect_dialect("x y z\n1 2 3\n4 5 6\n")
    assert d.delimiter is None and d.names == ("x", "y", "z")
    assert detect_dialect("1,2,3\n4,5,6\n") is None  # no header
    assert detect_dialect('{"loss": 1}\n') is None
    assert detect_dialect("Some prose here.\nAnd more words follow.\n") is None


def test_steps_per_epoch_from_whole_and_fractional_epochs():
    steps = np.arange(0, 300, dtype=float)
    assert steps_per_epoch(steps, np.floor(steps / 100)) == 100
    assert steps_per_epoch(np.array([50.0, 100, 150]), np.array([0.5, 1.0, 1.5])) == 100
    assert steps_per_epoch(np.array([1.0, 2.0]), np.array([0.0, 0.0])) is None


# ------------------------------------------------------------------------------------------------- bad input


def test_header_only_is_an_empty_log(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,loss,acc\n")
    with pytest.raises(EmptyLogError):
        load_run(p, format="table")


def test_empty_file(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("")
    with pytest.raises(EmptyLogError):
        load_run(p, format="table")
    with pytest.raises(InputError):
        load_run(p)


def test_non_numeric_cell_becomes_nan_with_a_warning(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,loss,acc\n1,2.0,0.1\n2,oops,0.2\n3,1.0,0.3\n4,err,0.4\n")
    run = load_run(p)
    loss = run.series["loss"]
    assert list(loss.x) == [1, 2, 3, 4] and np.isnan(loss.y[1]) and loss.y[2] == 1.0
    assert run.series["acc"].value_at(4) == 0.4
    assert any("'loss'" in w and "2 non-numeric" in w and "'oops'" in w and "line 3" in w for w in run.warnings)


def test_non_numeric_cell_deep_in_a_large_file_keeps_the_fast_path_column_wise(tmp_path):
    n = 300_000
    step = np.arange(n)
    df = pd.DataFrame({"step": step, "loss": np.linspace(3, 1, n).round(6).astype(str)})
    df.loc[n - 5, "loss"] = "diverged"
    p = tmp_path / "log.csv"
    df.to_csv(p, index=False)
    run = load_run(p)
    assert len(run.series["loss"]) == n and np.isnan(run.series["loss"].value_at(n - 5))
    assert any(f"line {n - 5 + 2}" in w for w in run.warnings)


def test_nan_and_inf_are_kept_as_logged(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,loss\n1,1.0\n2,nan\n3,inf\n4,-inf\n5,0.5\n")
    loss = load_run(p).series["loss"]
    assert list(loss.x) == [1, 2, 3, 4, 5]
    assert np.isnan(loss.y[1]) and loss.y[2] == np.inf and loss.y[3] == -np.inf


def test_resumed_log_rewinds_and_duplicates(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,loss\n1,1.0\n2,0.9\n3,0.8\n2,0.95\n3,0.85\n4,0.7\n")
    run = load_run(p)
    assert list(run.series["loss"].x) == [1, 2, 3, 4] and run.series["loss"].value_at(2) == 0.95
    assert [e.kind for e in run.events] == ["step_rewind"]
    p.write_text("step,loss\n1,1.0\n2,0.9\n2,0.8\n3,0.7\n")
    run = load_run(p)
    assert run.series["loss"].value_at(2) == 0.8 and any("repeated step" in w for w in run.warnings)


def test_ragged_rows_warn_and_the_rest_is_read(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,loss,acc\n1,1.0,0.1\n2,0.9\n3,0.8,0.3,7\n4,0.7,0.4\n5,0.6,0.")
    run = load_run(p)
    assert list(run.series["loss"].x) == [1, 4, 5]
    assert any("2 row(s)" in w and "skipped" in w for w in run.warnings)


def test_repeated_header_of_concatenated_logs(tmp_path):
    p = tmp_path / "log.txt"
    p.write_text("epoch\tloss\n0\t1.0\n1\t0.8\nepoch\tloss\n0\t1.1\n1\t0.7\n")
    run = load_run(p)
    assert list(run.series["loss"].x) == [0, 1] and run.series["loss"].value_at(1) == 0.7
    assert any("header line is repeated" in w for w in run.warnings)
    assert [e.kind for e in run.events] == ["step_rewind"]


def test_text_column_is_left_out_with_a_warning(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("epoch,phase,loss\n0,warmup,1.0\n1,main,0.8\n2,main,0.7\n")
    run = load_run(p, format="table")
    assert set(run.series) == {"loss"} and any("'phase'" in w for w in run.warnings)


def test_binary_or_prose_is_not_a_table(tmp_path):
    p = tmp_path / "blob.bin"
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="not a text table"):
        load_run(p, format="table")
    q = tmp_path / "notes.txt"
    q.write_text("We trained the model.\nIt went fine, mostly.\n")
    with pytest.raises(UnknownFormatError):
        load_run(q)


# ------------------------------------------------------------------------------------------------- speed


def test_a_million_row_csv_loads_well_under_a_second(tmp_path):
    n = 1_000_000
    rng = np.random.default_rng(0)
    p = tmp_path / "big.csv"
    data = np.column_stack([np.arange(n), rng.random(n), rng.random(n) * 3, rng.random(n), np.full(n, 1e-3)])
    np.savetxt(p, data, fmt=["%d", "%.6f", "%.6f", "%.6f", "%g"], delimiter=",",
               header="epoch,accuracy,loss,val_accuracy,learning_rate", comments="")
    best = np.inf
    for _ in range(2):
        t = time.perf_counter()
        run = load_run(p)
        best = min(best, time.perf_counter() - t)
    assert run.source.format == "keras-csv" and len(run.series["val_accuracy"]) == n
    assert best < 1.0, f"1M-row CSV took {best:.2f} s"


def test_mangled_logs_raise_only_whyspike_errors(tmp_path, real_logs):
    import json
    import random

    from whyspike.errors import WhyspikeError

    seeds = [
        b"epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.2,0.4,1.3\n1,0.6,1.0,0.5,1.1\n2,0.7,0.9,0.6,1.0\n",
        b"epoch,step,train_loss_step,val_acc\n0,9,1.0,\n0,9,,0.5\n1,19,0.8,\n1,19,,0.6\n",
        json.dumps({"loss": [1, 2, 3], "val_loss": [1, 2, 3]}).encode(),
        json.dumps({"log_history": [{"loss": 1.0, "step": 5, "epoch": 0.5}], "train_batch_size": 8}).encode(),
        (real_logs / PC / "geolr_lr0.005_nodecay_cifar100_resnet-110.log.txt").read_bytes()[:3000],
        (real_logs / "wide-residual-networks" / "nin_1875527964.log.txt").read_bytes()[:4000],
        b",_step,_runtime,train/loss\n0,0,1.0,2.0\n1,1,2.0,1.5\n",
    ]
    formats = ["keras-csv", "keras-history", "lightning-csv", "hf-trainer-state", "table", "jsonl", "wandb-csv", None]
    rng = random.Random(7)
    for i in range(150):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 5)):
            at = rng.randrange(len(data)) if data else 0
            op = rng.random()
            if op < 0.3:
                del data[at:at + rng.randint(1, 20)]
            elif op < 0.7:
                data[at:at] = rng.choice(
                    [b",", b"\t", b"\n", b"{", b"]", b'"', b"nan", b"x", b"\x00", b"\xff", b"1e999"])
            elif data:
                data[at] = rng.randrange(256)
        p = tmp_path / f"{i}_{rng.choice(['log.csv', 'metrics.csv', 'trainer_state.json', 'h.json', 'x.jsonl'])}"
        p.write_bytes(bytes(data))
        for fmt in formats:
            try:
                load_run(p, format=fmt)
            except WhyspikeError:
                pass

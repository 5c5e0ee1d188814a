"""JSON lines: the real wide-residual-networks stdout logs and small JSON-lines files."""

import json

import numpy as np
import pytest

from whyspike.errors import EmptyLogError, InputError
from whyspike.importers import load_run

WRN = "wide-residual-networks"


@pytest.mark.parametrize(
    "name, at60, at120",
    [
        ("wide-resnet_1121914561", (85.26, 93.16), (89.36, 94.31)),
        ("nin_1875527964", (78.09, 90.74), (88.42, 92.11)),
        ("resnet-pre-act_17934627", (84.46, 91.27), (90.22, 93.34)),
        ("vgg_24208029", (81.37, 91.56), (89.89, 93.07)),
    ],
)
def test_wide_residual_networks_logs(real_logs, name, at60, at120):
    run = load_run(real_logs / WRN / f"{name}.log.txt")
    assert run.source.format == "jsonl"
    acc, lr = run.series["test_acc"], run.series["lr"]
    assert acc.axis == "epoch" and list(acc.x[:2]) == [1, 2] and acc.x[-1] == 200  # epoch is 1-based, as logged
    assert (acc.value_at(59), acc.value_at(60)) == pytest.approx(at60)
    assert (acc.value_at(119), acc.value_at(120)) == pytest.approx(at120)
    lrs = [lr.value_at(e) for e in (59, 60, 120, 160)]
    assert lrs == pytest.approx([0.1, 0.02, 0.004, 0.0008])
    assert acc.role.kind == "accuracy" and acc.role.split == "val" and acc.role.percent
    assert run.series["loss"].role.kind == "loss" and len(run.series["loss"]) == 200
    assert "train_time" in run.series
    # the config echoed on every line is not a curve
    for key in ("momentum", "batchSize", "depth", "n_parameters", "num_classes", "epoch", "hflip", "dataset"):
        assert key not in run.series, key
    assert run.warnings == []


def test_wide_residual_networks_setup(real_logs):
    run = load_run(real_logs / WRN / "wide-resnet_1121914561.log.txt")
    s = run.setup
    assert s.learning_rate == 0.1 and s.lr_milestones == [60, 120, 160] and s.lr_decay_factor == 0.2
    assert (s.momentum, s.weight_decay, s.batch_size, s.epochs, s.optimizer) == (0.9, 0.0005, 128, 200, "sgd")
    assert s.config["nesterov"] is True and s.config["widen_factor"] == 4 and s.config["depth"] == 40
    assert s.config["n_parameters"] == 8949210 and s.config["dataset"] == "./datasets/cifar10_whitened.t7"


def test_pure_json_lines_with_step_and_epoch(tmp_path):
    p = tmp_path / "metrics.jsonl"
    lines = []
    for step in range(1, 13):
        lines.append({"step": step, "epoch": (step - 1) // 4, "loss": 2.0 / step, "lr": 0.1, "phase": "train"})
        if step % 4 == 0:
            lines.append({"step": step, "epoch": (step - 1) // 4, "val": {"acc": 0.2 * step / 4}})
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    run = load_run(p)
    assert run.source.format == "jsonl"
    assert run.series["loss"].axis == "step" and len(run.series["loss"]) == 12
    assert run.series["val/acc"].axis == "epoch" and list(run.series["val/acc"].x) == [0, 1, 2]
    assert "lr" in run.series  # a constant LR is still the LR the run used
    assert run.setup.config["phase"] == "train" and run.setup.steps_per_epoch == 4


def test_json_objects_after_a_prefix_among_other_output(tmp_path):
    p = tmp_path / "stdout.txt"
    p.write_text("Loading data...\n"
                 'INFO stats: {"iteration": 20, "loss": 1.5, "lr": 0.01} trailing text\n'
                 "some warning\n"
                 'INFO stats: {"iteration": 40, "loss": NaN, "lr": 0.01}\n'
                 'INFO stats: {"iteration": 60, "loss": 0.9, "lr": 0.001\n'
                 'INFO stats: {"iteration": 80, "loss": 0.8, "lr": 0.001}\n')
    run = load_run(p)
    assert run.source.format == "jsonl"
    loss = run.series["loss"]
    assert loss.axis == "step" and list(loss.x) == [20, 40, 80] and np.isnan(loss.value_at(40))
    assert any("1 line(s)" in w and "line 5" in w for w in run.warnings)


def test_json_lines_without_axis_use_the_row_index(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"train_loss": 1.0, "val_loss": 1.2}\n{"train_loss": 0.8, "val_loss": "n/a"}\n'
                 '{"train_loss": 0.6, "val_loss": 0.9}\n{"train_loss": 0.5, "val_loss": "diverged"}\n')
    run = load_run(p)
    assert list(run.series["train_loss"].x) == [0, 1, 2, 3]
    assert list(run.series["val_loss"].x) == [0, 2]  # "n/a" is not logged; a word is not a value
    assert any("'val_loss'" in w and "'diverged'" in w and "line 4" in w for w in run.warnings)


def test_bad_json_lines_input(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text("no json here\n")
    with pytest.raises(InputError, match="no JSON object lines"):
        load_run(p, format="jsonl")
    p.write_text('{"model": "resnet", "ok": true}\n{"model": "vgg", "ok": false}\n')
    with pytest.raises(EmptyLogError):
        load_run(p, format="jsonl")
    p.write_text("")
    with pytest.raises(EmptyLogError):
        load_run(p, format="jsonl")


def test_fast_and_careful_json_lines_readers_agree(tmp_path):
    from whyspike.importers._tabular import table_from_records
    from whyspike.importers.generic import _JsonLines, _read_jsonl_fast

    rng = np.random.default_rng(1)
    p = tmp_path / "metrics.json"  # detectron2-style: one object per line, keys come and go, nested dicts
    with open(p, "w") as fh:
        for it in range(19, 4000, 20):
            rec = {"iteration": it, "lr": 0.02 if it < 3000 else 0.002, "total_loss": float(rng.random()),
                   "data_time": 0.01, "flags": {"amp": True}}
            if it % 1000 == 999:
                rec["bbox"] = {"AP": float(rng.random() * 40), "AP50": float(rng.random() * 60)}
            fh.write(json.dumps(rec) + "\n")
    fast = _read_jsonl_fast(p)
    assert fast is not None
    slow = table_from_records(_JsonLines(p), [])
    (ft, fo), (st, so) = fast, slow
    assert ft.nrows == st.nrows == 200 and sorted(ft.names) == sorted(st.names)
    for name in st.names:
        np.testing.assert_array_equal(ft.columns[name].mask(), st.columns[name].mask(), err_msg=name)
        np.testing.assert_array_equal(ft.columns[name].values, st.columns[name].values, err_msg=name)
    assert fo == so == {"flags/amp": True}
    run = load_run(p)
    assert run.source.format == "jsonl" and list(run.series["bbox/AP"].x) == [999, 1999, 2999, 3999]
    assert run.series["lr"].value_at(2999) == 0.02 and run.series["lr"].value_at(3019) == 0.002
    assert run.setup.config["data_time"] == 0.01


def test_a_million_json_lines_load_in_about_a_second(tmp_path):
    import time

    n = 1_000_000
    p = tmp_path / "big.jsonl"
    rng = np.random.default_rng(0)
    loss = rng.random(n).round(6)
    with open(p, "w") as fh:
        fh.writelines(f'{{"step": {i}, "loss": {loss[i]}, "lr": 0.001}}\n' for i in range(n))
    t = time.perf_counter()
    run = load_run(p)
    took = time.perf_counter() - t
    assert len(run.series["loss"]) == n and run.series["loss"].value_at(n - 1) == loss[-1]
    assert took < 3.0, f"1M JSON lines took {took:.2f} s"

"""Lightning CSVLogger directories, written the way lightning_fabric's _ExperimentWriter writes them."""

import csv

import pytest

from whyspike.errors import EmptyLogError, InputError
from whyspike.importers import load_run

STEPS_PER_EPOCH = 10


def lightning_rows(epochs=4, log_every=2):
    """The dicts Lightning logs: step rows, a validation-end row and a train-epoch-end row per epoch."""
    rows = []
    for e in range(epochs):
        lr = 0.1 if e < 2 else 0.01
        rows.append({"lr-SGD": lr, "epoch": e, "step": e * STEPS_PER_EPOCH})  # LearningRateMonitor, per epoch
        for i in range(log_every - 1, STEPS_PER_EPOCH, log_every):
            step = e * STEPS_PER_EPOCH + i
            rows.append({"train_loss_step": round(2.0 - 0.03 * step, 4), "train_acc": round(0.01 * step, 4),
                         "epoch": e, "step": step})
        last = (e + 1) * STEPS_PER_EPOCH - 1
        jump = 1.0 if e >= 2 else 0.0  # the LR drop at epoch 2
        rows.append({"val_loss": 1.5 - 0.2 * e - 0.3 * jump, "val_acc": 0.5 + 0.05 * e + 0.2 * jump,
                     "epoch": e, "step": last})
        rows.append({"train_loss_epoch": 1.9 - 0.25 * e, "epoch": e, "step": last})
    return rows


def write_metrics_csv(path, rows):
    keys = sorted(set().union(*rows))  # _record_new_keys sorts the header
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


HPARAMS = """\
batch_size: 64
lr: 0.1
milestones:
- 2
- 3
gamma: 0.1
max_epochs: 4
optimizer: SGD
model:
  depth: 20
  name: "resnet"
"""


@pytest.fixture
def version_dir(tmp_path):
    d = tmp_path / "lightning_logs" / "version_0"
    d.mkdir(parents=True)
    write_metrics_csv(d / "metrics.csv", lightning_rows())
    (d / "hparams.yaml").write_text(HPARAMS)
    return d


def test_version_directory(version_dir):
    run = load_run(version_dir)
    assert run.source.format == "lightning-csv" and run.source.path.endswith("metrics.csv")
    step = run.series["train_loss_step"]
    assert step.axis == "step" and list(step.x[:3]) == [1, 3, 5] and len(step) == 20
    assert run.series["train_acc"].axis == "step"  # logged on steps without the _step suffix
    for name in ("val_acc", "val_loss", "train_loss_epoch", "lr-SGD"):
        s = run.series[name]
        assert s.axis == "epoch" and list(s.x) == [0, 1, 2, 3], name  # Lightning's epoch, 0-based, as logged
    assert run.series["val_acc"].value_at(2) == pytest.approx(0.8)
    assert run.series["lr-SGD"].value_at(2) == 0.01 and run.series["lr-SGD"].role.kind == "lr"
    assert "epoch" not in run.series and "step" not in run.series
    assert run.warnings == []


def test_hparams_and_steps_per_epoch(version_dir):
    run = load_run(version_dir / "metrics.csv")
    s = run.setup
    assert (s.batch_size, s.learning_rate, s.epochs, s.optimizer) == (64, 0.1, 4, "SGD")
    assert s.lr_milestones == [2.0, 3.0] and s.lr_decay_factor == 0.1
    assert s.config["model"] == {"depth": 20, "name": "resnet"}
    assert s.steps_per_epoch == STEPS_PER_EPOCH
    assert [e.at for e in run.events if e.kind == "epoch_boundary"] == [10, 20, 30]


def test_without_hparams_and_with_nan_loss(tmp_path):
    rows = lightning_rows(epochs=3)
    rows[3]["train_loss_step"] = float("nan")
    p = tmp_path / "metrics.csv"
    write_metrics_csv(p, rows)
    run = load_run(p)
    assert run.source.format == "lightning-csv" and run.setup.config == {}
    loss = run.series["train_loss_step"]
    assert sum(1 for v in loss.y if v != v) == 1  # the logged NaN stays; empty cells are not values


def test_parent_directory_with_one_or_several_versions(version_dir):
    parent = version_dir.parent
    assert load_run(parent, format="lightning-csv").source.path == str(version_dir / "metrics.csv")
    other = parent / "version_1"
    other.mkdir()
    write_metrics_csv(other / "metrics.csv", lightning_rows(epochs=2))
    with pytest.raises(InputError, match="2 Lightning runs"):
        load_run(parent, format="lightning-csv")
    with pytest.raises(InputError, match="no metrics.csv"):
        load_run(parent.parent, format="lightning-csv")


def test_header_only_metrics_csv(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("epoch,step,train_loss_step,val_loss\n")
    with pytest.raises(EmptyLogError):
        load_run(p)


def test_validation_several_times_per_epoch_goes_on_the_step_axis(tmp_path):
    rows = []
    for step in range(0, 40, 5):
        rows.append({"epoch": step // 20, "step": step, "val_loss": 1.0 / (1 + step)})
    p = tmp_path / "metrics.csv"
    write_metrics_csv(p, rows)
    run = load_run(p)
    assert run.series["val_loss"].axis == "step" and len(run.series["val_loss"]) == 8


def test_metric_logged_without_epoch_goes_on_the_step_axis(tmp_path):
    p = tmp_path / "metrics.csv"
    rows = [{"epoch": 0, "step": 1, "loss": 1.0}, {"step": 2, "grad_norm": 3.0}, {"step": 4, "grad_norm": 2.5},
            {"epoch": 0, "step": 3, "loss": 0.9}]
    write_metrics_csv(p, rows)
    run = load_run(p)
    assert run.series["grad_norm"].axis == "step" and list(run.series["grad_norm"].x) == [2, 4]
    assert run.warnings == []


def test_simple_yaml_subset():
    from whyspike.importers._hparams import parse_simple_yaml

    text = ("# saved by save_hyperparameters()\nlr: 1.0e-3  # peak\nbetas:\n  - 0.9\n  - 0.999\nname: 'a: b'\n"
            "sched:\n  milestones: [30, 60]\n  gamma: 0.1\nmodel: !!python/object:nets.ResNet\n  depth: 18\n"
            "flag: true\nnothing: null\n")
    assert parse_simple_yaml(text) == {"lr": 1e-3, "betas": [0.9, 0.999], "name": "a: b",
                                       "sched": {"milestones": [30, 60], "gamma": 0.1}, "model": {"depth": 18},
                                       "flag": True, "nothing": None}
    assert parse_simple_yaml("just some text\n: odd\n  - x\n") == {}

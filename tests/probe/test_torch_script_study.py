"""Black-box probe studies of a plain PyTorch loop (tests/probe/data/torch_lr_drop.py: digits, noisy labels, SGD 0.9
at LR 0.2, MultiStepLR / 10 at epoch 8, 18 epochs; the training loss drops at the LR drop). The interventions reach
the loop through the global optimizer hooks, in full re-runs: the default plan comes from the diagnosis
(lr_schedule: lr.shift=+3, lr.decay=off), the shifted decay moves the drop by exactly the shift (checked against the
LR's closed form and each replica's own curve), switching the decay off removes it, and an intervention the
optimizer cannot take (momentum=off on Adam) is an error for its arm only."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(m) is not None for m in ("torch", "sklearn")),
                                reason="torch and sklearn are needed")

SCRIPT = Path(__file__).resolve().parent / "data" / "torch_lr_drop.py"


def study(out: Path, **kw):
    from whyspike.probe.script_study import run_script_study

    return run_script_study(SCRIPT, kw.pop("argv", []), out, executor="inline", progress=False, metric="train_loss",
                            **kw)


def arm(out: Path, name: str) -> list[dict]:
    return json.loads((out / "replicas" / f"{name}.json").read_text())


def largest_drop(rep: dict) -> int:
    """The epoch whose training loss fell the most from the epoch before (after the first two, the warm-up)."""
    e, y = np.array(rep["epochs"]), np.array(rep["train_loss"], dtype=float)
    d = np.diff(y)[1:]
    return int(e[2:][np.argmin(d)])


def level_change(rep: dict) -> float:
    y = np.array(rep["train_loss"], dtype=float)
    return float(y[8:13].mean() - y[3:8].mean())


@pytest.fixture(scope="module")
def lr_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("torch") / "study"
    return out, study(out, seeds=2)


def test_the_default_plan_of_a_pytorch_loop_shifts_and_removes_the_lr_drop(lr_study):
    out, r = lr_study
    assert r["engine"] == "blackbox" and r["metric"] == "train_loss" and r["seed_mode"] == "seed"
    assert r["spike"] == {"at": 8, "branch_epoch": None, "horizon": 16}  # full re-runs: no stream, no branch
    assert [v["name"] for v in r["interventions"]] == ["lr.shift=+3", "lr.decay=off"]  # lr_schedule's plan
    original = json.loads((out / "original.json").read_text())
    assert largest_drop(original) == 8
    base, shifted, flat = arm(out, "baseline"), arm(out, "lr.shift=+3"), arm(out, "lr.decay=off")
    for rep in base + shifted + flat:
        assert rep["error"] is None
    for reps, drop_at in ((base, 8), (shifted, 11)):  # the LR of each epoch against its closed form
        for rep in reps:
            e = np.array(rep["epochs"])
            np.testing.assert_allclose(rep["lr"], np.where(e < drop_at, 0.2, 0.02), rtol=1e-9)
    for rep in flat:
        np.testing.assert_allclose(rep["lr"], 0.2, rtol=1e-12)
    # independently of the probe's statistic: each seed's loss falls most at the drop, and 3 epochs later
    assert [largest_drop(rep) for rep in base] == [8, 8] and [largest_drop(rep) for rep in shifted] == [11, 11]
    for b, f in zip(base, flat):  # without the decay, the loss level of epochs 8-12 barely leaves that of 3-7
        assert level_change(b) < -0.25 and abs(level_change(f)) < 0.4 * abs(level_change(b))
    v = {v["name"]: v for v in r["interventions"]}
    assert v["lr.shift=+3"]["verdict"] == "moved" and v["lr.shift=+3"]["shift"] == 3
    assert [j["at"] for j in v["lr.shift=+3"]["jumps"]] == [11, 11]
    assert v["lr.decay=off"]["verdict"] == "removed"
    assert [j["at"] for j in r["baseline"]["jumps"]] == [8, 8] and r["baseline"]["reproducible"]


def test_an_intervention_adam_cannot_take_is_an_error_for_its_arm_only(tmp_path, capsys):
    from whyspike.cli import main

    rc = main(["probe", str(SCRIPT), "--metric", "train_loss", "--spike", "8", "--seeds", "1", "--executor", "inline",
               "--intervene", "momentum=off", "--intervene", "lr.scale=0.5", "--out", str(tmp_path / "study"), "--",
               "--adam"])
    out = capsys.readouterr().out
    assert rc == 0, out
    r = json.loads((tmp_path / "study" / "result.json").read_text())
    v = {v["name"]: v for v in r["interventions"]}
    assert v["momentum=off"]["verdict"] == "error"
    assert v["momentum=off"]["errors"] == ["momentum=off#seed0: momentum=off: optimizer Adam has no momentum "
                                           "hyper-parameter (its first-moment decay is betas[0], not a momentum)"]
    [base], [half] = arm(tmp_path / "study", "baseline"), arm(tmp_path / "study", "lr.scale=0.5")
    assert v["lr.scale=0.5"]["verdict"] != "error" and half["error"] is None  # the study went on
    np.testing.assert_allclose(base["lr"], 0.002 * np.where(np.array(base["epochs"]) < 8, 1, 0.1), rtol=1e-9)
    np.testing.assert_allclose(half["lr"], 0.5 * np.array(base["lr"]), rtol=1e-9)
    assert base["train_loss"] != half["train_loss"]

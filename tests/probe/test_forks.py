"""The two savings of a probe study: baseline seed 0 is the original itself, and an arm that trains as the baseline
until a later epoch forks from the baseline's state there. Fork epochs are checked against hand-computed values;
a forked study against the same study trained without savings (sequential engine: bit for bit)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from whyspike.probe import TrainingSpec  # noqa: E402
from whyspike.probe.interventions import fork_epoch, parse  # noqa: E402
from whyspike.probe.study import run_study  # noqa: E402

TARGETS = Path(__file__).parent / "targets.py"


def tiny(schedule, momentum=0.9) -> TrainingSpec:
    """100 samples, batches of 10: 10 steps per epoch, so global step g lies in epoch g // 10."""
    return TrainingSpec(lambda: torch.nn.Linear(2, 2), torch.zeros(100, 2), torch.zeros(100, dtype=torch.long),
                        batch_size=10, epochs=20, momentum=momentum, schedule=schedule)


def step_decay(step, epoch):
    return 1.0 if epoch < 12 else 0.1


def warmup_then_decay(step, epoch):
    return min(1.0, (step + 1) / 20) * (1.0 if epoch < 12 else 0.1)


# (intervention, schedule, branch epoch, last epoch, fork epoch worked out by hand); the jump is at epoch 12
CASES = [
    ("lr.shift=+3", step_decay, 8, 16, 11),  # decays at 15 instead of 12: first differing step 120 (epoch 12)
    ("lr.shift=-2", step_decay, 8, 16, 9),  # decays at 10: step 100
    ("lr.shift=-5", step_decay, 8, 16, 8),  # decays at 7, before the branch: differs from the first step on
    ("lr.decay=off", step_decay, 8, 16, 11),
    ("lr.decay=off", step_decay, -1, 16, 11),  # from scratch
    ("lr.decay=off", step_decay, 8, 10, 10),  # never past the last epoch asked for
    ("lr.hold=10", step_decay, 8, 16, 11),  # held at epoch 10's 1.0: differs at the decay
    ("lr.hold=14", step_decay, 8, 16, 16),  # held at 0.1, which the baseline keeps too: never differs
    ("skip=5", step_decay, 8, 16, 10),  # steps 115-119 skipped: epoch 11
    ("skip=15", step_decay, 8, 16, 9),  # steps 105-119: epoch 10
    ("skip=40", step_decay, 8, 16, 8),  # steps 80-119: already the branch's first step 90
    ("lr.warmup=2", warmup_then_decay, -1, 16, -1),  # the ramp: step 1 gets 1/20 instead of 2/20
    ("lr.warmup=2", warmup_then_decay, 8, 16, 11),  # past the ramp it lags 19 steps: the decay at 120 differs
    ("lr.scale=0.5", step_decay, 8, 16, 8),  # the LR itself: from the first step
    ("momentum=off", step_decay, 8, 16, 8),
    ("wd=off", step_decay, 8, 16, 8),
    ("seed=1", step_decay, 8, 16, 8),
    ("shuffle=fixed", step_decay, 8, 16, 8),
    ("batch.scale=2", step_decay, 8, 16, 8),
    ("lr.shift=+3", None, 8, 16, 8),  # no schedule to shift: the arm's replicas report it, from the branch
]


@pytest.mark.parametrize("text,schedule,branch,last,want", CASES,
                         ids=[f"{c[0]}@{c[2]}..{c[3]}" + (f"-{c[1].__name__}" if c[1] else "") for c in CASES])
def test_fork_epoch_is_the_epoch_before_the_first_step_that_differs(text, schedule, branch, last, want):
    assert fork_epoch([parse(text)], tiny(schedule), 12, branch, last) == want


def arm_curves(out: Path) -> dict:
    keys = ("epochs", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "step_loss", "steps")
    return {p.name: {d["name"]: {k: d[k] for k in keys} for d in json.loads(p.read_text())}
            for p in sorted((out / "replicas").glob("*.json"))}


PLAN = dict(spike=6, interventions=["lr.shift=+3", "lr.decay=off", "skip=5", "lr.scale=0.5"], seeds=2,
            metric="train_accuracy", executor="inline", engine="sequential", progress=False)


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("forks")
    target = f"{TARGETS}:dropout_bn_drop"
    lazy = run_study(target, root / "lazy", **PLAN)
    full = run_study(target, root / "full", reuse=False, **PLAN)
    return root, lazy, full


def test_forked_arms_and_the_reused_seed0_equal_a_study_trained_without_them(two_studies):
    root, lazy, full = two_studies
    assert lazy["spike"]["branch_epoch"] == 2  # 6 - BRANCH_MARGIN - 1
    # the decay at 6 is the first difference of the schedule arms; skip=5 drops steps 6*23-5 .. 6*23-1, in epoch 5
    # (1437 samples in batches of 64: 23 steps per epoch)
    assert lazy["spike"]["forks"] == {"lr.shift=+3": 5, "lr.decay=off": 5, "skip=5": 4}
    assert full["spike"]["forks"] == {}
    assert arm_curves(root / "lazy") == arm_curves(root / "full")  # every number, bit for bit
    assert {v["name"]: v["verdict"] for v in lazy["interventions"]} == {
        v["name"]: v["verdict"] for v in full["interventions"]}
    # what was reused is said: seed 0 of the baseline is the original, a forked replica's early epochs a baseline's
    runs = {r["name"]: r for v in lazy["interventions"] for r in v["runs"]}
    assert lazy["baseline"]["runs"][0]["reused"] == {"from": "original", "epochs": [3, 10]}
    assert runs["lr.shift=+3#seed0"]["reused"] == {"from": "original", "epochs": [3, 5]}
    assert runs["lr.shift=+3#seed1"]["reused"] == {"from": "baseline#seed1", "epochs": [3, 5]}
    assert runs["skip=5#seed1"]["reused"] == {"from": "baseline#seed1", "epochs": [3, 4]}
    assert "reused" not in runs["lr.scale=0.5#seed1"]
    every = full["baseline"]["runs"] + [r for v in full["interventions"] for r in v["runs"]]
    assert len(every) == 10 and not any("reused" in r for r in every)


def test_only_what_the_savings_leave_is_trained(two_studies):
    root, _, _ = two_studies
    trained = {}
    for p in (root / "lazy" / "replicas").glob("*.json"):
        for d in json.loads(p.read_text()):
            first, last = d["reused"].get("epochs", [0, -1])
            trained[d["name"]] = len(d["epochs"]) - (last - first + 1)
    # every arm from epoch 3 (the branch is 2) until 5 epochs past its jump: 10, lr.shift=+3 until 11 (the training
    # has 12 epochs); baseline seed 0 not at all (the original's), a forked arm from the epoch after its fork
    assert trained == {"baseline#seed0": 0, "baseline#seed1": 8,
                       "lr.shift=+3#seed0": 6, "lr.shift=+3#seed1": 6,
                       "lr.decay=off#seed0": 5, "lr.decay=off#seed1": 5,
                       "skip=5#seed0": 6, "skip=5#seed1": 6,
                       "lr.scale=0.5#seed0": 8, "lr.scale=0.5#seed1": 8}


def test_a_resumed_study_without_a_fork_state_trains_that_replica_from_the_branch(two_studies, tmp_path):
    root, lazy, full = two_studies
    copy = tmp_path / "study"
    shutil.copytree(root / "lazy", copy)
    (copy / "fork-baseline_seed1-e0005.pt").unlink()  # lost: seed 1 of the arms forked at 5 cannot continue from it
    (copy / "replicas" / "lr.shift=+3.json").unlink()
    again = run_study(f"{TARGETS}:dropout_bn_drop", copy, **PLAN)
    assert arm_curves(copy) == arm_curves(root / "full")
    runs = {r["name"]: r for v in again["interventions"] for r in v["runs"]}
    assert "reused" not in runs["lr.shift=+3#seed1"] and runs["lr.shift=+3#seed0"]["reused"]["from"] == "original"

"""The two savings of a probe study: baseline seed 0 is the original itself, and an arm that trains as the baseline
or another arm until a later epoch forks from that replica's state there. Fork epochs and the planned parents are
checked against hand-computed values (and the plan's total against every possible tree); a forked study, chained
forks included, against the same study trained without savings (sequential engine: bit for bit)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from whyspike.probe import TrainingSpec  # noqa: E402
from whyspike.probe.forks import Fork, plan_forks, stages  # noqa: E402
from whyspike.probe.interventions import fork_epoch, parse, shared_epoch  # noqa: E402
from whyspike.probe.study import run_study  # noqa: E402

TARGETS = Path(__file__).parent / "targets.py"


def tiny(schedule, momentum=0.9, epochs=20) -> TrainingSpec:
    """100 samples, batches of 10: 10 steps per epoch, so global step g lies in epoch g // 10."""
    return TrainingSpec(lambda: torch.nn.Linear(2, 2), torch.zeros(100, 2), torch.zeros(100, dtype=torch.long),
                        batch_size=10, epochs=epochs, momentum=momentum, schedule=schedule)


def step_decay(step, epoch):
    return 1.0 if epoch < 12 else 0.1


def decay_at_20(step, epoch):
    return 1.0 if epoch < 20 else 0.1


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


# (arm a, arm b, branch, last, the last epoch they train alike, by hand); step_decay, the jump at 12
PAIRS = [
    ("lr.shift=+3", "lr.decay=off", 8, 19, 14),  # alike until the shifted decay at 15 (step 150)
    ("lr.shift=+3", "lr.shift=+5", 8, 19, 14),  # decays at 15 and 17
    ("lr.shift=+5", "lr.decay=off", 8, 19, 16),
    ("lr.shift=+3", "lr.decay=off", 8, 13, 13),  # never past the last epoch asked for
    ("lr.shift=-2", "lr.shift=+3", 8, 19, 9),  # decays at 10 and 15
    ("lr.hold=14", "lr.hold=16", 8, 19, 19),  # both held at the baseline's 0.1: alike throughout
    ("skip=5", "lr.shift=+3", 8, 19, 10),  # skips steps 115-119
    ("skip=5", "skip=15", 8, 19, 9),  # skip=15 from step 105
    ("lr.decay=off", "lr.scale=0.5", 8, 19, 8),  # anything but the multiplier or skips: nothing shared
    ("lr.decay=off", "seed=1", 8, 19, 8),
]


@pytest.mark.parametrize("a,b,branch,last,want", PAIRS, ids=[f"{p[0]}|{p[1]}@{p[2]}..{p[3]}" for p in PAIRS])
def test_two_arms_train_alike_until_the_epoch_before_their_first_differing_step(a, b, branch, last, want):
    spec = tiny(step_decay)
    assert shared_epoch([parse(a)], [parse(b)], spec, 12, branch, last) == want
    assert shared_epoch([parse(b)], [parse(a)], spec, 12, branch, last) == want


def plan(arms: list[str], horizons: dict, schedule=step_decay, epochs=20, first=8, spike=12) -> dict:
    named = {"baseline": []} | {a: [parse(a)] for a in arms}
    return plan_forks(named, horizons, tiny(schedule, epochs=epochs), spike, first)


def test_the_default_lr_drop_plan_forks_decay_off_from_the_shift_late():
    """The jump at 20 of 40, the branch at 16; every arm until 5 epochs past its jump: the baseline and
    lr.decay=off until 25, lr.shift=+3 until 28. Both arms part from the baseline at the decay (20) and from each
    other at the shifted decay (23): one forks from the baseline at 19, the other from it at 22 (a tie either
    way, 3 epochs later than from the baseline; it goes to the arm earlier in the plan as the parent)."""
    horizons = {"baseline": 25, "lr.shift=+3": 28, "lr.decay=off": 25}
    forks = plan(["lr.shift=+3", "lr.decay=off"], horizons, decay_at_20, 40, 16, 20)
    assert forks == {"lr.shift=+3": Fork("baseline", 19), "lr.decay=off": Fork("lr.shift=+3", 22)}
    assert stages(["baseline", "lr.shift=+3", "lr.decay=off"], forks) == [
        ["baseline"], ["lr.shift=+3"], ["lr.decay=off"]]
    forks = plan(["lr.decay=off", "lr.shift=+3"], horizons, decay_at_20, 40, 16, 20)
    assert forks == {"lr.decay=off": Fork("baseline", 19), "lr.shift=+3": Fork("lr.decay=off", 22)}


def test_a_parent_stops_at_its_horizon_and_the_arm_trains_one_epoch_of_its_own():
    # lr.decay=off and lr.shift=+5 alike through 16. decay-off until 17 can give 16 (it reaches it) and take 15
    # (it trains 16 itself): decay-off is the parent, whatever the plan's order
    h = {"baseline": 17, "lr.shift=+5": 22, "lr.decay=off": 17}
    want = {"lr.decay=off": Fork("baseline", 11), "lr.shift=+5": Fork("lr.decay=off", 16)}
    assert plan(["lr.shift=+5", "lr.decay=off"], h) == want == plan(["lr.decay=off", "lr.shift=+5"], h)
    # decay-off until 15 reaches 14 only: the shift forks from it at 14 (decay-off from the shift: 13)
    h["lr.decay=off"] = 15
    assert plan(["lr.shift=+5", "lr.decay=off"], h) == {"lr.decay=off": Fork("baseline", 11),
                                                        "lr.shift=+5": Fork("lr.decay=off", 14)}
    # the baseline until 11 reaches 10 only (the decay at 12 would allow 11)
    h = {"baseline": 11, "lr.shift=+3": 20}
    assert plan(["lr.shift=+3"], h) == {"lr.shift=+3": Fork("baseline", 10)}
    # an arm until 12 trains 11 itself at least: it forks at 10, not at the 11 the baseline reaches
    h = {"baseline": 17, "lr.decay=off": 12}
    assert plan(["lr.decay=off"], h) == {"lr.decay=off": Fork("baseline", 10)}


def test_arms_that_share_nothing_longer_fork_from_the_baseline_or_nowhere():
    h = {"baseline": 17, "lr.shift=+3": 20, "skip=5": 17, "skip=15": 17, "lr.scale=0.5": 17, "seed=1": 17}
    # skip=5 parts from the shift in epoch 11 (step 115), as from the baseline: a tie, to the baseline; skip=15
    # parts from the baseline and either arm in epoch 10 (step 105); lr.scale and seed=1 change the first step:
    # from the branch
    assert plan(list(h)[1:], h) == {"lr.shift=+3": Fork("baseline", 11), "skip=5": Fork("baseline", 10),
                                    "skip=15": Fork("baseline", 9)}


def test_a_fork_no_later_than_the_parents_own_continues_from_the_grandparent():
    """lr.hold=10 and lr.decay=off never part (both keep 1.0); lr.shift=+1 parts from both at its decay (13), all
    three from the baseline at 12. The horizons make decay-off the one to fork from the baseline (at 11, leaving
    lr.hold=10 the later 15 from it) and let lr.shift=+1 fork at 12 from either arm; lr.hold=10 copied its epoch 12
    from decay-off, never trained (nor kept) it, so the shift continues from decay-off's state."""
    h = {"baseline": 17, "lr.hold=10": 19, "lr.decay=off": 16, "lr.shift=+1": 17}
    assert plan(list(h)[1:], h) == {"lr.decay=off": Fork("baseline", 11), "lr.hold=10": Fork("lr.decay=off", 15),
                                    "lr.shift=+1": Fork("lr.decay=off", 12)}


POOL = ["lr.shift=+3", "lr.shift=+5", "lr.shift=+1", "lr.decay=off", "lr.hold=10", "lr.hold=14", "skip=5",
        "lr.scale=0.5"]


@pytest.mark.parametrize("arms", [POOL[:3], POOL[:4], POOL[1:5], POOL[2:6], POOL[3:7], POOL[4:8],
                                  ["lr.shift=+5", "lr.shift=+1", "lr.hold=14", "lr.decay=off"]],
                         ids=lambda a: ",".join(a))
def test_the_plan_trains_as_few_replica_epochs_as_the_best_of_every_tree(arms):
    """Against every assignment of parents (brute force): the plan's forks sum to the largest total that any
    tree without cycles reaches, and each fork is one its parent can give."""
    first, spike = 8, 12
    h = {"baseline": 17} | {a: min(20, spike + abs(int(parse(a).expected_shift() or 0)) + 5) for a in arms}
    spec = tiny(step_decay)
    ivs = {"baseline": []} | {a: [parse(a)] for a in arms}
    names = list(ivs)

    def w(p, c):
        return max(first, min(shared_epoch(ivs[p], ivs[c], spec, spike, first, 19), h[p] - 1, h[c] - 2))

    best = 0
    for parents in itertools.product(names, repeat=len(arms)):
        link = dict(zip(arms, parents))
        if any(p == c for c, p in link.items()):
            continue
        seen_root = True
        for c in arms:  # every chain of parents ends at the baseline: no cycle
            n, steps = c, 0
            while n != "baseline" and steps <= len(arms):
                n, steps = link[n], steps + 1
            seen_root &= n == "baseline"
        if seen_root:
            best = max(best, sum(w(p, c) for c, p in link.items()))
    forks = plan_forks(ivs, h, spec, spike, first)
    assert sum(forks[a].epoch if a in forks else first for a in arms) == best
    for a, f in forks.items():
        assert first < f.epoch <= min(h[f.parent] - 1, h[a] - 2)
        assert shared_epoch(ivs[f.parent], ivs[a], spec, spike, first, 19) >= f.epoch
        assert f.parent == "baseline" or forks[f.parent].epoch < f.epoch  # a state the parent trained itself


def runs_of(result: dict) -> dict:
    return {r["name"]: r for v in result["interventions"] for r in v["runs"]}


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
    # the decay at 6 is where the schedule arms part from the baseline, the shifted one at 9 where they part from
    # each other (lr.decay=off trains until 11, so 8 leaves it one epoch of its own: a chained fork); skip=5 drops
    # steps 6*23-5 .. 6*23-1, in epoch 5 (1437 samples in batches of 64: 23 steps per epoch)
    assert lazy["spike"]["forks"] == {"lr.shift=+3": {"from": "baseline", "epoch": 5},
                                      "lr.decay=off": {"from": "lr.shift=+3", "epoch": 8},
                                      "skip=5": {"from": "baseline", "epoch": 4}}
    assert json.loads((root / "lazy" / "study.json").read_text())["forks"] == lazy["spike"]["forks"]
    assert full["spike"]["forks"] == {}
    assert arm_curves(root / "lazy") == arm_curves(root / "full")  # every number, bit for bit
    assert {v["name"]: v["verdict"] for v in lazy["interventions"]} == {
        v["name"]: v["verdict"] for v in full["interventions"]}
    # what was reused is said: seed 0 of the baseline is the original, a forked replica's early epochs a baseline's
    runs = runs_of(lazy)
    assert lazy["baseline"]["runs"][0]["reused"] == {"from": "original", "epochs": [3, 10]}
    assert runs["lr.shift=+3#seed0"]["reused"] == {"from": "original", "epochs": [3, 5]}
    assert runs["lr.shift=+3#seed1"]["reused"] == {"from": "baseline#seed1", "epochs": [3, 5]}
    assert runs["skip=5#seed1"]["reused"] == {"from": "baseline#seed1", "epochs": [3, 4]}
    assert runs["lr.decay=off#seed0"]["reused"] == {"from": "lr.shift=+3#seed0", "epochs": [3, 8]}
    assert runs["lr.decay=off#seed1"]["reused"] == {"from": "lr.shift=+3#seed1", "epochs": [3, 8]}
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
    # the curves cover every arm from epoch 3 (the branch is 2) until 5 epochs past its jump: 10, lr.shift=+3 until
    # 11 (the training has 12 epochs). Trained: baseline seed 0 not at all (the original's), a forked arm from the
    # epoch after its fork (lr.decay=off: 9 and 10, after the shift's 8)
    assert trained == {"baseline#seed0": 0, "baseline#seed1": 8,
                       "lr.shift=+3#seed0": 6, "lr.shift=+3#seed1": 6,
                       "lr.decay=off#seed0": 2, "lr.decay=off#seed1": 2,
                       "skip=5#seed0": 6, "skip=5#seed1": 6,
                       "lr.scale=0.5#seed0": 8, "lr.scale=0.5#seed1": 8}


@pytest.mark.parametrize("lost,redo,alone", [
    # the baseline's state: seed 1 of the shift cannot continue from it
    ("fork-baseline_seed1-e0005.pt", "lr.shift=+3", "lr.shift=+3#seed1"),
    # the shift's own (an arm as the parent): seed 1 of decay-off trains from the branch, seed 0 still forks
    ("fork-lr.shift=+3_seed1-e0008.pt", "lr.decay=off", "lr.decay=off#seed1"),
], ids=["baseline-state", "arm-state"])
def test_a_resumed_study_without_a_fork_state_trains_that_replica_from_the_branch(two_studies, tmp_path, lost, redo,
                                                                                   alone):
    root, lazy, full = two_studies
    copy = tmp_path / "study"
    shutil.copytree(root / "lazy", copy)
    (copy / lost).unlink()
    (copy / "replicas" / f"{redo}.json").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (copy / "replicas").glob("*.json")}
    again = run_study(f"{TARGETS}:dropout_bn_drop", copy, **PLAN)
    assert {p.name: p.stat().st_mtime_ns for p in (copy / "replicas").glob("*.json") if p.name in kept} == kept
    assert arm_curves(copy) == arm_curves(root / "full")
    runs = runs_of(again)
    assert "reused" not in runs[alone]
    seed0 = alone.replace("#seed1", "#seed0")
    assert runs[seed0]["reused"] == runs_of(lazy)[seed0]["reused"]

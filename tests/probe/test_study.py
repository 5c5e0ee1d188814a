"""Probe studies end to end on MECHANISMS.md reproductions: the LR-drop jump moves by exactly the shift, recomputed
BatchNorm statistics remove the swings, baseline seed 0 is the original itself, a study resumes without redoing
finished arms, and a bad intervention is an error for its arm only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from whyspike.probe.study import run_study  # noqa: E402

HERE = Path(__file__).parent
TARGETS = HERE / "targets.py"


def target(name: str) -> str:
    return f"{TARGETS}:{name}"


@pytest.fixture(scope="module")
def lr_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("lr")
    return out, run_study(target("lr_drop"), out, spike=12, interventions=["lr.shift=+3", "lr.decay=off"], seeds=2,
                          metric="train_accuracy", executor="inline", progress=False)


def test_the_lr_drop_jump_moves_by_exactly_the_shift(lr_study):
    _, r = lr_study
    assert r["spike"]["at"] == 12  # the decay epoch of targets.lr_drop
    assert [j["at"] for j in r["baseline"]["jumps"]] == [12, 12] and r["baseline"]["reproducible"]
    verdicts = {v["name"]: v for v in r["interventions"]}
    shift = verdicts["lr.shift=+3"]
    assert shift["verdict"] == "moved" and shift["shift"] == 3.0
    assert [j["at"] for j in shift["jumps"]] == [15, 15]
    assert verdicts["lr.decay=off"]["verdict"] == "removed"


def test_baseline_seed0_is_the_original_not_a_retraining(lr_study):
    """A seed-0 branch replays the original (tests/probe/test_engines.py), so the study takes the original's own
    numbers over the baseline's epochs instead of training it again, and says so."""
    out, r = lr_study
    original = json.loads((out / "original.json").read_text())
    base = {d["name"]: d for d in json.loads((out / "replicas" / "baseline.json").read_text())}["baseline#seed0"]
    b = r["spike"]["branch_epoch"]
    assert base["epochs"] == list(range(b + 1, 17))  # the branch's next epoch to 5 past the jump at 12
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert base[key] == original[key][b + 1:17], key
    steps = [k for k, s in enumerate(original["steps"]) if (b + 1) * 45 <= s < 17 * 45]  # 1437 samples / 32
    assert base["steps"] == [original["steps"][k] for k in steps]
    assert base["step_loss"] == [original["step_loss"][k] for k in steps]
    assert base["seconds"] == 0.0 and base["reused"] == {"from": "original", "epochs": [b + 1, 16]}
    assert r["baseline"]["runs"][0]["name"] == "baseline#seed0"
    assert r["baseline"]["runs"][0]["reused"] == {"from": "original", "epochs": [b + 1, 16]}
    assert "reused" not in r["baseline"]["runs"][1]


def test_branching_and_forking_train_fewer_epochs_than_the_original(lr_study):
    out, r = lr_study
    # the decay at 12 parts the arms from the baseline, the shifted decay at 15 from each other
    assert r["spike"]["forks"] == {"lr.shift=+3": {"from": "baseline", "epoch": 11},
                                   "lr.decay=off": {"from": "lr.shift=+3", "epoch": 14}}
    stored = trained = 0
    for p in (out / "replicas").glob("*.json"):
        for d in json.loads(p.read_text()):
            first, last = d["reused"].get("epochs", [0, -1])
            stored += len(d["epochs"])
            trained += len(d["epochs"]) - (last - first + 1)
    # from epoch 9: baseline to 16, lr.shift=+3 to 19, lr.decay=off to 16, 2 seeds each
    assert stored == 2 * (8 + 11 + 8)
    # trained: baseline seed 1 from 9, the shift from 12, decay-off from 15 (seed 0 of the baseline is the original)
    assert trained == 8 + 2 * 8 + 2 * 2


def test_recomputed_batchnorm_statistics_remove_the_swings(tmp_path):
    r = run_study(target("bn_lag"), tmp_path, interventions=["bn.recompute"], seeds=1, executor="inline",
                  progress=False)
    (v,) = r["interventions"]
    assert v["verdict"] == "removed" and v["share"] > 0.8
    as_trained, recomputed = v["runs"][0]["y"], v["runs"][1]["y"]
    assert min(as_trained[:4]) < 0.6  # the lagging running statistics: far below the trained weights' accuracy
    assert min(recomputed[1:]) > 0.9


def test_a_study_resumes_without_redoing_finished_arms(lr_study, tmp_path):
    out, first = lr_study
    copy = tmp_path / "study"
    import shutil

    shutil.copytree(out, copy)
    (copy / "replicas" / "lr.decay=off.json").unlink()  # as if killed before this arm finished
    kept = (copy / "replicas" / "baseline.json").stat().st_mtime_ns
    again = run_study(target("lr_drop"), copy, spike=12, interventions=["lr.shift=+3", "lr.decay=off"], seeds=2,
                      metric="train_accuracy", executor="inline", progress=False)
    assert (copy / "replicas" / "baseline.json").stat().st_mtime_ns == kept
    strip = lambda d: {k: v for k, v in d.items() if k not in ("seconds", "original_seconds")}  # noqa: E731
    assert strip(again) == strip(first)
    # the baseline's file, an arm's and the kept states lost: the baseline trains again and keeps the state the
    # forked arm continues from; the other arm is not redone
    copy2 = tmp_path / "study2"
    shutil.copytree(out, copy2)
    for name in ("baseline.json", "lr.shift=+3.json"):
        (copy2 / "replicas" / name).unlink()
    for fork in copy2.glob("fork-*.pt"):
        fork.unlink()
    kept = (copy2 / "replicas" / "lr.decay=off.json").stat().st_mtime_ns
    again = run_study(target("lr_drop"), copy2, spike=12, interventions=["lr.shift=+3", "lr.decay=off"], seeds=2,
                      metric="train_accuracy", executor="inline", progress=False)
    assert (copy2 / "replicas" / "lr.decay=off.json").stat().st_mtime_ns == kept
    assert [p.name for p in copy2.glob("fork-*.pt")] == ["fork-baseline_seed1-e0011.pt"]
    assert strip(again) == strip(first)


def test_an_intervention_the_training_cannot_take_is_an_error_for_its_arm_only(tmp_path):
    r = run_study(target("constant"), tmp_path, spike=2, interventions=["lr.shift=+1", "momentum=off", "wd=off"],
                  seeds=1, executor="inline", progress=False)
    verdicts = {v["name"]: v for v in r["interventions"]}
    assert "no LR schedule" in verdicts["lr.shift=+1"]["errors"][0]
    assert "without momentum" in verdicts["momentum=off"]["errors"][0]
    assert verdicts["wd=off"]["runs"]  # the arm that could run did


def test_a_second_study_in_the_same_directory_is_refused(lr_study):
    from whyspike.errors import UsageError

    out, _ = lr_study
    with pytest.raises(UsageError, match="holds another study"):
        run_study(target("lr_drop"), out, spike=12, interventions=["lr.scale=0.5"], seeds=2, metric="train_accuracy",
                  executor="inline", progress=False)


def test_probe_verdicts_confirm_the_cause_in_the_diagnosis(lr_study):
    from whyspike.probe.fold import fold
    from whyspike.probe.spec import ReplicaResult
    from whyspike.probe.study import _diagnose_original

    out, r = lr_study
    original = ReplicaResult.from_dict(json.loads((out / "original.json").read_text()))
    _, d = _diagnose_original(original, "train_accuracy")
    assert fold(d, r)
    top = d.spikes[0].causes[0]
    assert top.id == "lr_schedule" and top.confidence >= 0.95
    assert top.evidence[0].startswith("confirmed by probe lr.")
    stochastic = [c for c in d.spikes[0].causes if c.id == "stochastic"]
    assert stochastic and stochastic[0].confidence <= 0.1


def test_probe_cli_finds_the_jump_and_runs_the_plan_its_causes_call_for(tmp_path, capsys):
    from whyspike.cli import main

    rc = main(["probe", target("lr_drop"), "--metric", "train_accuracy", "--seeds", "1", "--executor", "inline",
               "--out", str(tmp_path / "study")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Jump in train_accuracy at epoch 12" in out  # found by the detector (spike auto)
    assert "lr.shift=+3: MOVED" in out and "lr.decay=off: REMOVED" in out  # the lr_schedule plan
    assert all(len(line) <= 80 for line in out.splitlines())


def test_probe_cli_bad_target_is_one_line(tmp_path, capsys):
    from whyspike.cli import main

    assert main(["probe", str(tmp_path / "nope.py:make")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.py" in err[0] and "does not exist" in err[0]
    assert main(["probe", "no-colon"]) == 2
    assert main(["probe", target("lr_drop"), "--intervene", "lr.shfit=1"]) == 2


def test_diagnose_applies_a_probe_study_to_a_log(lr_study, tmp_path, capsys):
    from whyspike.cli import main

    out, _ = lr_study
    original = json.loads((out / "original.json").read_text())
    log = tmp_path / "log.csv"
    rows = ["epoch,train_accuracy,lr"] + [f"{e},{a},{lr}" for e, a, lr in
                                          zip(original["epochs"], original["train_accuracy"], original["lr"])]
    log.write_text("\n".join(rows) + "\n")
    assert main(["diagnose", str(log), "--probes", str(out / "result.json"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    top = doc["spikes"][0]["causes"][0]
    assert top["id"] == "lr_schedule" and top["confidence"] >= 0.95
    assert any(e.startswith("confirmed by probe lr.shift=+3") for e in top["evidence"])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["diagnose", str(log), "--probes", str(bad)]) == 1


def test_bad_study_directories_are_one_line_errors_and_a_damaged_arm_runs_again(lr_study, tmp_path, capsys):
    import shutil

    from whyspike.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["probe", target("constant"), "--out", str(blocker), "--executor", "inline"]) == 2  # click: a file
    capsys.readouterr()
    assert main(["probe", target("constant"), "--out", str(blocker / "sub"), "--executor", "inline"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be used as a study directory" in err[0]
    out, first = lr_study
    copy = tmp_path / "study"
    shutil.copytree(out, copy)
    (copy / "replicas" / "lr.shift=+3.json").write_text('[{"name": "trunc')  # damaged by hand
    again = run_study(target("lr_drop"), copy, spike=12, interventions=["lr.shift=+3", "lr.decay=off"], seeds=2,
                      metric="train_accuracy", executor="inline", progress=False)
    assert (copy / "replicas" / "lr.shift=+3.json.corrupt").exists()  # set aside, not silently overwritten
    assert {v["name"]: v["verdict"] for v in again["interventions"]} == {
        v["name"]: v["verdict"] for v in first["interventions"]}
    (copy / "study.json").write_text("{not json")
    assert main(["probe", target("lr_drop"), "--out", str(copy), "--spike", "12", "--seeds", "2",
                 "--metric", "train_accuracy", "--executor", "inline", "--intervene", "lr.shift=+3",
                 "--intervene", "lr.decay=off"]) == 1
    assert "study.json" in capsys.readouterr().err

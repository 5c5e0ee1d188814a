"""Black-box probe studies (`whyspike probe train.py`): the user's unchanged Keras script re-run per arm from the
recorded checkpoint before the jump. On a real LR-drop jump (tests/probe/data/lr_drop.py) the shifted decay moves
the jump by exactly the shift, checked against the LR's closed form and the original's own curve; the seed-0 branch
replays the original bit for bit; a resumed study redoes nothing finished; an intervention the script cannot take
is an error for its arm only; recomputed BatchNorm statistics remove the swings of a BN-lag case; and the CLI runs
a script target with its own arguments and the plan its diagnosis calls for."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

HAS_KERAS = all(importlib.util.find_spec(m) is not None for m in ("keras", "torch", "sklearn"))
pytestmark = pytest.mark.skipif(not HAS_KERAS, reason="keras, torch and sklearn are needed")

DATA = Path(__file__).resolve().parent / "data"
LR_DROP = DATA / "lr_drop.py"  # digits, noisy labels, SGD 0.9 at LR 0.2, LR / 10 at epoch 8 (a callback), 18 epochs
ARMS = ["lr.shift=+3", "adam.eps=1e-3", "skip=2"]


@pytest.fixture(scope="module", autouse=True)
def warm_process():
    from whyspike.probe.engines.blackbox import warm_up

    warm_up()
    yield


def study(out: Path, **kw):
    from whyspike.probe.script_study import run_script_study

    kw.setdefault("executor", "inline")
    kw.setdefault("progress", False)
    return run_script_study(kw.pop("script", LR_DROP), kw.pop("argv", []), out, **kw)


@pytest.fixture(scope="module")
def lr_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("lr") / "study"
    return out, study(out, spike=8, interventions=ARMS, seeds=2)


def settles_at(rep: dict) -> int | None:
    """The first epoch from which the validation accuracy stays above everything before it: its new level."""
    e, y = rep["epochs"], np.array(rep["val_accuracy"], dtype=float)
    for i in range(1, len(y)):
        if np.min(y[i:]) > np.max(y[:i]):
            return e[i]
    return None


def arm(out: Path, name: str) -> list[dict]:
    return json.loads((out / "replicas" / f"{name}.json").read_text())


def test_shifting_the_lr_drop_moves_the_jump_by_exactly_the_shift(lr_study):
    out, r = lr_study
    assert r["schema"] == "whyspike/probe-v1" and r["engine"] == "blackbox" and r["metric"] == "val_accuracy"
    assert r["spike"] == {"at": 8, "branch_epoch": 4, "horizon": 16}  # 8 - 3 - 1; 8 + 3 + 5
    original = json.loads((out / "original.json").read_text())
    assert len(original["epochs"]) == 18 and settles_at(original) == 8  # the LR drop's epoch
    shifted = arm(out, "lr.shift=+3")
    for rep in shifted:  # the decay itself moved: the LR of each epoch against its closed form
        e = np.array(rep["epochs"])
        assert e.tolist() == list(range(5, 16))  # from the branch (end of epoch 4) to the horizon
        np.testing.assert_allclose(rep["lr"], np.where(e < 11, 0.2, 0.02), rtol=1e-6)
    base = arm(out, "baseline")
    assert [rep["epochs"] for rep in base] == [list(range(5, 13))] * 2  # the unshifted arm stops 5 after the jump
    # independently of the probe's statistic: each seed reaches its new level at the drop, and 3 epochs later
    assert [settles_at(rep) for rep in base] == [8, 8] and [settles_at(rep) for rep in shifted] == [11, 11]
    v = {v["name"]: v for v in r["interventions"]}["lr.shift=+3"]
    assert v["verdict"] == "moved" and [j["at"] for j in v["jumps"]] == [11, 11]
    # the rise takes two epochs (0.83 -> 0.90 -> 0.94 in seed 0): the baseline's level change is placed at 8 or 9
    assert sorted(j["at"] for j in r["baseline"]["jumps"]) in ([8, 8], [8, 9], [9, 9])
    assert r["baseline"]["reproducible"] and 2 <= v["shift"] <= 3 and v["effect_size"] >= 2


def test_the_seed0_branch_replays_the_original_bit_for_bit(lr_study):
    out, r = lr_study
    original = json.loads((out / "original.json").read_text())
    seed0, seed1 = arm(out, "baseline")
    assert seed0["name"] == "baseline#seed0"
    steps = np.array(original["steps"])
    k = np.isin(steps, seed0["steps"])
    assert k.sum() == len(seed0["steps"]) == 8 * 41  # epochs 5-12, 41 steps each
    assert np.array_equal(np.array(original["step_loss"])[k], seed0["step_loss"])
    assert seed0["val_accuracy"] == original["val_accuracy"][5:13]
    assert r["baseline"]["replay"]["exact"] is True
    assert seed1["step_loss"] != seed0["step_loss"]  # seed 1 draws another data order: the band is a band
    assert r["seed_streams"] == ["seed.data"]  # the model has no dropout: seed.noise was refused and left out


def test_an_intervention_the_script_cannot_take_is_an_error_for_its_arm_only(lr_study):
    out, r = lr_study
    v = {v["name"]: v for v in r["interventions"]}
    assert [x["name"] for x in r["interventions"]] == ARMS
    assert v["adam.eps=1e-3"]["verdict"] == "error"
    assert v["adam.eps=1e-3"]["errors"] == [f"adam.eps=1e-3#seed{k}: adam.eps=1e-3: optimizer SGD has no epsilon "
                                            "hyper-parameter" for k in (0, 1)]
    assert v["skip=2"]["verdict"] == "error" and "not possible in a black-box Keras script" in v["skip=2"]["message"]
    assert not (out / "replicas" / "skip=2" / "seed0" / "runs").exists()  # refused before anything ran
    assert v["lr.shift=+3"]["verdict"] == "moved"  # the others ran


def test_a_resumed_study_redoes_nothing_finished(lr_study, tmp_path, monkeypatch):
    from whyspike.probe import script_study

    out, first = lr_study
    copy = tmp_path / "study"
    shutil.copytree(out, copy)  # a moved study finds its own original run and branch
    (copy / "replicas" / "lr.shift=+3.json").unlink()  # as if killed before this arm finished
    kept = {p: p.stat().st_mtime_ns for p in [copy / "original.json", copy / "replicas" / "baseline.json",
                                              *copy.glob("original/runs/*/meta.json"),
                                              *copy.glob("replicas/baseline/seed*/child.log")]}
    ran = []
    real = script_study.run_script_task

    def crashing(task):  # the worker running the arm dies: an error for that arm, nothing written
        ran.append(task["arm"])
        raise RuntimeError("worker lost")

    monkeypatch.setattr(script_study, "run_script_task", crashing)
    broken = study(copy, spike=8, interventions=ARMS, seeds=2)
    assert ran == ["lr.shift=+3"]
    v = {v["name"]: v for v in broken["interventions"]}
    assert v["lr.shift=+3"] == {"name": "lr.shift=+3", "verdict": "error", "message": "RuntimeError: worker lost",
                                "runs": []}
    assert v["adam.eps=1e-3"]["verdict"] == "error" and broken["baseline"]["jumps"] == first["baseline"]["jumps"]
    assert not (copy / "replicas" / "lr.shift=+3.json").exists()

    monkeypatch.setattr(script_study, "run_script_task", lambda task: ran.append(task["arm"]) or real(task))
    again = study(copy, spike=8, interventions=ARMS, seeds=2)
    assert ran == ["lr.shift=+3", "lr.shift=+3"]  # only the unfinished arm, again
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    strip = lambda d: {k: v for k, v in d.items() if k not in ("seconds", "original_seconds", "target")}  # noqa
    assert strip(again) == strip(first)  # bit-identical replicas: the same verdicts, numbers and curves


def test_a_second_study_in_the_same_directory_is_refused(lr_study):
    from whyspike.errors import UsageError

    out, _ = lr_study
    with pytest.raises(UsageError, match="holds another study"):
        study(out, spike=8, interventions=["lr.decay=off"], seeds=2)


def test_the_default_plan_comes_from_the_recorded_runs_causes(lr_study):
    from whyspike.probe.engines.blackbox import ScriptReplicaResult
    from whyspike.probe.script_study import _run_dir, _setup, script_plan
    from whyspike.probe.study import _diagnose_original

    out, _ = lr_study
    original = ScriptReplicaResult.from_dict(json.loads((out / "original.json").read_text()))
    setup = _setup(_run_dir(out / "original"))
    assert setup.momentum == 0.9 and setup.has_batchnorm is False and setup.eval_size == 497
    at, d = _diagnose_original(original, "train_accuracy", setup)
    assert d.spikes[0].causes[0].id == "lr_schedule"
    assert [str(i) for i in script_plan(d, at, setup, original)] == ["lr.shift=+3", "lr.decay=off"]
    flat = ScriptReplicaResult.from_dict(json.loads((out / "original.json").read_text()))
    flat.lr[:] = 0.2  # the same causes, but no LR schedule to shift: no LR arms
    assert script_plan(d, at, setup, flat) == []


def test_recomputed_batchnorm_statistics_remove_the_swings_of_a_bn_lag_case(tmp_path):
    r = study(tmp_path / "bn", script=DATA / "bn_lag.py", interventions=["bn.recompute", "bn.train_mode"],
              seeds=1)
    v = {v["name"]: v for v in r["interventions"]}
    bn = v["bn.recompute"]
    running, recomputed = (np.array(run["y"], dtype=float) for run in bn["runs"])
    assert len(running) == 12 and np.isfinite(recomputed).all()
    share = 1 - np.var(np.diff(recomputed), ddof=1) / np.var(np.diff(running), ddof=1)
    assert bn["share"] == pytest.approx(share) and share > 0.8 and bn["verdict"] == "removed"
    assert np.min(recomputed[2:]) > np.median(running)
    original = json.loads((tmp_path / "bn" / "original.json").read_text())
    assert running.tolist() == original["val_accuracy"]  # the detailed re-run trained the original again, exactly
    assert v["bn.train_mode"]["verdict"] == "error" and "black-box" in v["bn.train_mode"]["message"]


WRAPPER = """
import runpy
import sys

if sys.argv[1:] != ["--check", "yes"]:
    raise SystemExit("unexpected arguments " + " ".join(sys.argv[1:]))
runpy.run_path(PATH, run_name="__main__")
"""


def test_the_cli_runs_a_script_target_with_its_arguments_and_the_default_plan(tmp_path, capsys):
    from whyspike.cli import main

    script = tmp_path / "train.py"
    script.write_text(WRAPPER.replace("PATH", repr(str(LR_DROP))))
    rc = main(["probe", str(script), "--metric", "train_accuracy", "--seeds", "1", "--executor", "inline",
               "--out", str(tmp_path / "study"), "--", "--check", "yes"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Jump in train_accuracy at epoch 9" in out  # found by the detector (spike auto)
    assert "lr.shift=+3: MOVED" in out and "lr.decay=off: REMOVED" in out  # the lr_schedule plan
    assert all(len(line) <= 80 for line in out.splitlines())
    r = json.loads((tmp_path / "study" / "result.json").read_text())
    assert r["argv"] == ["--check", "yes"] and r["spike"]["branch_epoch"] == 5

    assert main(["probe", str(script), "--out", str(tmp_path / "bad"), "--executor", "inline"]) == 1  # no args
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the original run failed" in err[0] and "unexpected arguments" in err[0]
    assert main(["probe", str(tmp_path / "nope.py")]) == 1
    assert "nope.py: no such training script" in capsys.readouterr().err
    assert main(["probe", f"{DATA.parent / 'targets.py'}:lr_drop", "--", "--lr", "1"]) == 2
    assert "only a script target" in capsys.readouterr().err

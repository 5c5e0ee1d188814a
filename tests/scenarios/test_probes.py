"""The probes `whyspike demo` runs after each verdict, CI-sized: each settles its scenario's cause (the verdict is
checked against the replicas' own curves and schedules, computed here), folding the verdicts into the diagnosis
names the ground truth first, and the demo writes a report.html holding the verdict and the probe section."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from whyspike import scenarios
from whyspike.diagnosis import diagnose
from whyspike.importers import load_run
from whyspike.scenarios._probes import SEEDS

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is needed")


def probed(name, tmp_path):
    from whyspike.scenarios._plans import run_probes

    sc = scenarios.get(name)
    run_dir = sc.record(tmp_path, "ci")
    d = diagnose(load_run(run_dir))
    outcome = sc.outcome(d)
    assert outcome.ok, outcome.summary()
    p = run_probes(sc, run_dir, d, size="ci")
    return sc, run_dir, d, outcome, p


def verdicts(p) -> dict:
    return {v["name"]: v for v in p.doc["interventions"]}


def curves(runs) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.array(r["x"], dtype=float), np.array([np.nan if v is None else v for v in r["y"]], dtype=float))
            for r in runs]


def folded_top(outcome):
    top = outcome.jump.causes[0]
    return top.id, top.confidence, top.evidence[0]


def test_lr_step_decay_shifting_the_decay_moves_the_jump_by_exactly_the_shift(tmp_path):
    sc, run_dir, d, outcome, p = probed("lr-step-decay", tmp_path)
    assert outcome.jump.at == 20 and p.kind == "study"
    v = verdicts(p)
    assert set(v) == set(sc.probe_plan) - {"seeds"}
    shift = v["lr.shift=+3"]
    assert shift["verdict"] == "moved"
    assert [j["at"] for j in shift["jumps"]] == [23] * SEEDS["ci"]  # every replica: the recorded 20, plus 3
    assert all(abs(j["at"] - 20) <= 1 for j in p.doc["baseline"]["jumps"])
    assert v["lr.decay=off"]["verdict"] == "removed"
    # the replicas really ran the shifted schedule: LR 0.2 through epoch 22, 0.02 from 23 (independent of the verdict)
    reps = json.loads((run_dir / "probes" / "study" / "replicas" / "lr.shift=+3.json").read_text())
    for r in reps:
        lr = dict(zip(r["epochs"], r["lr"]))
        assert lr[22] == pytest.approx(0.2) and lr[23] == pytest.approx(0.02)
    # the treated curves themselves: flat before 23, up from 23 (a change of level a person sees)
    for x, y in curves(shift["runs"]):
        before, after = y[(x >= 20) & (x < 23)].mean(), y[(x >= 23) & (x < 26)].mean()
        assert after - before > 0.02
    top, conf, first = folded_top(outcome)
    assert p.folded and p.confirmed and top == "lr_schedule" and conf >= 0.95
    assert first.startswith("confirmed by probe lr.")


def test_batchnorm_lag_recomputed_statistics_remove_the_swings(tmp_path):
    sc, run_dir, d, outcome, p = probed("batchnorm-lag", tmp_path)
    v = verdicts(p)["bn.recompute"]
    assert v["verdict"] == "removed" and v["share"] > 0.8
    (_, as_trained), (_, recomputed) = curves(v["runs"])
    # independently: the swings of the eval-mode accuracy, with and without the running statistics
    assert np.var(np.diff(recomputed)) < 0.1 * np.var(np.diff(as_trained))
    assert np.nanmin(recomputed[3:]) > np.nanmedian(as_trained)
    top, conf, first = folded_top(outcome)
    assert p.confirmed and top == "batchnorm_statistics" and conf >= 0.95
    assert first.startswith("confirmed by probe bn.recompute")


def test_stochastic_jump_does_not_come_back_with_other_seeds(tmp_path):
    sc, run_dir, d, outcome, p = probed("stochastic-jump", tmp_path)
    at = outcome.jump.at
    assert p.doc["baseline"]["reproducible"] is False and not p.doc["interventions"]
    # independently: the recorded spike's height over the ten epochs before it, against each seed's at that epoch
    rec = d.run.series["loss"]
    i = int(np.flatnonzero(rec.x == at)[0])
    height = rec.y[i] - np.median(rec.y[i - 10:i])
    for x, y in curves(p.doc["baseline"]["runs"]):
        k = int(np.flatnonzero(x == at)[0])
        assert y[k] - np.median(y[k - 10:k]) < 0.5 * height
    top, conf, first = folded_top(outcome)
    assert p.confirmed and top == "stochastic" and conf >= 0.8
    assert first.startswith("supported by probe seeds")


def test_catapult_half_the_learning_rate_removes_it(tmp_path):
    sc, run_dir, d, outcome, p = probed("catapult", tmp_path)
    v = verdicts(p)["lr.scale=0.5"]
    assert v["verdict"] == "removed"
    ((xb, base),), ((xt, half),) = curves(p.doc["baseline"]["runs"]), curves(v["runs"])
    low = int(np.argmin(base[:15]))
    assert base[low:60].max() > 5 * base[low]  # the replica catapults as the recording did ...
    assert np.all(half[1:60] <= np.minimum.accumulate(half)[:59] * 1.01)  # ... at half the LR it only descends
    top, conf, _ = folded_top(outcome)
    assert p.confirmed and top == "optimization_instability" and conf >= 0.95


def test_small_eval_set_is_settled_by_the_binomial_noise_without_retraining(tmp_path):
    sc, run_dir, d, outcome, p = probed("small-eval-set", tmp_path)
    assert p.kind == "check" and p.doc is None and p.confirmed
    y = d.run.series["val_accuracy"].y[10:]
    one = math.sqrt(y.mean() * (1 - y.mean()) / 50)
    assert f"binomial s.d. of {one:.3f}" in p.check
    assert p.check in next(f.message for f in d.findings if f.id == "small_eval_set")  # carried into the report


def test_every_scenario_has_a_probe_plan_runner():
    from whyspike.scenarios._plans import PLANS

    assert set(PLANS) == set(scenarios.names())


def test_the_demo_writes_a_report_with_the_verdict_and_the_probes(tmp_path, capsys):
    from whyspike.cli import main

    assert main(["demo", "catapult", "--size", "ci", "--out", str(tmp_path)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    report = tmp_path / "catapult" / "report.html"
    assert f"report: {report}" in text
    assert "lr.scale=0.5: REMOVED" in text
    assert "with the probes: optimization_instability 95% named first — the ground truth, confirmed" in text
    html = report.read_text()
    assert 'id="verdict"' in html and 'id="probes"' in html
    assert "optimization_instability" in html and "lr.scale=0.5" in html and ">removed<" in html
    assert "confirmed by probe lr.scale=0.5" in html  # the folded evidence
    # the probe files stay inside the run directory, which still reads as a run
    assert (tmp_path / "catapult" / "probes").is_dir()
    assert load_run(tmp_path / "catapult").series["step/loss"] is not None


def test_the_seed_tour_skips_probes_that_would_break_its_budget():
    import time

    from whyspike.cli import demo

    sc = scenarios.get("seed-ex1-intended")  # 2 arms x 2 seeds at CI size: 4 re-runs
    assert demo._over_budget(sc, "ci", time.monotonic(), seconds=5.0) is None
    late = time.monotonic() - (demo.TOUR_BUDGET - 25.0)  # 25 s left: 4 x 5 s plus 2 x 5 s in reserve do not fit
    why = demo._over_budget(sc, "ci", late, seconds=5.0)
    assert why.startswith("~4 re-runs of ~5 s would not fit") and "whyspike demo seed-ex1-intended" in why

"""WHYSPIKE_INTERVENE in a hand-written PyTorch loop (tests/record/data/torch_multistep.py: two parameter groups,
SGD momentum 0.9, weight decay 1e-3, MultiStepLR x0.1 at epochs 3 and 5, 6 epochs of 4 steps), run through
``whyspike run``'s injection. Each intervention is checked twice against hand-computed ground truth: the recorded
per-step LR / momentum / weight decay, and the final weights, which must equal those of the same loop trained
without whyspike and without a scheduler, its LR, momentum and weight decay set by hand to the intervened values."""

from __future__ import annotations

import io
import json
import runpy
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("pandas")

SCRIPT = Path(__file__).resolve().parent / "data" / "torch_multistep.py"
SPE = 4  # 128 samples, batches of 32
USER = [1, 1, 1, 0.1, 0.1, 0.01]  # the scheduler's factor of each epoch


def run(tmp_path: Path, monkeypatch, interventions: dict):
    """Run the script under the injection with these interventions: (outcome, unapplied, steps frame, weights)."""
    import pandas as pd
    import torch

    from whyspike.record.inject import Injection, Options

    monkeypatch.setenv("WHYSPIKE_INTERVENE", json.dumps(interventions))
    weights = tmp_path / "w.pt"
    with Injection(SCRIPT, Options(out=tmp_path / "runs", live=False, threads=1), out_stream=io.StringIO()) as inj:
        outcome = inj.run([str(weights)])
        unapplied = inj.intervener.unapplied()
    steps = None
    if outcome.runs:
        parts = sorted((outcome.runs[0].path / "steps").glob("part-*.parquet"))
        steps = pd.concat([pd.read_parquet(p) for p in parts]).sort_values("step").reset_index(drop=True)
    return outcome, unapplied, steps, (torch.load(weights) if weights.exists() else None)


def by_hand(**kw):
    return runpy.run_path(str(SCRIPT))["train"](**kw)


def per_step(factors, base=0.1):
    return np.repeat(np.asarray(factors, dtype=float) * base, SPE)


CASES = {  # intervention -> (each epoch's LR factor, momentum, weight decay) applied
    "lr.scale=0.5": ({"lr.scale": "0.5"}, [f * 0.5 for f in USER], 0.9, 1e-3),
    "lr.decay=off": ({"lr.decay": "off"}, [1.0] * 6, 0.9, 1e-3),
    "lr.shift=+2": ({"lr.shift": "+2"}, [1, 1, 1, 1, 1, 0.1], 0.9, 1e-3),  # LR(e) = LR_user(e - 2), 1 before
    "lr.hold=4": ({"lr.hold": "4"}, [1, 1, 1, 0.1, 0.1, 0.1], 0.9, 1e-3),  # epoch 5's drop held off
    "momentum=off": ({"momentum": "off"}, [f / (1 - 0.9) for f in USER], 0.0, 1e-3),  # the same effective step
    "momentum=0.5": ({"momentum": "0.5"}, USER, 0.5, 1e-3),
    "wd=off": ({"wd": "off"}, USER, 0.9, 0.0),
    "wd.scale=3+lr.scale=2": ({"wd.scale": "3", "lr.scale": "2"}, [f * 2 for f in USER], 0.9, 3e-3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_intervention_changes_exactly_its_factor(tmp_path, monkeypatch, case):
    items, factors, momentum, wd = CASES[case]
    outcome, unapplied, steps, weights = run(tmp_path, monkeypatch, items)
    assert outcome.exit_code == 0 and outcome.error is None and unapplied == []
    assert steps["step"].tolist() == list(range(6 * SPE))
    # recorded: the applied values (group 0), step by step
    np.testing.assert_allclose(steps["lr"], per_step(factors), rtol=1e-9)
    np.testing.assert_allclose(steps["momentum"], momentum, rtol=1e-12)
    np.testing.assert_allclose(steps["weight_decay"], wd, rtol=1e-12)
    # trained: every group took them (the bias group's LR is 0.05), against the loop trained by hand
    expected = by_hand(factors=factors, momentum=momentum, weight_decay=wd)
    for k, v in expected.items():
        np.testing.assert_allclose(weights[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-7, err_msg=k)
    meta = json.loads((outcome.runs[0].path / "meta.json").read_text())
    assert meta["probe"]["applied"] == sorted(items)


def test_without_interventions_the_loop_trains_as_written(tmp_path, monkeypatch):
    outcome, unapplied, steps, weights = run(tmp_path, monkeypatch, {"seed": "0"})
    assert outcome.error is None and unapplied == []
    np.testing.assert_allclose(steps["lr"], per_step(USER), rtol=1e-12)
    expected = by_hand()  # scheduler-free: the same factors by hand
    for k, v in by_hand(factors=USER).items():
        np.testing.assert_allclose(expected[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(weights[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-7)


ADAM = """
import torch
torch.manual_seed(0)
x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
model = torch.nn.Linear(4, 3)
opt = torch.optim.Adam(model.parameters(), lr=0.01)
for epoch in range(2):
    for xb, yb in data:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
open("finished", "w").write("yes")
"""

NO_LOADER = ADAM.replace("for xb, yb in data:", "for xb, yb in [(x[:32], y[:32]), (x[32:], y[32:])]:")


@pytest.mark.parametrize("items, expected", [
    ({"momentum": "off"}, "momentum=off: optimizer Adam has no momentum hyper-parameter (its first-moment decay is "
                          "betas[0], not a momentum)"),
    ({"wd": "off"}, "wd=off: optimizer Adam has no weight decay (weight_decay=0 in every parameter group)"),
    ({"lr.shift": "-2"}, "lr.shift=-2: advancing a PyTorch script's schedule needs"),
])
def test_an_intervention_the_optimizer_cannot_take_stops_the_script_with_one_line(tmp_path, monkeypatch, items,
                                                                                     expected):
    from whyspike.record._intervene_plan import InterventionError
    from whyspike.record.inject import Injection, Options

    script = tmp_path / "adam.py"
    script.write_text(ADAM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WHYSPIKE_INTERVENE", json.dumps(items))
    with Injection(script, Options(out=tmp_path / "runs", live=False, threads=1), out_stream=io.StringIO()) as inj:
        outcome = inj.run([])
    assert isinstance(outcome.error, InterventionError) and str(outcome.error).startswith(expected)
    assert "\n" not in str(outcome.error) and not (tmp_path / "finished").exists()


def test_adam_takes_eps_and_beta2_and_a_loop_without_dataloader_cannot_be_shifted(tmp_path, monkeypatch):
    from whyspike.record._intervene_plan import InterventionError
    from whyspike.record.inject import Injection, Options

    monkeypatch.chdir(tmp_path)
    for name, code, items in (("adam.py", ADAM, {"adam.beta2": "0.9", "adam.eps": "0.001", "seed.data": "1"}),
                              ("plain.py", NO_LOADER, {"lr.shift": "1"})):
        (tmp_path / name).write_text(code)
        monkeypatch.setenv("WHYSPIKE_INTERVENE", json.dumps(items))
        with Injection(tmp_path / name, Options(out=tmp_path / "runs", live=False, threads=1),
                       out_stream=io.StringIO()) as inj:
            outcome = inj.run([])
            unapplied = inj.intervener.unapplied()
        if name == "adam.py":
            assert outcome.error is None and unapplied == ["seed.data"]  # Model.fit's: not a PyTorch loop's
            [r] = outcome.runs
            import pandas as pd

            steps = pd.concat(pd.read_parquet(p) for p in (r.path / "steps").glob("part-*.parquet"))
            assert set(steps["beta2"]) == {0.9} and set(steps["beta1"]) == {0.9}  # beta1 untouched
        else:
            assert isinstance(outcome.error, InterventionError)
            assert str(outcome.error).startswith("lr.shift=1 counts epochs, and the script trains without iterating "
                                                 "a torch DataLoader")


def test_whyspike_run_reports_an_intervention_error_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "adam.py").write_text(ADAM)
    env = dict(os.environ, WHYSPIKE_INTERVENE='{"momentum": "off"}')
    done = subprocess.run([sys.executable, "-m", "whyspike", "run", "-q", "--threads", "1", "adam.py"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("whyspike: error:")]
    assert len(errors) == 1 and "momentum=off: optimizer Adam has no momentum" in errors[0]
    assert "Traceback" not in done.stderr



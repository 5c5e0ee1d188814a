"""The landscape of recorded runs: the catapult and the deep-linear plateau of MECHANISMS.md, Adam's preconditioner
against Adam's real step, bad input through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import landscape_models as lm  # noqa: E402

from whyspike.cli import main  # noqa: E402
from whyspike.errors import InputError  # noqa: E402
from whyspike.landscape import ModelLoss, analyze_run, list_checkpoints, load_state, top_eigenvalues  # noqa: E402
from whyspike.landscape.sources import ProbeSetup  # noqa: E402

HERE = Path(__file__).resolve().parent
FACTORIES = HERE / "landscape_models.py"


@pytest.fixture(scope="module")
def catapult_run(tmp_path_factory):
    import os

    os.environ["WHYSPIKE_CHECKPOINT_BUDGET"] = "1"
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("catapult") / "run"
    lam0, lr, losses = lm.record_catapult(d)
    return d, lam0, lr, losses


def test_catapult_sharpness_falls_below_2_over_lr_during_the_spike(catapult_run):
    run, lam0, lr, losses = catapult_run
    # the MECHANISMS.md setting: lambda_0 ~ 19, lr = 1.5 * 2 / lambda_0, the loss rises then falls below its start
    assert 17 <= lam0 <= 21
    peak = max(range(len(losses)), key=losses.__getitem__)
    assert losses[peak] > 2 * losses[0] and losses[-1] < 0.5 * losses[0]
    model, loss_fn, batches = lm.catapult_factory()
    rep = analyze_run(run, setup=ProbeSetup(model, loss_fn, batches, []), spike=None, what=("hessian",),
                      radius=30, trace_samples=0)
    pts = {p.epoch: p for p in rep.curvature}
    assert len(pts) == len(losses)  # every epoch's checkpoint (one GD step each)
    thr = 2 / lr
    for p in pts.values():
        assert p.threshold == pytest.approx(thr) and p.threshold_rule == "2/lr"
    # before the spike: lambda above 2/lr (ratio 1.5 by construction), measured independently of the recorder
    assert pts[0].lambda_max > thr and pts[0].ratio == pytest.approx(1.5, rel=0.02)
    # during the spike lambda falls below 2/lr, and stays there once the loss is back down
    epoch_of_peak = peak - 1  # checkpoint e holds the weights after e+1 steps: step peak's loss is at checkpoint peak-1
    low = [e for e, p in pts.items() if p.lambda_max < thr]
    assert low and min(low) <= epoch_of_peak + 3
    assert all(pts[e].lambda_max < thr for e in range(epoch_of_peak + 4, len(losses)))
    assert min(p.lambda_max for p in pts.values()) < 0.85 * thr


def test_catapult_evidence_via_the_cli(catapult_run, capsys, tmp_path):
    run = catapult_run[0]
    rc = main(["landscape", str(run), "--factory", f"{FACTORIES}:catapult_factory", "--what", "hessian,interp,surface",
               "--grid", "5", "--format", "json", "-o", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(out)
    assert doc == json.loads((tmp_path / "out.json").read_text())
    assert doc["schema"] == "whyspike/landscape-v1" and doc["spike"]["source"] == "auto"
    assert doc["checkpoints"]["before"]["epoch"] < doc["checkpoints"]["after"]["epoch"]
    ev = {e["cause"]: e for e in doc["evidence"]}
    inst = ev["optimization_instability"]
    assert inst["confidence_delta"] >= 0.3
    assert any("above the stability threshold" in s for s in inst["evidence"])
    assert len(doc["surface"]["train_loss"]) == 5 and doc["surface"]["kind"] == "pca"
    assert doc["interpolation"]["alphas"][0] == -0.5
    assert "train mode" in doc["curvature_mode"]


@pytest.fixture(scope="module")
def dln_run(tmp_path_factory):
    import os

    os.environ["WHYSPIKE_CHECKPOINT_BUDGET"] = "1"
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("dln") / "run"
    return d, lm.record_dln(d)


def test_deep_linear_plateau_is_read_as_a_plateau_escape(dln_run):
    run, losses = dln_run
    # MECHANISMS.md: flat at the start (loss = 1/2 sum of squared target singular values = 10.625), then the
    # strongest mode (singular value 4) is learned: the loss drops by 16/2 = 8
    assert losses[0] == pytest.approx(10.625, abs=0.01) and losses[15] == pytest.approx(10.625, abs=0.01)
    assert losses[-1] == pytest.approx(10.625 - 8, abs=0.05)
    model, loss_fn, batches = lm.dln_factory()
    rep = analyze_run(run, setup=ProbeSetup(model, loss_fn, batches, []), spike="auto", what=("hessian", "interp"))
    d = rep.to_dict()
    assert d["spike"]["direction"] == "down"
    drop = next(i for i, v in enumerate(losses) if v < 9)
    assert d["checkpoints"]["before"]["epoch"] < drop <= d["checkpoints"]["after"]["epoch"]
    curv = {p["epoch"]: p for p in d["curvature"]}
    first = min(curv)
    # on the plateau: tiny gradient and a saddle (negative curvature larger than the positive one)
    assert curv[first]["grad_norm"] < 0.05 * max(p["grad_norm"] for p in curv.values())
    assert curv[first]["lambda_min"] < 0 and abs(curv[first]["lambda_min"]) > curv[first]["lambda_max"]
    # after the first mode is learned the top curvature is that mode's: about 3 * s^(4/3) = 19.05 for s = 4
    assert curv[max(curv)]["lambda_max"] == pytest.approx(3 * 4 ** (4 / 3), rel=0.02)
    ev = {e["cause"]: e for e in d["evidence"]}
    assert ev["plateau_escape"]["confidence_delta"] >= 0.25
    assert any("plateau" in s for s in ev["plateau_escape"]["evidence"])
    assert ev["optimization_instability"]["confidence_delta"] < 0
    assert d["interpolation"]["monotonic"] is True


def test_adam_preconditioner_matches_adams_own_step(tmp_path):
    model, opt = lm.record_bn_adam(tmp_path / "run")
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    ml = ModelLoss(*lm.bn_factory())
    cs = load_state(ckpt, ml)
    info = cs.optimizer
    assert info.kind == "adam" and info.threshold()[0] == pytest.approx(38 / 0.01)
    assert info.step == 12 and torch.equal(cs.params, torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    # one more real Adam step from the same state: theta_new - theta = -lr * P^-1 m_new, P from the new state
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    xb, yb = lm.bn_factory()[2][0]
    opt.zero_grad()
    F.cross_entropy(model(xb), yb).backward()
    opt.step()
    new = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    m = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in model.parameters()]).double()
    info.second_moment = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in model.parameters()]).double()
    info.step = 13
    assert torch.allclose(new - theta, -0.01 * m / info.preconditioner(), atol=1e-7, rtol=1e-5)


def test_adam_run_reports_the_preconditioned_sharpness(tmp_path):
    lm.record_bn_adam(tmp_path / "run")
    model, loss_fn, batches = lm.bn_factory()
    rep = analyze_run(tmp_path / "run", setup=ProbeSetup(model, loss_fn, batches, []), spike=None,
                      what=("hessian", "gns"), trace_samples=8)
    p = rep.curvature[-1]
    assert p.compared == "preconditioned_lambda_max" and p.preconditioned_lambda_max > 0
    assert p.threshold == pytest.approx(38 / 0.01) and p.trace is not None and p.trace_stderr > 0
    # lambda_max(P^-1 H) against an independent dense computation at the same checkpoint
    ml = ModelLoss(model, loss_fn, batches)
    cs = load_state(rep.after, ml)
    from whyspike.landscape.sources import apply_state

    apply_state(ml, cs)
    with ml.hessian() as op:
        h = torch.stack([op(e) for e in torch.eye(ml.n)]).double()
    d = cs.optimizer.preconditioner().rsqrt()
    exact = float(torch.linalg.eigvalsh(d[:, None] * (h + h.T) / 2 * d[None, :])[-1])
    assert p.preconditioned_lambda_max == pytest.approx(exact, rel=1e-3)
    assert rep.noise_scale["batch_size"] == 32 and rep.noise_scale["batches"] == 3


# -- bad input --------------------------------------------------------------------------------------------------
def test_checkpoint_of_another_architecture_is_one_line_naming_it(tmp_path, capsys):
    lm.record_bn_adam(tmp_path / "run", epochs=2)
    rc = main(["landscape", str(tmp_path / "run"), "--factory", f"{FACTORIES}:wide_factory", "--spike", "last"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "epoch-0000" in err and "'0.weight'" in err and "different architecture" in err


def test_torch_run_without_factory_says_what_is_missing(tmp_path, capsys):
    lm.record_bn_adam(tmp_path / "run", epochs=2)
    rc = main(["landscape", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1 and "--factory FILE.py:FUNC" in err and "architecture" in err


def test_factory_that_gives_no_data_and_no_probe_data(tmp_path, capsys):
    lm.record_bn_adam(tmp_path / "run", epochs=2)
    f = tmp_path / "f.py"
    f.write_text(f"import sys; sys.path.insert(0, {str(HERE)!r})\nimport landscape_models as lm\n"
                 "def make():\n    m, l, _ = lm.bn_factory()\n    return m, l\n")
    rc = main(["landscape", str(tmp_path / "run"), "--factory", f"{f}:make"])
    assert rc == 1 and "probe_data/x.npy" in capsys.readouterr().err
    # with a stored data sample the same factory is enough
    import numpy as np

    x, y = lm.blobs()
    (tmp_path / "run" / "probe_data").mkdir()
    np.save(tmp_path / "run" / "probe_data" / "x.npy", x.numpy())
    np.save(tmp_path / "run" / "probe_data" / "y.npy", y.numpy())
    rc = main(["landscape", str(tmp_path / "run"), "--factory", f"{f}:make", "--spike", "last", "--what", "gns,interp"])
    out = capsys.readouterr().out
    assert rc == 0 and "probe_data/ (96 examples" in out and "gradient noise scale" in out


def test_nan_loss_on_part_of_the_grid_is_kept(tmp_path, capsys):
    lm.record_bn_adam(tmp_path / "run", epochs=3)
    rc = main(["landscape", str(tmp_path / "run"), "--factory", f"{FACTORIES}:bn_factory", "--spike", "last",
               "--what", "surface", "--surface", "random", "--span", "1e38", "--grid", "5", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    cells = doc["surface"]["train_loss"]
    assert doc["surface"]["nan_cells"] > 0 and any(v is None for row in cells for v in row)
    assert cells[2][2] is not None and math.isfinite(cells[2][2])  # the centre itself is fine
    assert any("NaN" in w for w in doc["warnings"])


def test_spike_epoch_without_checkpoints_around_it(tmp_path, capsys):
    lm.record_bn_adam(tmp_path / "run", epochs=2)
    rc = main(["landscape", str(tmp_path / "run"), "--factory", f"{FACTORIES}:bn_factory", "--spike", "0"])
    assert rc == 1 and "no checkpoint on both sides of epoch 0" in capsys.readouterr().err
    with pytest.raises(InputError, match="holds no checkpoints"):
        analyze_run(tmp_path, setup=ProbeSetup(*lm.bn_factory(), []))


def test_text_output_and_progress_bar(catapult_run, capsys):
    import io

    from rich.console import Console

    from whyspike.cli.landscape import _progress, _ticker

    run = catapult_run[0]
    seen = []
    model, loss_fn, batches = lm.catapult_factory()
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with _progress(console) as progress:
        tick = _ticker(progress)
        analyze_run(run, setup=ProbeSetup(model, loss_fn, batches, []), what=("hessian", "surface"), grid=3,
                    progress=lambda *a: (seen.append(a), tick(*a)))
    assert ("curvature", 1, len([a for a in seen if a[0] == "curvature"])) in seen or seen
    assert {a[0] for a in seen} == {"curvature", "surface"} and seen[-1] == ("surface", 3, 3)
    rc = main(["landscape", str(run), "--factory", f"{FACTORIES}:catapult_factory", "--what", "hessian,interp"])
    out = capsys.readouterr().out
    assert rc == 0 and "lam_max" in out and "threshold: 2/lr" in out and "optimization_instability +0.45" in out


def test_public_api_and_evidence_without_torch():
    import subprocess
    import sys

    import whyspike.landscape as wl

    for name in wl.__all__:
        assert getattr(wl, name) is not None, name
    code = ("import sys, whyspike.landscape.evidence as e; assert 'torch' not in sys.modules, 'torch imported'; "
            "print(len(e.landscape_evidence({'checkpoints': {}, 'curvature': []})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"


def test_diagnose_folds_a_landscape_report_into_the_causes(catapult_run, capsys, tmp_path):
    run = catapult_run[0]
    out = tmp_path / "landscape.json"
    assert main(["landscape", str(run), "--factory", f"{FACTORIES}:catapult_factory", "--what", "hessian",
                 "--format", "json", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(run), "--format", "json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["diagnose", str(run), "--landscape", str(out), "--format", "json"]) == 0
    folded = json.loads(capsys.readouterr().out)
    at = json.loads(out.read_text())["spike"]["at"]
    spike = next(s for s in folded["spikes"] if abs(s["at"] - at) <= 1)
    before = next(s for s in plain["spikes"] if abs(s["at"] - at) <= 1)
    inst = next(c for c in spike["causes"] if c["id"] == "optimization_instability")
    old = next((c["confidence"] for c in before["causes"] if c["id"] == "optimization_instability"), 0.0)
    assert inst["confidence"] >= min(1.0, old + 0.3) - 0.01
    assert inst["evidence"][0].startswith("landscape: ")
    assert spike["causes"][0]["id"] == "optimization_instability"
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "whyspike/probe-v1"}')
    assert main(["diagnose", str(run), "--landscape", str(bad)]) == 1

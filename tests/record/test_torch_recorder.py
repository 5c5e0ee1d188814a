"""The plain-PyTorch recorder on real tiny trainings: every recorded value checked against an independent computation."""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import whyspike  # noqa: E402
from whyspike.diagnosis import diagnose  # noqa: E402
from whyspike.errors import UsageError  # noqa: E402
from whyspike.record.store import RunWriter  # noqa: E402
from whyspike.record.torch import Recorder, install_global_hooks, load_checkpoint  # noqa: E402


def fit_batch(model, opt, rec, xb, yb, outputs=False):
    """One plain training step on (xb, yb), recorded with rec.step (with logits and labels when ``outputs``)."""
    opt.zero_grad()
    out = model(xb)
    loss = F.cross_entropy(out, yb)
    loss.backward()
    opt.step()
    rec.step(loss=loss, **({"output": out, "target": yb} if outputs else {}))
    return loss


def teacher_data(n=256, d=10, classes=4, noise=0.0, seed=0):
    """Labels from a random linear teacher, a fraction ``noise`` of them replaced at random."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, classes, generator=g)
    x = torch.randn(n, d, generator=g)
    y = (x @ w).argmax(1)
    flip = torch.rand(n, generator=g) < noise
    y[flip] = torch.randint(0, classes, (int(flip.sum()),), generator=g)
    xv = torch.randn(max(n // 2, 64), d, generator=g)
    return x, y, xv, (xv @ w).argmax(1)


def mlp(d=10, classes=4, hidden=32, bn=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(d, hidden)] + ([nn.BatchNorm1d(hidden, momentum=0.01)] if bn else []) + \
        [nn.ReLU(), nn.Linear(hidden, classes)]
    return nn.Sequential(*layers)


def batches(x, y, bs, seed=None):
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) if seed is not None \
        else torch.arange(len(x))
    for i in range(0, len(x), bs):
        j = idx[i:i + bs]
        yield x[j], y[j]


def read(run_dir, name):
    s = whyspike.load_run(run_dir).series[name]
    return s.x, s.y


def hand_grad_norm(model):
    return math.sqrt(sum(float(p.grad.norm()) ** 2 for p in model.parameters() if p.grad is not None))


# ------------------------------------------------------------------------------------- learning rate per step


def onecycle_formula(i, total, max_lr, pct=0.3, div=25.0, final_div=1e4, base_m=0.85, max_m=0.95):
    """torch's OneCycleLR (cos annealing, two phases) written out: (lr, momentum) applied at optimizer step i."""
    def cos(start, end, p):
        return end + (start - end) / 2.0 * (math.cos(math.pi * p) + 1)

    initial, end1, end2 = max_lr / div, float(pct * total) - 1, total - 1
    low = initial / final_div
    if i <= end1:
        p = i / end1
        return cos(initial, max_lr, p), cos(max_m, base_m, p)
    p = (i - end1) / (end2 - end1)
    return cos(max_lr, low, p), cos(base_m, max_m, p)


def test_lr_and_momentum_per_step_follow_onecycle(tmp_path):
    x, y, _, _ = teacher_data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    total = 40
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=total)
    rec = Recorder(opt, model, tmp_path, scheduler=sched, live=False, checkpoints=0)
    for i, (xb, yb) in enumerate(batches(torch.cat([x] * 3), torch.cat([y] * 3), 16)):
        if i == total:
            break
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        sched.step()
    rec.close()
    steps, lr = read(tmp_path, "step/lr")
    _, mom = read(tmp_path, "step/momentum")
    _, wd = read(tmp_path, "step/weight_decay")
    expected = np.array([onecycle_formula(i, total, 0.5) for i in range(total)])
    assert steps.tolist() == list(range(total))
    np.testing.assert_allclose(lr, expected[:, 0], rtol=1e-9)
    np.testing.assert_allclose(mom, expected[:, 1], rtol=1e-9)
    assert np.all(wd == 1e-4)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["optimizer"] == "SGD" and meta["lr_schedule"]["class"] == "OneCycleLR"
    assert meta["lr_schedule"]["total_steps"] == total


def test_per_epoch_step_lr_on_both_axes(tmp_path):
    x, y, _, _ = teacher_data(n=64)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    rec = Recorder(opt, model, tmp_path, scheduler=sched, live=False, checkpoints=0)
    for _ in range(6):
        for xb, yb in batches(x, y, 16):
            fit_batch(model, opt, rec, xb, yb)
        sched.step()
        rec.epoch_end()
    rec.close()
    steps, lr = read(tmp_path, "step/lr")
    np.testing.assert_allclose(lr, [0.01 * 0.5 ** ((s // 4) // 2) for s in steps], rtol=1e-12)
    epochs, elr = read(tmp_path, "lr")
    assert epochs.tolist() == list(range(6))
    np.testing.assert_allclose(elr, [0.01 * 0.5 ** (e // 2) for e in range(6)], rtol=1e-12)
    _, b1 = read(tmp_path, "step/beta1")
    assert np.all(b1 == 0.8)
    assert json.loads((tmp_path / "meta.json").read_text())["steps_per_epoch"] == 4


# ---------------------------------------------------------------------------------- gradient norm before clip


@pytest.mark.parametrize("clip", [None, 0.05, "inf-norm"])
def test_grad_norm_is_the_norm_before_clipping(tmp_path, clip):
    x, y, _, _ = teacher_data(n=128)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0)
    by_hand, after_clip = [], []
    for xb, yb in batches(x, y, 16):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        by_hand.append(hand_grad_norm(model))
        if clip == "inf-norm":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01, norm_type=float("inf"))
        elif clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        after_clip.append(hand_grad_norm(model))
        opt.step()
    rec.close()
    steps, recorded = read(tmp_path, "step/grad_norm")
    if clip is None:  # computed by the recorder: sampled every 8 steps in the default tier
        assert steps.tolist() == [0]
        np.testing.assert_allclose(recorded, by_hand[::8], rtol=1e-5)
    else:  # returned by clip_grad_norm_: free, so recorded at every step
        np.testing.assert_allclose(recorded, by_hand, rtol=1e-5)
    if clip is not None:
        assert max(after_clip) < min(by_hand)  # the clipping really changed the gradients
    # the wrapper is gone once the recorder is closed
    assert torch.nn.utils.clip_grad_norm_.__module__ == "torch.nn.utils.clip_grad"


@pytest.mark.parametrize("options", [{"tier": "detailed"}, {"sample_every": 1}, {"sample_every": 3}])
def test_gradient_norm_and_accuracy_every_step_in_the_detailed_tier(tmp_path, options):
    """Sampled every ``sample_every`` steps in the default tier (8 unless told), every step in the detailed tier."""
    x, y, _, _ = teacher_data(n=160)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0, **options)
    norms, accs = [], []
    for xb, yb in batches(x, y, 16):
        opt.zero_grad()
        out = model(xb)
        F.cross_entropy(out, yb).backward()
        norms.append(hand_grad_norm(model))
        accs.append((out.argmax(1) == yb).float().mean().item())
        opt.step()
        rec.step(loss=F.cross_entropy(out, yb), output=out, target=yb)
    rec.close()
    k = options.get("sample_every", 1)
    for name, expected in (("step/grad_norm", norms), ("step/accuracy", accs)):
        steps, recorded = read(tmp_path, name)
        assert steps.tolist() == list(range(0, 10, k)), name
        np.testing.assert_allclose(recorded, expected[::k], rtol=1e-5)
    assert read(tmp_path, "step/loss")[0].tolist() == list(range(10))


# ------------------------------------------------------------------------------------ loss and accuracy per batch


@pytest.mark.parametrize("order", ["before", "after"])
def test_per_batch_loss_and_accuracy_are_the_loops_own(tmp_path, order):
    x, y, _, _ = teacher_data(n=160)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0, sample_every=4)
    losses, accs = [], []
    for epoch in range(2):
        for xb, yb in batches(x, y, 32, seed=epoch):
            opt.zero_grad()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            losses.append(loss.item())
            accs.append((out.argmax(1) == yb).float().mean().item())
            if order == "before":
                rec.step(loss=loss, output=out, target=yb)
                opt.step()
            else:
                opt.step()
                rec.step(loss=loss, output=out, target=yb)
        rec.epoch_end()
    rec.close()
    steps, loss_rec = read(tmp_path, "step/loss")
    acc_steps, acc_rec = read(tmp_path, "step/accuracy")
    assert steps.tolist() == list(range(10))
    np.testing.assert_allclose(loss_rec, losses, rtol=1e-6)
    assert acc_steps.tolist() == [0, 4, 8]  # sampled every 4th step (sample_every)
    np.testing.assert_allclose(acc_rec, accs[::4], rtol=1e-6)
    _, epoch_loss = read(tmp_path, "loss")
    np.testing.assert_allclose(epoch_loss, [np.mean(losses[:5]), np.mean(losses[5:])], rtol=1e-6)
    assert json.loads((tmp_path / "meta.json").read_text())["batch_size"] == 32


def test_epoch_rows_wait_for_the_drain_of_their_steps(tmp_path):
    """Step rows reach the writer every ``flush_every`` steps (or when its timed flush is due), not at each epoch
    end, and an epoch's row follows the drain of its last step; its loss and accuracy are still the means of that
    epoch's step values, to the last bit."""
    x, y, _, _ = teacher_data(n=160)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0, flush_every=8, sample_every=1)
    rec.writer.flush_seconds = 1e9  # no timed flush
    written = []
    steps_orig = rec.writer.steps

    def spy(columns):
        written.append(columns["step"].tolist())
        steps_orig(columns)

    rec.writer.steps = spy
    for epoch in range(3):
        for xb, yb in batches(x, y, 32, seed=epoch):  # 5 steps per epoch
            fit_batch(model, opt, rec, xb, yb, outputs=True)
        rec.epoch_end()
        if epoch == 0:
            assert written == []  # 5 rows < flush_every: nothing handed over at the epoch's end
            assert rec.writer.epoch_rows == []  # nor the epoch's row: it waits for its steps' drain
    assert written == [list(range(8))]  # the drain at the 9th buffered row only (epoch 1 straddles it)
    assert [r["epoch"] for r in rec.writer.epoch_rows] == [0]  # epoch 1's last steps are still buffered
    rec.writer.flush_seconds = 0.0  # the timed flush is due: the epoch's end hands the rows over
    for xb, yb in batches(x, y, 32, seed=3):
        fit_batch(model, opt, rec, xb, yb, outputs=True)
    rec.epoch_end()
    assert written == [list(range(8)), list(range(8, 16)), list(range(16, 20))]
    rec.close()
    steps, loss_rec = read(tmp_path, "step/loss")
    _, acc_rec = read(tmp_path, "step/accuracy")
    assert steps.tolist() == list(range(20))
    epochs = rec.writer.epoch_rows
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3]
    for e, r in enumerate(epochs):
        part = loss_rec[5 * e:5 * e + 5].tolist()
        assert r["loss"] == sum(part) / 5
        assert r["accuracy"] == sum(acc_rec[5 * e:5 * e + 5].tolist()) / 5
    assert rec._buf.agg == {} and rec._buf.closing == []


def test_gradient_accumulation_averages_the_micro_batches(tmp_path):
    x, y, _, _ = teacher_data(n=128)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0)
    micro = []
    for i, (xb, yb) in enumerate(batches(x, y, 16)):
        loss = F.cross_entropy(model(xb), yb)
        (loss / 2).backward()
        micro.append(loss.item())
        rec.step(loss=loss)
        if i % 2 == 1:
            opt.step()
            opt.zero_grad()
    rec.close()
    steps, loss_rec = read(tmp_path, "step/loss")
    assert steps.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(loss_rec, np.mean(np.reshape(micro, (4, 2)), axis=1), rtol=1e-6)


def test_no_host_transfer_per_step(tmp_path, monkeypatch):
    """On an accelerator, values stay tensors between flushes: nothing calls item()/tolist()/float()/cpu() during
    the steps. (On the CPU a loss is read at once: there is no device to wait for.) The tensors here are made to
    look like an accelerator's (``is_cpu`` False): what the recorder decides from."""
    x, y, _, _ = teacher_data(n=256)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0, flush_every=1000)
    monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda self: False))
    calls = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy"):
        orig = getattr(torch.Tensor, name)

        def counting(self, *a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    for xb, yb in batches(x, y, 8):
        opt.zero_grad()
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rec.step(loss=loss, output=out, target=yb)
    assert calls == []
    monkeypatch.undo()
    rec.close()
    steps, _ = read(tmp_path, "step/loss")
    assert len(steps) == 32


def test_record_every_n_steps(tmp_path):
    x, y, _, _ = teacher_data(n=256)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0, every=4)
    for xb, yb in batches(x, y, 8):
        fit_batch(model, opt, rec, xb, yb)
    rec.close()
    for name in ("step/lr", "step/loss"):
        steps, _ = read(tmp_path, name)
        assert steps.tolist() == list(range(0, 32, 4)), name
    steps, _ = read(tmp_path, "step/grad_norm")  # sampled on every 16th recorded step (SAMPLE_FIRST): every 64th step
    assert steps.tolist() == [0]


def test_optimizer_hooks_alone_record_the_schedule_and_gradients(tmp_path):
    x, y, _, _ = teacher_data(n=64)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0, sample_every=8)
    norms = []
    for _ in range(3):
        for xb, yb in batches(x, y, 16):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            norms.append(hand_grad_norm(model))
            opt.step()
            sched.step()
    rec.close()
    steps, lr = read(tmp_path, "step/lr")
    np.testing.assert_allclose(lr, 0.3 * 0.9 ** steps, rtol=1e-12)
    norm_steps, recorded = read(tmp_path, "step/grad_norm")
    assert norm_steps.tolist() == [0, 8]  # sampled every 8th step (sample_every)
    np.testing.assert_allclose(recorded, norms[::8], rtol=1e-5)
    assert "step/loss" not in whyspike.load_run(tmp_path).series


# ----------------------------------------------------------------------------------------------- checkpoints


def test_checkpoints_reload_with_weights_only_and_reproduce(tmp_path):
    x, y, xv, _ = teacher_data(n=96)
    model = mlp(bn=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2], gamma=0.1)
    rec = Recorder(opt, model, tmp_path, scheduler=sched, live=False, checkpoints=2)
    rec.writer.hold_epochs = 0  # the plain ring: the newest 2 (holding for late detections is tested in test_store)
    for epoch in range(4):
        for xb, yb in batches(x, y, 32, seed=epoch):
            fit_batch(model, opt, rec, xb, yb)
        sched.step()
        rec.epoch_end()
    rec.close()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["epoch-0002", "epoch-0003"]
    raw = torch.load(tmp_path / "checkpoints" / "epoch-0003" / "state.pt", weights_only=True)
    assert raw["epoch"] == 3 and raw["step"] == 12

    fresh = mlp(bn=True, seed=123)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.5, momentum=0.9)
    fresh_sched = torch.optim.lr_scheduler.MultiStepLR(fresh_opt, milestones=[2], gamma=0.1)
    state = load_checkpoint(tmp_path / "checkpoints" / "epoch-0003", fresh, fresh_opt, scheduler=fresh_sched)
    assert state["epoch"] == 3
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(xv), fresh(xv))
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert fresh_sched.last_epoch == sched.last_epoch
    # one more step from both: the momentum buffers came back too
    model.train(), fresh.train()
    for m, o in ((model, opt), (fresh, fresh_opt)):
        o.zero_grad()
        F.cross_entropy(m(x[:32]), y[:32]).backward()
        o.step()
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(UsageError, match="run directory"):
        load_checkpoint(tmp_path, fresh)


# ------------------------------------------------------------------------------------- diagnosis of the record


def test_multistep_decay_jump_is_attributed_to_the_schedule(tmp_path, step_decay_run):
    """Label noise + a large LR keep validation accuracy low and swinging; the x0.1 decay at epoch 15 lifts it."""
    out = io.StringIO()
    val, _ = step_decay_run(tmp_path, checkpoints=2, out=out, verdict=True)
    assert np.mean(val[15:]) - np.mean(val[:15]) > 0.1  # the scenario itself
    text = out.getvalue()
    assert "val_accuracy up" in text and "lr_schedule" in text  # the live line, then the verdict
    assert f"run recorded in {tmp_path}" in text

    d = diagnose(whyspike.load_run(tmp_path))
    spike = next(s for s in d.spikes if s.metric == "val_accuracy")
    assert spike.at == 15 and spike.direction == "up"
    assert spike.causes[0].id == "lr_schedule"
    assert any("0.5 -> 0.05" in e for e in spike.causes[0].evidence)
    assert d.run.setup.eval_size == 500 and d.run.setup.steps_per_epoch == 32
    # the ring keeps the newest 2 epochs' checkpoints
    assert {"epoch-0028", "epoch-0029"} <= {p.name for p in (tmp_path / "checkpoints").iterdir()}


# ------------------------------------------------------------------------------------------- detailed tier


def test_detailed_tier_signals_match_hand_computation(tmp_path, capsys):
    x, y, xv, yv = teacher_data(n=192, noise=0.1)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, yv), batch_size=32)
    model = mlp(bn=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    rec = Recorder(opt, model, tmp_path, tier="detailed", detail_every=5, live=False, checkpoints=0,
                   train_loader=train, val_loader=val, bn_batches=6, train_eval_batches=4)
    ratios, hists, wnorms, train_eval, precise = {}, {}, [], [], []
    step = 0
    for _epoch in range(2):
        for xb, yb in train:
            opt.zero_grad()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            rec.step(loss=loss, output=out, target=yb)
            if step % 5 == 0:
                num = math.sqrt(sum(float((p.detach() - b).norm()) ** 2 for p, b in zip(model.parameters(), before)))
                den = math.sqrt(sum(float(b.norm()) ** 2 for b in before))
                ratios[step] = num / den
                hists[step] = torch.bincount(yb, minlength=4).tolist()
            step += 1
        wnorms.append(math.sqrt(sum(float(p.detach().norm()) ** 2 for p in model.parameters())))
        model.eval()
        with torch.no_grad():
            train_eval.append(np.mean([(model(xb).argmax(1) == yb).float().mean().item()
                                       for xb, yb in list(train)[:4]]))
        model.train()
        # PreciseBN by hand on a copy: fresh cumulative statistics from the first 6 training batches
        import copy

        twin = copy.deepcopy(model)
        for m in twin.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.reset_running_stats()
                m.momentum = None
        with torch.no_grad():
            for xb, _ in list(train)[:6]:
                twin(xb)
            twin.eval()
            precise.append((twin(xv).argmax(1) == yv).float().mean().item())
        stats_before = model[1].running_mean.clone()
        rec.epoch_end()
        assert torch.equal(model[1].running_mean, stats_before)  # the model itself was not touched
        assert model.training
    rec.close()
    steps, got = read(tmp_path, "step/update_ratio")
    assert steps.tolist() == sorted(ratios)
    np.testing.assert_allclose(got, [ratios[s] for s in steps], rtol=1e-5)
    run = whyspike.load_run(tmp_path)
    assert "step/update_ratio/0" in run.series and "step/update_ratio/3" in run.series  # per layer
    for k in range(4):
        np.testing.assert_array_equal(run.series[f"step/labels/{k}"].y, [hists[s][k] for s in steps])
    np.testing.assert_allclose(run.series["weight_norm"].y, wnorms, rtol=1e-5)
    np.testing.assert_allclose(run.series["train_eval_accuracy"].y, train_eval, rtol=1e-6)
    np.testing.assert_allclose(run.series["val_precise_bn_accuracy"].y, precise, rtol=1e-6)
    correct = np.load(tmp_path / "examples" / "val-e0001.npy")
    assert correct.dtype == bool and correct.shape == (len(xv),)
    assert correct.mean() == pytest.approx(run.series["val_accuracy"].y[1])
    assert capsys.readouterr().err == ""


# -------------------------------------------------------------------------------------------------- bad input


def test_nan_loss_is_recorded_as_nan_and_training_goes_on(tmp_path):
    x, y, _, _ = teacher_data(n=128)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=1)
    done = 0
    for epoch in range(2):
        for i, (xb, yb) in enumerate(batches(x, y, 16)):
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            if epoch == 0 and i == 3:
                loss = loss * float("nan")
            loss.backward()
            opt.step()  # the NaN reaches the weights: every later loss is NaN too
            rec.step(loss=loss)
            done += 1
        rec.epoch_end()
    rec.close()
    assert done == 16
    _, losses = read(tmp_path, "step/loss")
    assert np.isfinite(losses[:3]).all() and np.isnan(losses[3:]).all()
    d = diagnose(whyspike.load_run(tmp_path))
    nan = [f for f in d.findings if f.id == "nan_or_inf" and f.metric == "step/loss"]
    assert nan and nan[0].at == 3


def test_precise_bn_on_a_model_without_batchnorm_says_so_once(tmp_path, capsys):
    x, y, xv, yv = teacher_data(n=64)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, yv), batch_size=32)
    model = mlp(bn=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(opt, model, tmp_path, tier="detailed", live=False, checkpoints=0, train_loader=train,
                   val_loader=val)
    for _ in range(3):
        for xb, yb in train:
            fit_batch(model, opt, rec, xb, yb)
        rec.evaluate_precise_bn(train, val)  # asked for by hand too
        rec.epoch_end()
    rec.close()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no BatchNorm" in err[0]
    run = whyspike.load_run(tmp_path)
    assert len(run.series["val_accuracy"]) == 3 and "train_eval_accuracy" in run.series
    assert not any("precise_bn" in name for name in run.series)


def test_unwritable_run_dir_one_message_training_completes(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the run directory should go")
    x, y, _, _ = teacher_data(n=64)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = io.StringIO()
    rec = Recorder(opt, model, blocker / "run", out=out, checkpoints=2)
    done = 0
    for _ in range(10):
        for xb, yb in batches(x, y, 16):
            fit_batch(model, opt, rec, xb, yb)
            done += 1
        rec.epoch_end(val_accuracy=0.5)
    assert rec.close() is None
    assert done == 40
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "not-a-dir" in err[0] and "training continues" in err[0]
    assert out.getvalue() == ""


def test_bad_arguments_are_refused_before_training(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UsageError, match="tier"):
        Recorder(opt, model, tmp_path, tier="everything")
    with pytest.raises(UsageError, match="every"):
        Recorder(opt, model, tmp_path, every=0)
    with pytest.raises(UsageError, match="flush_every"):
        Recorder(opt, model, tmp_path, flush_every=0)  # None is the adaptive default; 0 is no interval


# ------------------------------------------------------------------------------ global hooks (whyspike run)


def test_global_hooks_record_an_unchanged_loop_and_close_restores_torch(tmp_path):
    import importlib

    optim_module = importlib.import_module("torch.optim.optimizer")
    saved = {
        "backward": torch.Tensor.backward,
        "iter": torch.utils.data.DataLoader.__iter__,
        "clip": torch.nn.utils.clip_grad_norm_,
        "scale": torch.amp.GradScaler.scale,
        "pre": len(optim_module._global_optimizer_pre_hooks),
        "post": len(optim_module._global_optimizer_post_hooks),
    }
    handle = install_global_hooks(RunWriter(tmp_path), live=False)
    with pytest.raises(UsageError, match="already installed"):
        install_global_hooks(RunWriter(tmp_path / "other"), live=False)

    # -- the user's script, unchanged: no whyspike call anywhere
    x, y, xv, yv = teacher_data(n=96)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True,
                                        generator=torch.Generator().manual_seed(0))
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, yv), batch_size=16)
    model = mlp(bn=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    losses, norms = [], []
    for _epoch in range(4):
        model.train()
        for xb, yb in train:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            losses.append(loss.item())
            norms.append(hand_grad_norm(model))
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            sum(F.cross_entropy(model(xb), yb).item() for xb, yb in val)
    # -- end of script

    handle.close()
    assert torch.Tensor.backward is saved["backward"]
    assert torch.utils.data.DataLoader.__iter__ is saved["iter"]
    assert torch.nn.utils.clip_grad_norm_ is saved["clip"]
    assert torch.amp.GradScaler.scale is saved["scale"]
    assert len(optim_module._global_optimizer_pre_hooks) == saved["pre"]
    assert len(optim_module._global_optimizer_post_hooks) == saved["post"]

    run = whyspike.load_run(tmp_path)
    steps = run.series["step/loss"].x
    assert steps.tolist() == list(range(24))
    np.testing.assert_allclose(run.series["step/loss"].y, losses, rtol=1e-6)
    np.testing.assert_allclose(run.series["step/grad_norm"].y, norms, rtol=1e-5)
    np.testing.assert_allclose(run.series["step/lr"].y, [0.2 * 0.1 ** ((s // 6) // 2) for s in steps],
                               rtol=1e-12)
    assert run.series["lr"].x.tolist() == [0, 1, 2, 3]  # one epoch per pass over the training loader only
    np.testing.assert_allclose(run.series["loss"].y, np.mean(np.reshape(losses, (4, 6)), axis=1), rtol=1e-6)
    assert run.setup.has_batchnorm is True and run.setup.optimizer == "SGD"
    assert run.setup.steps_per_epoch == 6
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["model_class"] == "Sequential" and meta["grad_clip_max_norm"] == 0.5
    fresh = mlp(bn=True, seed=5)
    load_checkpoint(tmp_path / "checkpoints" / "epoch-0003", fresh)
    for p, q in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(p, q)
    # after close, torch is untouched: a new loop records nothing more
    before = sorted(os.listdir(tmp_path / "steps"))
    opt.zero_grad()
    F.cross_entropy(model(x[:8]), y[:8]).backward()
    opt.step()
    assert sorted(os.listdir(tmp_path / "steps")) == before


def test_global_hooks_follow_a_second_model_and_unscale_gradscaler_losses(tmp_path):
    handle = install_global_hooks(RunWriter(tmp_path), live=False)
    x, y, _, _ = teacher_data(n=64)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    losses = {"a": [], "b": []}
    # model A, plain SGD, two epochs
    model = mlp(seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            losses["a"].append(loss.item())
            opt.step()
    # model B, Adam under a GradScaler (the loss back-propagated is scaled by 2**10), two epochs
    model_b = mlp(hidden=16, seed=2)
    opt_b = torch.optim.Adam(model_b.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for _ in range(2):
        for xb, yb in loader:
            opt_b.zero_grad()
            loss = F.cross_entropy(model_b(xb), yb)
            scaler.scale(loss).backward()
            losses["b"].append(loss.item())
            scaler.step(opt_b)
            scaler.update()
    assert scaler.is_enabled() and scaler.get_scale() > 1
    handle.close()
    run = whyspike.load_run(tmp_path)
    # B's first two steps are taken for a second optimizer's; from its third it is the primary
    expected = losses["a"] + losses["b"][2:]
    assert run.series["step/loss"].x.tolist() == list(range(len(expected)))
    np.testing.assert_allclose(run.series["step/loss"].y, expected, rtol=1e-6)
    assert run.series["lr"].x.tolist() == [0, 1, 2, 3]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["optimizer_switches"] == [{"step": 16, "optimizer": "Adam"}]
    assert meta["optimizer"] == "Adam" and meta["n_params"] == sum(p.numel() for p in model_b.parameters())


@pytest.mark.parametrize("mode", ["recorder", "global"])
def test_without_a_closure_gradients_are_read_before_the_update(tmp_path, mode):
    """An optimizer that consumes its gradients while stepping (zeroes them in place) still has their norm recorded:
    the step pre-hook reads them (the hooks receive the optimizer itself as the first positional argument, which is
    no closure)."""

    class ConsumingSGD(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            out = super().step(closure)
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad.zero_()
            return out

    x, y, _, _ = teacher_data(n=64)
    model = mlp()
    opt = ConsumingSGD(model.parameters(), lr=0.1)
    if mode == "global":
        handle = install_global_hooks(RunWriter(tmp_path), live=False)
    else:
        rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0)
    norms = []
    for xb, yb in batches(x, y, 16):
        F.cross_entropy(model(xb), yb).backward()
        norms.append(hand_grad_norm(model))
        opt.step()
        assert hand_grad_norm(model) == 0
    handle.close() if mode == "global" else rec.close()
    steps, recorded = read(tmp_path, "step/grad_norm")
    assert steps.tolist() == [0]  # sampled every 8 steps in the default tier
    np.testing.assert_allclose(recorded, norms[::8], rtol=1e-5)


@pytest.mark.parametrize("mode", ["recorder", "global"])
def test_step_with_a_closure_reads_gradients_and_loss_after_it(tmp_path, mode):
    x, y, _, _ = teacher_data(n=64)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    if mode == "global":
        handle = install_global_hooks(RunWriter(tmp_path), live=False)
    else:
        rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0)
    losses, norms = [], []
    for xb, yb in batches(x, y, 16):
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            losses.append(loss.item())
            norms.append(hand_grad_norm(model))
            return loss

        loss = opt.step(closure)
        if mode == "recorder":
            rec.step(loss=loss)
    handle.close() if mode == "global" else rec.close()
    run = whyspike.load_run(tmp_path)
    assert run.series["step/loss"].x.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(run.series["step/loss"].y, losses, rtol=1e-6)
    assert run.series["step/grad_norm"].x.tolist() == [0]  # sampled every 8 steps in the default tier
    np.testing.assert_allclose(run.series["step/grad_norm"].y, norms[::8], rtol=1e-5)


def test_sampled_accuracy_gives_no_epoch_mean(tmp_path):
    """An epoch's accuracy is the mean over every recorded step, or absent: the mean of a sampled few would swing
    with the sample and show jumps that never happened (the sampled values stay in the step rows)."""
    x, y, _, _ = teacher_data(n=160)
    rows = {}
    for every in (1, 4):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        rec = Recorder(opt, model, tmp_path / str(every), live=False, checkpoints=0, sample_every=every)
        for epoch in range(2):
            for xb, yb in batches(x, y, 32, seed=epoch):
                fit_batch(model, opt, rec, xb, yb, outputs=True)
            rec.epoch_end()
        rec.close()
        rows[every] = rec.writer.epoch_rows
        steps, acc = read(tmp_path / str(every), "step/accuracy")
        assert np.isfinite(acc).sum() == (10 if every == 1 else 3)  # steps 0, 4, 8 sampled
    assert all("accuracy" in r and "loss" in r for r in rows[1])
    assert all("accuracy" not in r and "loss" in r for r in rows[4])


def test_an_epoch_row_has_the_wall_time_of_the_epochs_end(tmp_path):
    import time

    x, y, _, _ = teacher_data(n=64)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0)
    ends = []
    for epoch in range(2):
        for xb, yb in batches(x, y, 32, seed=epoch):
            fit_batch(model, opt, rec, xb, yb)
        rec.epoch_end()
        ends.append(time.time())
        time.sleep(0.2)
    rec.close()  # the rows are handed over here, 0.2 s and more after their epochs ended
    walls = [r["wall_time"] for r in rec.writer.epoch_rows]
    assert all(abs(w - e) < 0.1 for w, e in zip(walls, ends)), (walls, ends)


def test_a_resumed_training_continues_the_step_and_epoch_numbering(tmp_path):
    """A second Recorder on the same run directory, resuming from the first run's checkpoint, appends its rows
    after the first run's instead of overwriting steps 0..n."""
    from whyspike.record.torch import load_checkpoint

    x, y, _, _ = teacher_data(n=96)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=5)
    for epoch in range(2):
        for xb, yb in batches(x, y, 32, seed=epoch):
            fit_batch(model, opt, rec, xb, yb)
        rec.epoch_end()
    rec.close()
    state = load_checkpoint(tmp_path / "checkpoints" / "epoch-0001")
    assert state["step"] == 6
    model2 = mlp()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.2)
    load_checkpoint(tmp_path / "checkpoints" / "epoch-0001", model2, opt2)
    rec2 = Recorder(opt2, model2, tmp_path, live=False, checkpoints=5, first_epoch=state["epoch"] + 1,
                    first_step=state["step"])
    for epoch in range(2, 4):
        for xb, yb in batches(x, y, 32, seed=epoch):
            fit_batch(model2, opt2, rec2, xb, yb)
        rec2.epoch_end()
    rec2.close()
    steps, loss = read(tmp_path, "step/loss")
    assert steps.tolist() == list(range(12)) and np.isfinite(loss).all()
    import whyspike

    run = whyspike.load_run(tmp_path)
    assert run.series["loss"].x.tolist() == [0, 1, 2, 3]
    with pytest.raises(Exception, match="first_step"):
        Recorder(opt2, model2, tmp_path / "other", first_step=-1)


def test_hyper_parameters_set_by_hand_are_recorded_at_each_change(tmp_path):
    """LR and weight decay written into the group by hand, back and forth, with a clipped step (the general path)
    among the plain ones: each step's row has the values that step applied, an int weight decay included."""
    x, y, _, _ = teacher_data(n=96)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0)
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0, flush_every=4)
    lrs = [0.1, 0.2, 0.1, 0.1, 0.3, 0.1, 0.2, 0.2, 0.2, 0.05, 0.1, 0.1]
    wds = [0, 0, 0, 1e-3, 1e-3, 0, 0, 0, 0, 0, 0, 0]
    for i, (xb, yb) in enumerate(batches(x, y, 8)):
        opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"] = lrs[i], wds[i]
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        if i in (2, 7):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        rec.step(loss=loss)
    rec.close()
    steps, lr_rec = read(tmp_path, "step/lr")
    assert steps.tolist() == list(range(12))
    assert lr_rec.tolist() == lrs
    _, wd_rec = read(tmp_path, "step/weight_decay")
    assert wd_rec.tolist() == wds


def test_the_drain_interval_follows_the_step_time(tmp_path, monkeypatch):
    """flush_every=None: about half a second of steps between host copies, 16 to 2048 steps."""
    from whyspike.record.torch import _stepbuffer as sb

    clock = [0.0]
    monkeypatch.setattr(sb.time, "perf_counter", lambda: clock[0])
    buf = sb.StepBuffer(RunWriter(tmp_path / "run"), None)
    assert buf.adaptive and buf.flush_every == sb.FLUSH_FIRST
    step = 0
    for per_step, expected in ((0.001, 500), (1e-5, 2048), (0.2, 16)):
        for _ in range(buf.flush_every + 1):
            buf.marks.append(step)
            buf.losses[step] = 1.0
            step += 1
            clock[0] += per_step
        buf.drain()  # the newest step stays undrained: the time per drained step is within a few % of a step's
        assert buf.flush_every == pytest.approx(expected, rel=0.05)
    fixed = sb.StepBuffer(RunWriter(tmp_path / "fixed"), 50)
    assert not fixed.adaptive and fixed.flush_every == 50


def test_tensor_betas_changed_in_place_are_recorded_at_each_step(tmp_path):
    """Betas given as tensors and changed in place (as a scheduler may do): the same objects every step, so the
    cheap per-step check must not take them for unchanged; each step records the beta1 it applied."""
    x, y, _, _ = teacher_data(n=64)
    model = mlp()
    beta1 = torch.tensor(0.9)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(beta1, torch.tensor(0.999)))
    rec = Recorder(opt, model, tmp_path, live=False, checkpoints=0)
    applied = []
    for i, (xb, yb) in enumerate(batches(x, y, 8)):
        beta1.fill_(0.9 - 0.05 * i)
        applied.append(float(beta1))
        fit_batch(model, opt, rec, xb, yb)
    rec.close()
    steps, b1 = read(tmp_path, "step/beta1")
    assert steps.tolist() == list(range(8))
    np.testing.assert_allclose(b1, applied, rtol=1e-6)

"""The Lightning callback on real tiny ``Trainer.fit`` runs, checked against values computed inside the module."""

from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")
nn = torch.nn
F = torch.nn.functional

import whyspike  # noqa: E402
from whyspike.diagnosis import diagnose  # noqa: E402
from whyspike.record.lightning import WhyspikeLightningCallback  # noqa: E402
from whyspike.record.torch import load_checkpoint  # noqa: E402


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():  # the frameworks' own deprecation chatter
        warnings.simplefilter("ignore")
        yield


def loaders(n=96, bs=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(10, 4, generator=g)
    x, xv = torch.randn(n, 10, generator=g), torch.randn(64, 10, generator=g)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x @ w).argmax(1)), batch_size=bs)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, (xv @ w).argmax(1)), batch_size=32)
    return train, val


class Tiny(pl.LightningModule):
    """Keeps, by its own hand, the per-batch loss and the gradient norm before and after clipping."""

    def __init__(self, bn=False, lr=0.1, step_size=5):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(10, 32), *([nn.BatchNorm1d(32)] if bn else []), nn.ReLU(),
                                 nn.Linear(32, 4))
        self.lr, self.step_size = lr, step_size
        self.losses, self.norms, self.clipped = [], [], []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.losses.append(loss.item())
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def _norm(self):
        return math.sqrt(sum(float(p.grad.norm()) ** 2 for p in self.parameters() if p.grad is not None))

    def on_before_optimizer_step(self, optimizer):
        self.norms.append(self._norm())

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.clipped.append(self._norm())

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_size, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def trainer(tmp_path, callback, **kw):
    return pl.Trainer(max_epochs=kw.pop("max_epochs", 3), callbacks=[callback], logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path, num_sanity_val_steps=0, **kw)


def test_lightning_records_lr_preclip_norm_loss_and_epoch_metrics(tmp_path):
    train, val = loaders()
    model = Tiny()
    out = io.StringIO()
    run_dir = tmp_path / "run"
    trainer(tmp_path, WhyspikeLightningCallback(run_dir, out=out), gradient_clip_val=0.05).fit(model, train, val)

    run = whyspike.load_run(run_dir)
    steps = run.series["step/lr"].x
    assert steps.tolist() == list(range(18))
    np.testing.assert_allclose(run.series["step/lr"].y, 0.1 * 0.5 ** (steps // 5), rtol=1e-12)
    np.testing.assert_allclose(run.series["step/momentum"].y, 0.9)
    # the norm Lightning had before it clipped, not the clipped one
    np.testing.assert_allclose(run.series["step/grad_norm"].y, model.norms, rtol=1e-5)
    assert max(model.clipped) <= 0.05 + 1e-6 < min(model.norms)
    np.testing.assert_allclose(run.series["step/loss"].y, model.losses, rtol=1e-6)

    assert run.series["val_acc"].x.tolist() == [0, 1, 2]
    assert run.series["val_acc"].y[-1] == pytest.approx(float(model.trainer.callback_metrics["val_acc"]))
    assert "train_loss_epoch" in run.series and "train_loss" not in run.series
    np.testing.assert_allclose(run.series["loss"].y, np.mean(np.reshape(model.losses, (3, 6)), axis=1), rtol=1e-6)

    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["recorder"] == "lightning" and meta["optimizer"] == "SGD"
    assert meta["steps_per_epoch"] == 6 and meta["batch_size"] == 16 and meta["epochs"] == 3
    assert meta["train_size"] == 96 and meta["eval_size"] == 64
    assert meta["lr_schedule"]["class"] == "StepLR" and meta["lr_schedule"]["interval"] == "step"
    assert meta["grad_clip"]["value"] == 0.05 and "lightning" in meta["framework_versions"]

    fresh = Tiny()
    torch.nn.init.zeros_(fresh.net[0].weight)
    load_checkpoint(run_dir / "checkpoints" / "epoch-0002", fresh)
    x = next(iter(val))[0]
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
    assert f"run recorded in {run_dir}" in out.getvalue()
    d = diagnose(run)
    assert d.run.setup.steps_per_epoch == 6 and d.run.setup.eval_size == 64


def test_lightning_accumulated_batches_give_the_mean_true_loss(tmp_path):
    train, val = loaders()
    model = Tiny()
    run_dir = tmp_path / "run"
    trainer(tmp_path, WhyspikeLightningCallback(run_dir, live=False), max_epochs=2,
            accumulate_grad_batches=2).fit(model, train, val)
    run = whyspike.load_run(run_dir)
    assert run.series["step/loss"].x.tolist() == list(range(6))
    np.testing.assert_allclose(run.series["step/loss"].y, np.mean(np.reshape(model.losses, (6, 2)), axis=1),
                               rtol=1e-6)
    np.testing.assert_allclose(run.series["step/grad_norm"].y, model.norms, rtol=1e-5)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["steps_per_epoch"] == 3 and meta["batch_size"] == 32


def test_lightning_detailed_tier_uses_the_trainers_loaders(tmp_path, capsys):
    train, val = loaders()
    model = Tiny(bn=True)
    run_dir = tmp_path / "run"
    cb = WhyspikeLightningCallback(run_dir, tier="detailed", live=False, detail_every=4, bn_batches=3)
    trainer(tmp_path, cb, max_epochs=2).fit(model, train, val)
    run = whyspike.load_run(run_dir)
    for name in ("train_eval_accuracy", "val_accuracy", "val_precise_bn_accuracy", "weight_norm"):
        assert run.series[name].x.tolist() == [0, 1], name
    assert run.series["step/update_ratio"].x.tolist() == [0, 4, 8]
    # the recorder's eval-mode validation agrees with the module's own
    assert run.series["val_accuracy"].y[-1] == pytest.approx(run.series["val_acc"].y[-1], abs=1e-6)
    assert np.load(run_dir / "examples" / "val-e0001.npy").shape == (64,)
    assert capsys.readouterr().err == ""

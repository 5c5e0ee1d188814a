"""Models, data and recorded runs shared by the landscape tests (also loaded as --factory files by the CLI tests)."""

from __future__ import annotations

import io
import math

import torch

nn = torch.nn
F = torch.nn.functional


# -- catapult (MECHANISMS.md, optimization_instability) ---------------------------------------------------------
class CatapultNet(nn.Module):
    """A one-hidden-layer tanh MLP in NTK scaling, 1024 units, antisymmetric start (output 0 at init, so the
    initial loss is E[y^2] = 0.61): lambda_0 = 18.6 on this data, as in MECHANISMS.md."""

    def __init__(self, d=8, m=1024, c=6.3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        u = torch.randn(m // 2, d, generator=g)
        v = torch.randn(m // 2, 1, generator=g)
        self.u = nn.Parameter(torch.cat([u, u]))
        self.v = nn.Parameter(torch.cat([v, -v]))
        self.d, self.m, self.c = d, m, c

    def forward(self, x):
        return self.c * torch.tanh(x @ self.u.T / math.sqrt(self.d)) @ self.v / math.sqrt(self.m)


def catapult_data(n=16, d=8):
    g = torch.Generator().manual_seed(100)
    x = torch.randn(n, d, generator=g)
    y = torch.randn(n, 1, generator=g)
    return x, y / y.pow(2).mean().sqrt() * 0.78


def catapult_factory():
    x, y = catapult_data()
    return CatapultNet(), F.mse_loss, [(x, y)]


def record_catapult(run_dir, mult=1.5, steps=24, lam0=None):
    """Full-batch gradient descent at lr = mult * 2 / lambda_0, one step per epoch, a checkpoint every epoch."""
    from whyspike.landscape import ModelLoss, top_eigenvalues
    from whyspike.record.torch import Recorder

    model, loss_fn, batches = catapult_factory()
    x, y = batches[0]
    if lam0 is None:
        lam0 = top_eigenvalues(ModelLoss(model, loss_fn, batches)).eigenvalues[0]
    lr = mult * 2 / lam0
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rec = Recorder(opt, model, run_dir, checkpoints=steps + 1, out=io.StringIO(), live=False)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        rec.step(loss=loss)
        losses.append(float(loss.detach()))
        rec.epoch_end()
    rec.close(verdict=False)
    return lam0, lr, losses


# -- deep linear network plateau (MECHANISMS.md, plateau_escape) ------------------------------------------------
def dln_data(d=8):
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    s = torch.zeros(d)
    s[:4] = torch.tensor([4.0, 2.0, 1.0, 0.5])
    target = u @ torch.diag(s) @ v.T
    x = torch.eye(d) * math.sqrt(d)  # whitened inputs: E[x x^T] = I
    return x, x @ target.T


def half_mse(out, y):
    return 0.5 * ((out - y) ** 2).sum(1).mean()


def dln_model(d=8, init=0.01, seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(*[nn.Linear(d, d, bias=False) for _ in range(3)])
    for layer in m:
        nn.init.normal_(layer.weight, std=init)
    return m


def dln_factory():
    x, y = dln_data()
    return dln_model(), half_mse, [(x, y)]


def record_dln(run_dir, lr=0.04, epochs=40, steps_per_epoch=10):
    from whyspike.record.torch import Recorder

    model, loss_fn, batches = dln_factory()
    x, y = batches[0]
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rec = Recorder(opt, model, run_dir, checkpoints=epochs + 1, out=io.StringIO(), live=False)
    losses = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            rec.step(loss=loss)
        losses.append(float(loss.detach()))
        rec.epoch_end()
    rec.close(verdict=False)
    return losses


# -- a small classifier with BatchNorm, trained by Adam ----------------------------------------------------------
def bn_mlp(d=6, hidden=16, classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.Tanh(), nn.Dropout(0.3),
                         nn.Linear(hidden, classes))


def blobs(n=96, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


def bn_factory():
    x, y = blobs()
    return bn_mlp(), F.cross_entropy, [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]


def wide_factory():
    """The same data with a wider hidden layer: checkpoints of bn_factory's model do not fit it."""
    x, y = blobs()
    return bn_mlp(hidden=24), F.cross_entropy, [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]


def record_bn_adam(run_dir, epochs=4, lr=0.01):
    from whyspike.record.torch import Recorder

    model, loss_fn, batches = bn_factory()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rec = Recorder(opt, model, run_dir, checkpoints=epochs + 1, out=io.StringIO(), live=False)
    for _ in range(epochs):
        model.train()
        for xb, yb in batches:
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            rec.step(loss=loss, output=out, target=yb)
        rec.epoch_end()
    rec.close(verdict=False)
    return model, opt

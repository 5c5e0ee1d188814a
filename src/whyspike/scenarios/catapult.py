"""Catapult: full-batch gradient descent just above 2/sharpness — the loss rises, then falls below where it was.

MECHANISMS.md, optimization_instability: with a learning rate between 2/λ₀ and ~4/λ₀ (λ₀ the top Hessian
eigenvalue at initialization) the loss grows for a few steps until the sharpness has fallen below 2/lr, then drops
past the small-step trajectory. λ₀ is measured here by power iteration on Hessian-vector products before training.
At 1.06 x 2/λ₀ the growth along the sharpest direction is slow enough (x1.12 a step) that the loss first falls for
~10 steps, then climbs ~0.05 -> 0.64 over ~15 steps and falls back below 0.05 — a spike a log shows clearly (at
1.5 x the rise starts at step 1, before any trend exists to measure it against).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._base import Scenario
from ._torchkit import torch_seeded


@dataclass(frozen=True)
class Config:
    seed: int = 1
    n: int = 256
    dim: int = 16
    width: int = 512
    lr_over_critical: float = 1.06  # lr = this x 2/λ₀
    steps: int = 300


def top_hessian_eigenvalue(loss_fn, params, iters: int = 30) -> float:
    """Largest Hessian eigenvalue of ``loss_fn()`` by power iteration (Hessian-vector products)."""
    import torch

    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    gen = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=gen) for p in params]
    lam = 0.0
    for _ in range(iters):
        norm = torch.sqrt(sum((a * a).sum() for a in v))
        v = [a / norm for a in v]
        hv = torch.autograd.grad(grads, params, v, retain_graph=True)
        lam = float(sum((a * b).sum() for a, b in zip(hv, v)))
        v = [h.detach() for h in hv]
    return lam


def regression_data(n: int, dim: int, seed: int, sharp: float = 1.0, noise: float = 0.1):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, 1, generator=g) / dim ** 0.5
    return x, torch.tanh(sharp * (x @ w)) + noise * torch.randn(n, 1, generator=g)


def train(cfg: Config, run_dir: Path) -> None:
    torch = torch_seeded(cfg.seed)
    from ..record.torch import Recorder

    x, y = regression_data(cfg.n, cfg.dim, seed=0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(cfg.dim, cfg.width), nn.Tanh(), nn.Linear(cfg.width, 1))

    def loss_fn():
        return ((model(x) - y) ** 2).mean()

    lam0 = top_hessian_eigenvalue(loss_fn, list(model.parameters()))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr_over_critical * 2 / lam0)
    rec = Recorder(opt, model, run_dir=run_dir, live=False, batch_size=cfg.n, train_size=cfg.n, steps_per_epoch=1,
                   checkpoints=0)
    rec.writer.write_meta(sharpness_at_init=lam0)
    for _ in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        rec.step(loss=loss)
    rec.close(verdict=False)


def spec(cfg: Config = Config()):
    """This training for the probes' in-process engine: full-batch GD (one step an "epoch") from the recording's
    own initialisation, at the recording's LR. The LR is set against *this* initialisation's sharpness (another
    seed's differs by a few percent, enough to move a 6% margin), so every replica starts from it: full-batch GD
    is then deterministic, and one replica per arm says all."""
    import torch

    from ..probe.spec import TrainingSpec

    x, y = regression_data(cfg.n, cfg.dim, seed=0)
    nn = torch.nn

    def model_fn():
        torch.manual_seed(cfg.seed)  # inside the engine's fork_rng: the recording's initialisation
        return nn.Sequential(nn.Linear(cfg.dim, cfg.width), nn.Tanh(), nn.Linear(cfg.width, 1))

    with torch.random.fork_rng(devices=[]):
        model = model_fn()
    lam0 = top_hessian_eigenvalue(lambda: ((model(x) - y) ** 2).mean(), list(model.parameters()))
    return TrainingSpec(model_fn, x, y, loss="mse", lr=cfg.lr_over_critical * 2 / lam0, batch_size=cfg.n,
                        epochs=cfg.steps)

def spec_ci():
    return spec(SCENARIO.config("ci"))


def spec_full():
    return spec(SCENARIO.config("full"))


SCENARIO = Scenario(
    name="catapult",
    description="full-batch GD at 1.06 x 2/sharpness: the loss shoots up, then falls back lower (catapult)",
    truth="optimization_instability",
    metric="step/loss",
    train=train,
    sizes={"full": Config(steps=600), "ci": Config()},
    why=("The step is 6% too large for the initial curvature, so the loss grows along the sharpest direction "
         "until the weights are thrown into a flatter region where the same step is stable; there the loss falls "
         "below where it started."),
    probe_plan=("lr.scale=0.5",),
    tags=("dynamics",),
)

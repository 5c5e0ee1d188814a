"""Deep-linear-network plateau: a 3-layer linear net from a tiny initialization learns one mode at a time.

MECHANISMS.md, plateau_escape (Saxe et al. 2014): the target map has singular values 4, 2, 1 and 0.5; from
initialization scale 0.01 the loss sits on a plateau near the origin (a saddle), then drops as the strongest mode
is learned, then waits again for the next: a staircase ordered by mode strength.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._base import Scenario
from ._torchkit import torch_seeded


@dataclass(frozen=True)
class Config:
    seed: int = 0
    n: int = 200
    dim: int = 16
    depth: int = 3
    init_scale: float = 0.01
    lr: float = 0.02
    steps: int = 1200


def problem(cfg: Config):
    """Inputs (whitened per feature) and targets of the map with singular values 4, 2, 1, 0.5."""
    import torch

    g = torch.Generator().manual_seed(cfg.seed)
    u, _ = torch.linalg.qr(torch.randn(cfg.dim, cfg.dim, generator=g))
    v, _ = torch.linalg.qr(torch.randn(cfg.dim, cfg.dim, generator=g))
    s = torch.zeros(cfg.dim)
    s[:4] = torch.tensor([4.0, 2.0, 1.0, 0.5])
    target = u @ torch.diag(s) @ v.T
    x = torch.randn(cfg.n, cfg.dim, generator=g)
    x = x / x.std(0)
    return x, x @ target.T


def linear_net(cfg: Config, scale: float = 1.0):
    """``depth`` bias-free square layers, each weight drawn N(0, (scale x init_scale)^2) from torch's global RNG."""
    import torch

    model = torch.nn.Sequential(*[torch.nn.Linear(cfg.dim, cfg.dim, bias=False) for _ in range(cfg.depth)])
    with torch.no_grad():
        for layer in model:
            layer.weight.normal_(0, scale * cfg.init_scale)
    return model


def train(cfg: Config, run_dir: Path) -> None:
    torch = torch_seeded(cfg.seed)
    from ..record.torch import Recorder

    x, y = problem(cfg)
    model = linear_net(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    rec = Recorder(opt, model, run_dir=run_dir, live=False, batch_size=cfg.n, train_size=cfg.n, steps_per_epoch=1,
                   checkpoints=0)
    for _ in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        loss = ((model(x) - y) ** 2).sum(1).mean()
        loss.backward()
        opt.step()
        rec.step(loss=loss)
    rec.close(verdict=False)


def spec(cfg: Config = Config()):
    """This training for the probes' in-process engine: full-batch GD, one step an "epoch". The engine's loss is
    the mean over all outputs (``mse``), the recording's their sum per example: the LR is ``dim`` times larger so
    that every update is the same, and the engine's loss is the recording's divided by ``dim``."""
    from ..probe.spec import TrainingSpec

    x, y = problem(cfg)
    return TrainingSpec(lambda: linear_net(cfg), x, y, loss="mse", lr=cfg.lr * cfg.dim, batch_size=cfg.n,
                        epochs=cfg.steps)

def spec_ci():
    return spec(SCENARIO.config("ci"))


def spec_full():
    return spec(SCENARIO.config("full"))


SCENARIO = Scenario(
    name="deep-linear-plateau",
    description="3-layer linear net, init 0.01: the loss waits on a plateau, then drops one mode at a time",
    truth="plateau_escape",
    metric="step/loss",
    train=train,
    sizes={"full": Config(steps=2000), "ci": Config()},
    why=("Near the origin every gradient is tiny (a saddle): the strongest mode of the target grows "
         "exponentially from 0.01 and only becomes visible in the loss after ~150 steps, then is learned at once; "
         "the weaker modes follow, each after its own plateau."),
    probe_plan=("seeds", "init.scale=3"),
    tags=("dynamics",),
)

"""Edge of stability: full-batch GD whose sharpness climbs to 2/lr, then the loss spikes again and again.

MECHANISMS.md, optimization_instability: progressive sharpening raises the top Hessian eigenvalue until it reaches
2/lr; it then hovers there, and the loss spikes each time it overshoots while still trending down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._base import Scenario
from ._torchkit import torch_seeded
from .catapult import regression_data


@dataclass(frozen=True)
class Config:
    seed: int = 1
    n: int = 256
    dim: int = 16
    width: int = 64
    lr: float = 0.2
    steps: int = 1500


def train(cfg: Config, run_dir: Path) -> None:
    torch = torch_seeded(cfg.seed)
    from ..record.torch import Recorder

    x, y = regression_data(cfg.n, cfg.dim, seed=0, sharp=3.0, noise=0.3)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(cfg.dim, cfg.width), nn.Tanh(), nn.Linear(cfg.width, cfg.width), nn.Tanh(),
                          nn.Linear(cfg.width, 1))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    rec = Recorder(opt, model, run_dir=run_dir, live=False, batch_size=cfg.n, train_size=cfg.n, steps_per_epoch=1,
                   checkpoints=0)
    for _ in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        rec.step(loss=loss)
    rec.close(verdict=False)


def spec(cfg: Config = Config()):
    """This training for the probes' in-process engine: full-batch GD, one step an "epoch"."""
    import torch

    from ..probe.spec import TrainingSpec

    x, y = regression_data(cfg.n, cfg.dim, seed=0, sharp=3.0, noise=0.3)
    nn = torch.nn

    def model_fn():
        return nn.Sequential(nn.Linear(cfg.dim, cfg.width), nn.Tanh(), nn.Linear(cfg.width, cfg.width), nn.Tanh(),
                             nn.Linear(cfg.width, 1))

    return TrainingSpec(model_fn, x, y, loss="mse", lr=cfg.lr, batch_size=cfg.n, epochs=cfg.steps)

def spec_ci():
    return spec(SCENARIO.config("ci"))


def spec_full():
    return spec(SCENARIO.config("full"))


SCENARIO = Scenario(
    name="edge-of-stability",
    description="full-batch GD at lr 0.2: sharpness climbs to 2/lr = 10, the loss spikes repeatedly",
    truth="optimization_instability",
    metric="step/loss",
    direction="up",
    train=train,
    sizes={"full": Config(steps=2500), "ci": Config()},
    why=("Gradient descent keeps sharpening the network until the top curvature reaches 2/lr; each overshoot "
         "along that direction is a loss spike, after which the curvature falls back and training goes on."),
    probe_plan=("seeds", "lr.scale=0.5"),
    tags=("dynamics",),
)

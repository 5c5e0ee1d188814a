"""Warm restarts (SGDR): cosine annealing that jumps back to the initial LR every 15 epochs.

MECHANISMS.md, lr_schedule: the opposite of a decay — at each restart the step size returns to its maximum, the
model is knocked out of the valley it had settled in, and validation accuracy drops, then climbs again as the
cycle anneals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ._base import Scenario
from ._torchkit import blobs, classifier_spec, mlp, torch_seeded, train_classifier


@dataclass(frozen=True)
class Config:
    seed: int = 0
    n_train: int = 1500
    n_val: int = 1000
    label_noise: float = 0.3
    lr: float = 0.2
    momentum: float = 0.9
    cycle: int = 15  # epochs per cosine cycle (T_0)
    epochs: int = 45
    batch_size: int = 32


def train(cfg: Config, run_dir: Path) -> None:
    torch = torch_seeded(cfg.seed)
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, label_noise=cfg.label_noise, offset=0.3)
    model = mlp([64, 256, 256, 10])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.cycle, eta_min=cfg.lr * 1e-3)
    train_classifier(model, opt, data, run_dir, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                     scheduler=sched)


def spec(cfg: Config = Config()):
    """This training for the probes' in-process engine (``whyspike probe whyspike.scenarios.warm_restarts:spec_ci``)."""
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, label_noise=cfg.label_noise, offset=0.3)
    floor, cycle = 1e-3, cfg.cycle

    def sgdr(step: int, epoch: int) -> float:  # CosineAnnealingWarmRestarts stepped at each epoch's end
        return floor + (1 - floor) * (1 + math.cos(math.pi * (epoch % cycle) / cycle)) / 2

    return classifier_spec(data, lambda: mlp([64, 256, 256, 10]), lr=cfg.lr, momentum=cfg.momentum,
                           epochs=cfg.epochs, batch_size=cfg.batch_size, schedule=sgdr)


def spec_ci():
    return spec(SCENARIO.config("ci"))


def spec_full():
    return spec(SCENARIO.config("full"))


SCENARIO = Scenario(
    name="warm-restarts",
    description="SGDR: cosine cycles of 15 epochs; validation drops at each restart to lr 0.2",
    truth="lr_schedule",
    metric="val_accuracy",
    direction="down",
    at=(15, 30, 45),
    train=train,
    sizes={"full": Config(epochs=60), "ci": Config()},
    why=("Each cycle anneals the LR to ~0 and the model settles; the restart sets it back to 0.2 in one epoch, "
         "the model is thrown out of the valley, and validation accuracy falls before the next cycle climbs "
         "above the last one."),
    probe_plan=("seeds", "lr.shift=+2", "lr.decay=off"),
    tags=("event",),
)

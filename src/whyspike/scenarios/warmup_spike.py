"""Warmup-end spike: a linear warmup to a peak learning rate the network cannot take; the loss spikes at the peak.

MECHANISMS.md, lr_warmup: the loss spikes (sometimes to NaN) near the LR peak, where the step size is largest,
then recovers as the schedule decays. Minibatch SGD with momentum on a digits-sized set, LR stepped every batch:
0 -> ``peak_lr`` over ``warmup_steps``, then cosine to zero.
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
    n_train: int = 4000
    n_val: int = 500
    peak_lr: float = 0.6
    momentum: float = 0.9
    warmup_steps: int = 60
    epochs: int = 30
    batch_size: int = 200  # large batches: the per-batch loss is smooth enough to show one spike


def warmup_cosine(cfg: Config, step: int) -> float:
    """The LR multiplier of optimizer step ``step``: linear warmup, then cosine to zero."""
    total = cfg.epochs * (cfg.n_train // cfg.batch_size)
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)))


def train(cfg: Config, run_dir: Path) -> None:
    torch = torch_seeded(cfg.seed)
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, offset=0.3)
    model = mlp([64, 256, 256, 10])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.peak_lr, momentum=cfg.momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(cfg, step))
    train_classifier(model, opt, data, run_dir, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                     scheduler=sched, step_scheduler=True)


def spec(cfg: Config = Config()):
    """This training for the probes' in-process engine (LambdaLR stepped every batch: step g uses factor(g))."""
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, offset=0.3)
    return classifier_spec(data, lambda: mlp([64, 256, 256, 10]), lr=cfg.peak_lr, momentum=cfg.momentum,
                           epochs=cfg.epochs, batch_size=cfg.batch_size,
                           schedule=lambda step, epoch: warmup_cosine(cfg, step))

def spec_ci():
    return spec(SCENARIO.config("ci"))


def spec_full():
    return spec(SCENARIO.config("full"))


SCENARIO = Scenario(
    name="warmup-spike",
    description="linear warmup to lr 0.6 over 60 steps: the loss spikes as the ramp nears its peak",
    truth="lr_warmup",
    metric="step/loss",
    at=60,
    tolerance=40,
    direction="up",
    train=train,
    sizes={"full": Config(epochs=60), "ci": Config()},
    why=("The warmup raises the step size every batch; near its peak (here at ~0.35-0.4, step ~35) the step "
         "exceeds what the curvature allows and the loss shoots up ~0.08 -> 0.6; the weights are thrown into a "
         "flatter region, and training goes on smoothly at the peak LR and through the cosine decay."),
    probe_plan=("seeds", "lr.warmup=2"),
    tags=("event",),
)

"""LR step decay: an MLP trained at a high learning rate on noisy labels swings; the x0.1 milestone settles it.

MECHANISMS.md, lr_schedule: SGD(0.9) at lr 0.2 on a digits-sized set with 30% of the training labels random keeps
validation accuracy swinging between ~0.8 and ~0.9; the decay to 0.02 lets the model settle into the valley it was
bouncing across, and train and validation jump together in the first epoch after the milestone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._base import Scenario
from ._torchkit import blobs, classifier_spec, mlp, torch_seeded, train_classifier


@dataclass(frozen=True)
class Config:
    seed: int = 2
    n_train: int = 1500
    n_val: int = 1000
    label_noise: float = 0.3
    lr: float = 0.2
    momentum: float = 0.9
    milestone: int = 20  # the epoch whose training first uses the decayed LR
    gamma: float = 0.1
    epochs: int = 40
    batch_size: int = 32


def train(cfg: Config, run_dir: Path) -> None:
    torch = torch_seeded(cfg.seed)
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, label_noise=cfg.label_noise, offset=0.3)
    model = mlp([64, 256, 256, 10])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    milestones = [cfg.milestone] if cfg.milestone else []
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, cfg.gamma)
    train_classifier(model, opt, data, run_dir, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                     scheduler=sched)


def spec(cfg: Config = Config()):
    """This training for the probes' in-process engine (``whyspike probe whyspike.scenarios.lr_step_decay:spec_ci``)."""
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, label_noise=cfg.label_noise, offset=0.3)
    milestone, gamma = cfg.milestone, cfg.gamma

    def step_decay(step: int, epoch: int) -> float:  # MultiStepLR stepped at each epoch's end
        return gamma if milestone and epoch >= milestone else 1.0

    return classifier_spec(data, lambda: mlp([64, 256, 256, 10]), lr=cfg.lr, momentum=cfg.momentum,
                           epochs=cfg.epochs, batch_size=cfg.batch_size, schedule=step_decay)


def spec_ci():
    return spec(SCENARIO.config("ci"))


def spec_full():
    return spec(SCENARIO.config("full"))


SCENARIO = Scenario(
    name="lr-step-decay",
    description="SGD at lr 0.2 on noisy labels swings; the x0.1 milestone at epoch 20 settles it",
    truth="lr_schedule",
    metric="val_accuracy",
    at=20,
    train=train,
    sizes={"full": Config(), "ci": Config()},
    why=("At lr 0.2 every step overshoots the valley the noisy labels leave, so validation accuracy swings from "
         "epoch to epoch; at the milestone the step size falls tenfold, the model settles, train and validation "
         "jump together and the swings collapse."),
    probe_plan=("seeds", "lr.shift=+3", "lr.decay=off"),
    tags=("event",),
)

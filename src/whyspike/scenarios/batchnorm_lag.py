"""BatchNorm running-statistics lag: unnormalized inputs, BN momentum 0.01, few steps per epoch.

MECHANISMS.md, batchnorm_statistics: training metrics (train mode, batch statistics) are smooth and high while
eval-mode validation accuracy, computed with running averages that trail the weights, swings wildly or sits near
chance and then "jumps" when the averages catch up. Inputs carry a large offset (raw pixel values do), so every
weight update moves the pre-activation means far, and momentum 0.01 (Keras' default 0.99) lets the running means
follow only ~1% a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._base import Scenario
from ._torchkit import blobs, classifier_spec, mlp, torch_seeded, train_classifier


@dataclass(frozen=True)
class Config:
    seed: int = 0
    n_train: int = 1000
    n_val: int = 1000
    offset: float = 20.0
    bn_momentum: float = 0.01
    lr: float = 0.02
    momentum: float = 0.0
    epochs: int = 40
    batch_size: int = 32
    detailed: bool = True  # record PreciseBN validation (the recorder's detailed tier): the zero-retrain evidence


def train(cfg: Config, run_dir: Path) -> None:
    torch = torch_seeded(cfg.seed)
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, offset=cfg.offset)
    model = mlp([64, 128, 128, 10], batchnorm=True, bn_momentum=cfg.bn_momentum)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    tier = {"tier": "detailed", "bn_batches": 10, "train_eval_batches": 5} if cfg.detailed else None
    train_classifier(model, opt, data, run_dir, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                     recorder_kw=tier)


def spec(cfg: Config = Config()):
    """This training for the probes' in-process engine (``bn.recompute`` re-evaluates its checkpoints)."""
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, offset=cfg.offset)
    return classifier_spec(data, lambda: mlp([64, 128, 128, 10], batchnorm=True, bn_momentum=cfg.bn_momentum),
                           lr=cfg.lr, momentum=cfg.momentum, epochs=cfg.epochs, batch_size=cfg.batch_size)

def spec_ci():
    return spec(SCENARIO.config("ci"))


def spec_full():
    return spec(SCENARIO.config("full"))


SCENARIO = Scenario(
    name="batchnorm-lag",
    description="BN momentum 0.01 on inputs offset by 20: eval-mode validation swings, then jumps",
    truth="batchnorm_statistics",
    metric="val_accuracy",
    train=train,
    sizes={"full": Config(epochs=60), "ci": Config()},
    why=("Validation runs in eval mode with BatchNorm's running mean and variance, which move only 1% towards "
         "the batch statistics per step; with inputs offset by 20 each weight update shifts the true statistics "
         "far, so the eval-mode network is a different, worse network until the averages catch up."),
    probe_plan=("seeds", "bn.recompute"),
    tags=("zero-retrain",),
)

"""A small evaluation set: validation accuracy on one batch of 50 examples leaps by chance.

MECHANISMS.md, eval_noise: with n = 50 one accuracy reading has a binomial standard deviation of ~0.05 near 0.85,
so the difference of two readings swings by ~0.07 with nothing changing; a rise of 0.1 between two epochs looks
like a jump and is not evidence of anything. Here the loop validates on one random batch of 50 examples each epoch
(a cheap check many loops do); the recorder is told the batch's size, as it is whenever it evaluates a loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._base import Scenario
from ._torchkit import blobs, mlp, torch_seeded, train_classifier


@dataclass(frozen=True)
class Config:
    seed: int = 0
    n_train: int = 1500
    n_val: int = 2000  # the pool; each epoch validates on val_batch examples of it
    val_batch: int = 50
    lr: float = 0.01
    spread: float = 1.3
    momentum: float = 0.9
    epochs: int = 40
    batch_size: int = 32


def train(cfg: Config, run_dir: Path) -> None:
    torch = torch_seeded(cfg.seed)
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, spread=cfg.spread, offset=0.3)
    model = mlp([64, 128, 10])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    train_classifier(model, opt, data, run_dir, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                     val_batch=cfg.val_batch)


SCENARIO = Scenario(
    name="small-eval-set",
    description="validation on one batch of 50: accuracy leaps by 0.1 between epochs with nothing changing",
    truth="small_eval_set",
    truth_is_finding=True,
    no_jump=True,
    metric="val_accuracy",
    train=train,
    sizes={"full": Config(), "ci": Config()},
    why=("Each validation reading counts hits among 50 freshly drawn examples, so it moves in steps of 0.02 and "
         "carries a binomial noise of ~0.05; the model improves smoothly underneath, and the epoch-to-epoch leaps "
         "are the luck of which examples were drawn."),
    tags=("zero-retrain",),
)

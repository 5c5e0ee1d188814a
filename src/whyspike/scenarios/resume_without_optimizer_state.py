"""A resume without optimizer state: the weights are restored, Adam's moments are not; the loss jumps on resume.

MECHANISMS.md, resume: a checkpoint that saved ``model.state_dict()`` only. The second run loads the weights,
builds a fresh Adam and goes on from the saved epoch into the same run directory. Adam's first steps from zeroed
moments move every weight by ~lr (the bias-corrected ratio m/sqrt(v) is ±1), a shove the converged model had not
felt for many epochs: training and validation loss jump at the resume, then recover. The resumed part creates a
new optimizer and a new recorder over the same run directory, as a restarted job does (its step counter starts
from 0 again: the log shows that rewind).
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
    n_val: int = 500
    lr: float = 1e-2
    epochs_before: int = 30
    epochs_after: int = 20
    batch_size: int = 500  # 3 steps an epoch: the few steps Adam needs to rebuild its moments show per epoch
    restore_optimizer: bool = False  # the fix (and the probe): save and load optimizer.state_dict() too


def _setup(cfg: Config):
    torch = torch_seeded(cfg.seed)
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, spread=1.2, offset=0.3)
    model = mlp([64, 256, 256, 10])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return torch, data, model, opt


def train(cfg: Config, run_dir: Path) -> None:
    torch, data, model, opt = _setup(cfg)
    train_classifier(model, opt, data, run_dir, epochs=cfg.epochs_before, batch_size=cfg.batch_size, seed=cfg.seed)
    state = {"model": model.state_dict(), "epoch": cfg.epochs_before}
    if cfg.restore_optimizer:
        state["optimizer"] = opt.state_dict()
    ckpt = run_dir / "user-checkpoint.pt"
    torch.save(state, ckpt)
    del model, opt  # the job ends here; the resumed one starts from the file
    resume(cfg, run_dir, ckpt)


def resume(cfg: Config, run_dir: Path, ckpt: Path) -> None:
    """The resumed job: the same script with a fresh model and optimizer, loading what the checkpoint holds."""
    torch, data, model, opt = _setup(cfg)
    state = torch.load(ckpt, weights_only=True)
    model.load_state_dict(state["model"])
    if "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
    train_classifier(model, opt, data, run_dir, epochs=cfg.epochs_after, batch_size=cfg.batch_size, seed=cfg.seed,
                     first_epoch=state["epoch"])


SCENARIO = Scenario(
    name="resume-without-optimizer-state",
    description="resumed at epoch 30 from weights only: a fresh Adam makes the loss jump",
    truth="resume",
    metric="val_loss",
    at=30,
    direction="up",
    train=train,
    sizes={"full": Config(n_val=2000, epochs_after=40), "ci": Config()},
    why=("The checkpoint held the weights but not Adam's moment estimates; the resumed run starts them from zero, "
         "so its first updates move every weight by about the learning rate whatever its gradient, knocking the "
         "converged model off its minimum until the moments are rebuilt."),
    probe_plan=("resume.restore_optimizer",),
    tags=("event",),
)


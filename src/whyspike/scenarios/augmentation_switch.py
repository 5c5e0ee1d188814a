"""An augmentation switch: heavy input augmentation turned off for the last epochs (YOLO's ``close_mosaic``).

MECHANISMS.md, data_pipeline: while augmented, every training batch is noisier and partly masked, so the training
loss sits high; the epoch augmentation stops, the training data get easier and the training loss drops at once,
while validation (never augmented) barely moves. The loop logs the augmentation strength with each epoch
(``augment``), as a loop with a switch would.
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
    n_val: int = 1000
    lr: float = 0.05
    momentum: float = 0.9
    switch_off: int = 30  # the first epoch without augmentation
    noise: float = 0.6  # Gaussian noise added to the inputs while augmenting (the inputs' s.d. is ~0.45)
    mask: float = 0.3  # share of input features zeroed while augmenting
    epochs: int = 40
    batch_size: int = 32


def train(cfg: Config, run_dir: Path) -> None:
    torch = torch_seeded(cfg.seed)
    data = blobs(cfg.n_train, cfg.n_val, seed=cfg.seed, spread=1.2, offset=0.3)
    model = mlp([64, 256, 256, 10])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    def augmenting(epoch: int) -> bool:
        return epoch < cfg.switch_off

    def transform(xb, epoch):
        if not augmenting(epoch):
            return xb
        noise = cfg.noise * torch.randn(xb.shape, generator=gen)
        keep = (torch.rand(xb.shape, generator=gen) >= cfg.mask).float()
        return (xb + noise) * keep

    train_classifier(model, opt, data, run_dir, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                     transform=transform, before_epoch=lambda e: {"augment": float(augmenting(e))})


SCENARIO = Scenario(
    name="augmentation-switch",
    description="input noise + masking switched off at epoch 30: the training loss drops at once",
    truth="data_pipeline",
    metric="loss",
    at=30,
    train=train,
    sizes={"full": Config(epochs=50), "ci": Config()},
    why=("For 30 epochs every training batch carries noise and missing features; from epoch 30 the batches are "
         "clean, so the training loss falls to what the model already achieves on clean data. Nothing in the "
         "optimizer changed, and validation (never augmented) hardly moves."),
    probe_plan=("augment.shift=+5",),
    tags=("event",),
)

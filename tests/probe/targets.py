"""Probe targets for the tests: MECHANISMS.md reproductions as TrainingSpec factories (sklearn's bundled digits)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from whyspike.probe import TrainingSpec

DECAY_EPOCH = 12


def _digits(noise: float = 0.0, offset: float = 0.0, seed: int = 0):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    x, y = x[idx] / (1.0 if offset else 16.0) + offset, y[idx].copy()
    n_val = 360
    if noise:  # label noise on the training part only
        flip = rng.random(len(y) - n_val) < noise
        y[n_val:][flip] = rng.integers(0, 10, flip.sum())
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def lr_drop() -> TrainingSpec:
    """MECHANISMS.md lr_schedule: MLP 64-256-256-10 on digits with 20% label noise, SGD(0.9) lr 0.2, x0.1 at
    DECAY_EPOCH (there at 20; earlier here to keep the test short)."""
    tx, ty, vx, vy = _digits(noise=0.2)

    def model():
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    return TrainingSpec(model, tx, ty, vx, vy,
                        lr=0.2, momentum=0.9, batch_size=32, epochs=DECAY_EPOCH + 8,
                        schedule=lambda step, epoch: 1.0 if epoch < DECAY_EPOCH else 0.1)


def bn_lag() -> TrainingSpec:
    """MECHANISMS.md batchnorm_statistics: digits pixels 0-16 plus 20, BN momentum 0.01, SGD 0.05."""
    tx, ty, vx, vy = _digits(offset=20.0)

    def model():
        return nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128, momentum=0.01), nn.ReLU(), nn.Linear(128, 10))

    return TrainingSpec(model, tx, ty, vx, vy, lr=0.05, batch_size=64, epochs=12)


def constant() -> TrainingSpec:
    """No schedule, no BN: nothing for an LR or BN intervention to act on."""
    tx, ty, vx, vy = _digits()
    return TrainingSpec(lambda: nn.Linear(64, 10), tx[:256], ty[:256], vx, vy, lr=0.1, batch_size=64, epochs=4)


def flaky() -> TrainingSpec:
    """``constant``, but the first process to build it (per marker file) dies on the spot: a worker killed
    mid-study."""
    import os
    from pathlib import Path

    marker = Path(os.environ["WHYSPIKE_TEST_KILL_MARKER"])
    if not marker.exists() and os.environ.get("WHYSPIKE_TEST_IN_WORKER"):
        marker.write_text("killed once")
        os._exit(17)
    return constant()


def dropout_bn_drop() -> TrainingSpec:
    """A short step-decay training whose forward draws dropout masks and updates BatchNorm statistics: what a fork
    from another replica's state has to carry over exactly (x0.1 at epoch 6 of 12)."""
    tx, ty, vx, vy = _digits(noise=0.1)

    def model():
        return nn.Sequential(nn.Linear(64, 48), nn.BatchNorm1d(48), nn.ReLU(), nn.Dropout(0.2), nn.Linear(48, 10))

    return TrainingSpec(model, tx, ty, vx, vy, lr=0.1, momentum=0.9, batch_size=64, epochs=12,
                        schedule=lambda step, epoch: 1.0 if epoch < 6 else 0.1)

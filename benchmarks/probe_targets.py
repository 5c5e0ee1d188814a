"""Probe targets of the benchmarks (TrainingSpec factories on sklearn's bundled digits)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from whyspike.probe import TrainingSpec


def lr_drop_40(hidden: tuple[int, ...] = (256, 256)) -> TrainingSpec:
    """MECHANISMS.md lr_schedule: MLP 64-256-256-10, 20% label noise, SGD(0.9) lr 0.2, batch 32, x0.1 at 20."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    x, y = x[idx] / 16.0, y[idx].copy()
    flip = rng.random(len(y) - 360) < 0.2
    y[360:][flip] = rng.integers(0, 10, flip.sum())
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)

    def model():
        layers, width = [], 64
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 10))

    return TrainingSpec(model, x[360:], y[360:], x[:360], y[:360], lr=0.2, momentum=0.9, batch_size=32, epochs=40,
                        schedule=lambda step, epoch: 1.0 if epoch < 20 else 0.1)


def lr_drop_40_small() -> TrainingSpec:
    """The same training with the seed article's MLP width (one hidden layer of 128)."""
    return lr_drop_40(hidden=(128,))

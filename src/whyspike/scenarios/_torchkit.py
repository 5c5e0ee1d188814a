"""What the PyTorch scenarios share: one-thread torch, synthetic data sets, small models, a recorded training loop.

The data are made here from a seed (nothing is downloaded): ``blobs`` is a 10-class problem of the size and
difficulty of sklearn's digits (1797 8x8 images, ~95% for an MLP) without needing sklearn — class prototypes in a
random 12-dimensional subspace of 64 "pixels", a fixed nonlinear distortion, per-example noise. Every scenario
records through :class:`whyspike.record.torch.Recorder`, exactly as a user's loop would, so the diagnosis sees
what a recorded run gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import require


def torch_seeded(seed: int):
    """torch on one thread (2 shared cores: more threads only add contention), seeded."""
    torch = require("torch", "torch")
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    return torch


@dataclass
class Data:
    x: object  # training inputs (torch tensors)
    y: object
    xv: object  # validation inputs
    yv: object

    @property
    def n_train(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.xv.shape[0])


def blobs(n_train: int, n_val: int, *, seed: int = 0, classes: int = 10, dim: int = 64, spread: float = 1.0,
          label_noise: float = 0.0, offset: float = 0.0) -> Data:
    """A digits-sized classification set. ``label_noise``: share of training labels replaced by random ones (the
    validation labels stay clean); ``offset`` is added to every input (unnormalized inputs, as raw pixels are)."""
    torch = require("torch", "torch")
    rng = np.random.default_rng(seed)
    latent = 12
    protos = rng.standard_normal((classes, latent)) * 1.6
    basis = rng.standard_normal((latent, dim)) / np.sqrt(latent)
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)

    def draw(n: int):
        y = rng.integers(0, classes, n)
        z = protos[y] + spread * rng.standard_normal((n, latent))
        h = z @ basis
        x = h + 0.5 * np.tanh(h @ mix) + 0.3 * rng.standard_normal((n, dim))
        return 0.2 * x + offset, y  # scaled like digits' pixels / 16

    x, y = draw(n_train)
    if label_noise:
        flip = rng.random(n_train) < label_noise
        y = np.where(flip, rng.integers(0, classes, n_train), y)
    xv, yv = draw(n_val)
    t = lambda a, dt: torch.as_tensor(a, dtype=dt)  # noqa: E731
    return Data(t(x, torch.float32), t(y, torch.long), t(xv, torch.float32), t(yv, torch.long))


def mlp(sizes: list[int], *, batchnorm: bool = False, bn_momentum: float = 0.1, act: str = "relu"):
    torch = require("torch", "torch")
    nn = torch.nn
    layers: list = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            if batchnorm:
                layers.append(nn.BatchNorm1d(b, momentum=bn_momentum))
            layers.append(nn.ReLU() if act == "relu" else nn.Tanh())
    return nn.Sequential(*layers)


def evaluate(model, x, y) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode, then back to train mode."""
    torch = require("torch", "torch")
    model.eval()
    with torch.no_grad():
        out = model(x)
        loss = float(torch.nn.functional.cross_entropy(out, y))
        acc = float((out.argmax(-1) == y).float().mean())
    model.train()
    return loss, acc


def train_classifier(model, optimizer, data: Data, run_dir: Path, *, epochs: int, batch_size: int, seed: int,
                     scheduler=None, step_scheduler: bool = False, first_epoch: int = 0,
                     before_epoch: Callable[[int], dict] | None = None,
                     transform: Callable[[object, int], object] | None = None,
                     val_batch: int | None = None, recorder_kw: dict | None = None) -> None:
    """Minibatch training, recorded: per step the loss and batch accuracy (``rec.step``), per epoch the
    validation loss and accuracy (``rec.epoch_end``).

    ``scheduler`` steps once per epoch, or once per optimizer step with ``step_scheduler``. ``before_epoch(epoch)``
    may change the setup and returns values to log with the epoch (e.g. an augmentation strength);
    ``transform(xb, epoch)`` changes each training batch (augmentation). ``val_batch``: validate on one random
    batch of that many validation examples each epoch (a cheap check many loops do) instead of the whole set. The
    data order comes from ``seed``.
    """
    torch = require("torch", "torch")
    from ..record.torch import Recorder

    f = torch.nn.functional
    kw = dict(recorder_kw or {})
    if kw.get("tier") == "detailed":  # the per-epoch evaluations read these loaders (unshuffled)
        loader = torch.utils.data.DataLoader
        kw.setdefault("train_loader", loader(torch.utils.data.TensorDataset(data.x, data.y), batch_size=100))
        kw.setdefault("val_loader", loader(torch.utils.data.TensorDataset(data.xv, data.yv), batch_size=500))
    rec = Recorder(optimizer, model, run_dir=run_dir, live=False, scheduler=scheduler, batch_size=batch_size,
                   train_size=data.n_train, eval_size=val_batch or data.n_val, epochs=first_epoch + epochs,
                   first_epoch=first_epoch, **kw)
    order = torch.Generator().manual_seed(seed + 7919 * first_epoch)
    n = data.n_train
    for epoch in range(first_epoch, first_epoch + epochs):
        extra = before_epoch(epoch) if before_epoch else {}
        perm = torch.randperm(n, generator=order)
        for i in range(0, n - batch_size + 1, batch_size):  # full batches only: a short last batch is noisier
            idx = perm[i : i + batch_size]
            xb, yb = data.x[idx], data.y[idx]
            if transform is not None:
                xb = transform(xb, epoch)
            optimizer.zero_grad(set_to_none=True)
            out = model(xb)
            loss = f.cross_entropy(out, yb)
            loss.backward()
            optimizer.step()
            rec.step(loss=loss, output=out, target=yb)
            if scheduler is not None and step_scheduler:
                scheduler.step()
        if scheduler is not None and not step_scheduler:
            scheduler.step()
        if kw.get("tier") == "detailed":  # the recorder evaluates the validation loader itself
            rec.epoch_end(**(extra or {}))
        elif val_batch:
            pick = torch.randperm(data.n_val, generator=order)[:val_batch]
            vl, va = evaluate(model, data.xv[pick], data.yv[pick])
            rec.epoch_end(val_loss=vl, val_accuracy=va, **(extra or {}))
        else:
            vl, va = evaluate(model, data.xv, data.yv)
            rec.epoch_end(val_loss=vl, val_accuracy=va, **(extra or {}))
    rec.close(verdict=False)


def classifier_spec(data: Data, model_fn: Callable[[], object], *, lr: float, epochs: int, batch_size: int,
                    momentum: float = 0.0, schedule: Callable[[int, int], float] | None = None):
    """The training of :func:`train_classifier` as a probe :class:`~whyspike.probe.TrainingSpec`: the same data,
    model, SGD and schedule, full batches only (``drop_last``, as the loop drops a short last batch). What differs
    is only what the probe engines key by seed: the initialisation and data order (``epoch_order``, not
    ``torch.randperm``), so a probe's seed band replaces the recording's one draw."""
    from ..probe.spec import TrainingSpec

    return TrainingSpec(model_fn, data.x, data.y, data.xv, data.yv, loss="cross_entropy", optimizer="sgd", lr=lr,
                        momentum=momentum, batch_size=batch_size, epochs=epochs, drop_last=True, schedule=schedule)

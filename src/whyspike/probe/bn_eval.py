"""BatchNorm re-evaluation without retraining: each checkpoint evaluated three ways — as trained (running
statistics, eval mode), with the statistics recomputed on training batches with the weights frozen (PreciseBN),
and with batch statistics (train-mode BN) — to measure how much of the epoch-to-epoch variation of the
validation curve comes from the running statistics rather than from the weights."""

from __future__ import annotations

import copy
import math

import numpy as np

from .spec import ReplicaError, TrainingSpec


def _bn_modules(model):
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _accuracy_and_loss(model, spec: TrainingSpec, train_mode_bn: bool = False) -> tuple[float, float]:
    import torch

    model.eval()
    if train_mode_bn:
        for m in _bn_modules(model):
            m.train()
            m.track_running_stats_backup = m.momentum
            m.momentum = 0.0  # batch statistics used, running ones left as they are
    with torch.no_grad():
        out = []
        for i in range(0, len(spec.val_x), 256):
            out.append(model(spec.val_x[i:i + 256]))
        logits = torch.cat(out)
        if spec.loss == "mse":
            return math.nan, float(torch.nn.functional.mse_loss(logits, spec.val_y))
        loss = float(torch.nn.functional.cross_entropy(logits, spec.val_y))
        acc = float((logits.argmax(-1) == spec.val_y).float().mean())
    if train_mode_bn:
        for m in _bn_modules(model):
            m.momentum = m.track_running_stats_backup
            del m.track_running_stats_backup
    return acc, loss


def recompute_statistics(model, spec: TrainingSpec, batches: int = 50) -> None:
    """PreciseBN: running statistics replaced by the average over ``batches`` training batches, weights frozen."""
    import torch

    bns = _bn_modules(model)
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    g = torch.Generator().manual_seed(12345)
    order = torch.randperm(len(spec.train_x), generator=g)
    with torch.no_grad():
        for k in range(batches):
            idx = order[(k * spec.batch_size) % len(order):][:spec.batch_size]
            if len(idx) < 2:
                break
            model(spec.train_x[idx])
    model.eval()


def reevaluate(spec: TrainingSpec, checkpoints: dict[int, dict]) -> dict:
    """Per checkpoint epoch: val accuracy/loss as trained, with recomputed statistics, and with batch statistics;
    plus ``share``: the part of the epoch-to-epoch variance of val accuracy removed by recomputing the statistics."""
    if spec.val_x is None:
        raise ReplicaError("bn.recompute: the training has no validation set to re-evaluate")
    epochs = sorted(checkpoints)
    out: dict = {"epochs": epochs, "as_trained": [], "recomputed": [], "batch_stats": [],
                 "as_trained_loss": [], "recomputed_loss": []}
    import torch

    for e in epochs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = spec.model_fn()
            if spec.model_transform is not None:
                model = spec.model_transform(model)
        if not _bn_modules(model):
            raise ReplicaError("bn.recompute: the model has no BatchNorm layer")
        model.load_state_dict(checkpoints[e]["model"])
        acc, loss = _accuracy_and_loss(model, spec)
        out["as_trained"].append(acc)
        out["as_trained_loss"].append(loss)
        out["batch_stats"].append(_accuracy_and_loss(copy.deepcopy(model), spec, train_mode_bn=True)[0])
        recompute_statistics(model, spec)
        acc, loss = _accuracy_and_loss(model, spec)
        out["recomputed"].append(acc)
        out["recomputed_loss"].append(loss)
    out["share"] = variation_share(out["as_trained"], out["recomputed"])
    return out


def variation_share(as_trained, recomputed) -> float | None:
    """1 - var(epoch-to-epoch change with recomputed statistics) / var(... as trained): 1 = every swing came from
    the running statistics, 0 = none did (negative: recomputing made it noisier)."""
    a = np.diff(np.asarray(as_trained, dtype=float))
    r = np.diff(np.asarray(recomputed, dtype=float))
    if len(a) < 2 or not np.isfinite(a).all() or np.var(a) == 0:
        return None
    return float(1.0 - np.var(r) / np.var(a))

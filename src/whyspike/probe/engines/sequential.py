"""The reference engine: one replica at a time, a plain PyTorch loop with torch's own optimizers.

Everything the vectorized engine does is defined by what this loop does: per epoch, the samples in
``epoch_order(data_seed, epoch)`` cut into batches; per step, the LR set to ``lr * schedule(step, epoch)``, the
batch skipped if its global step is in ``skip_steps``, else forward (hashed dropout masks), loss, backward,
``optimizer.step()``; per epoch, the validation set evaluated in eval mode in one pass. On CPU with one thread a
run is bit-identical to any other run of it, and a branch from its epoch-``e`` checkpoint reproduces its later
epochs bit for bit.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from ..spec import TAG_GLOBAL, ReplicaResult, ReplicaSpec, TrainingSpec, epoch_order, first_epoch, first_step
from ..spec import resolve, seed_key
from . import _noise
from ._common import _t, assemble, build_model, check_targets, dropout_key, error_result, is_classification
from ._common import load_optimizer_state, make_optimizer, one_line, one_thread, schedule_value, seed_global
from ._common import usable_optimizer_state


def train_sequential(spec: TrainingSpec, replica: ReplicaSpec) -> ReplicaResult:
    """Train one replica; a replica that cannot run comes back with ``error`` set, never raises."""
    t0 = time.perf_counter()
    try:
        cfg = resolve(spec, replica)
        check_targets(cfg)
        with one_thread(), _noise.hashed_dropout():
            return _train(cfg, replica, t0)
    except Exception as exc:  # a bad override, a failing model_fn / transform / schedule: this replica's verdict
        return error_result(replica, one_line(exc), time.perf_counter() - t0, "sequential")


def _train(cfg: TrainingSpec, replica: ReplicaSpec, t0: float) -> ReplicaResult:
    torch = _t()
    F = torch.nn.functional
    device = torch.device(cfg.device)
    model = build_model(cfg, replica, device)
    params = list(model.parameters())
    opt = make_optimizer(cfg, params)
    osd = usable_optimizer_state(cfg, replica.start, len(params))
    if osd is not None:
        load_optimizer_state(opt, osd)

    X, Y = cfg.train_x.to(device), cfg.train_y.to(device)
    VX = cfg.val_x.to(device) if cfg.val_x is not None else None
    VY = cfg.val_y.to(device) if cfg.val_y is not None else None
    classify = is_classification(cfg)
    loss_fn = F.cross_entropy if classify else F.mse_loss
    n, bs, spe = cfg.n_train, cfg.batch_size, cfg.steps_per_epoch
    epochs = list(range(first_epoch(replica), cfg.epochs))
    E = len(epochs)
    losses, accs = np.full((E, spe), np.nan), np.full((E, spe), np.nan)
    taken = np.zeros((E, spe), dtype=bool)
    val = np.full((E, 2), np.nan) if VX is not None else None
    lr = np.full(E, np.nan)
    checkpoints: dict = {}
    skip = replica.skip_steps
    seeds = torch.tensor(dropout_key(replica), dtype=torch.int64, device=device)
    nan = torch.tensor(float("nan"), device=device)
    g0 = g = first_step(replica, cfg)

    for i, epoch in enumerate(epochs):
        order = epoch_order(replica.data_seed, epoch, n, cfg.shuffle, device)
        seed_global(seed_key(TAG_GLOBAL, replica.noise_seed, epoch), device)
        model.train()
        step_losses, step_accs, ran = [], [], []
        for s in range(spe):
            lr_now = cfg.lr * schedule_value(cfg.schedule, g, epoch)
            lr[i] = lr_now
            if g in skip:
                g += 1
                continue
            idx = order[s * bs:(s + 1) * bs]
            x, y = X[idx], Y[idx]
            for group in opt.param_groups:
                group["lr"] = lr_now
            opt.zero_grad(set_to_none=True)
            _noise.set_step(seeds, g)
            out = model(x)
            _noise.stop()
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            step_losses.append(loss.detach())
            step_accs.append((out.detach().argmax(1) == y).float().mean() if classify else nan)
            ran.append(s)
            g += 1
        if ran:
            losses[i, ran] = torch.stack(step_losses).double().cpu().numpy()
            accs[i, ran] = torch.stack(step_accs).double().cpu().numpy()
            taken[i, ran] = True
        if not np.isfinite(losses[i, ran]).all():  # diverged: training stops here
            for j in range(i + 1, E):
                g += spe
                lr[j] = cfg.lr * schedule_value(cfg.schedule, g - 1, epochs[j])
            break
        if val is not None:
            val[i] = _evaluate(model, VX, VY, loss_fn, classify)
        if epoch in replica.checkpoint_epochs:
            checkpoints[epoch] = {"epoch": epoch, "step": g,
                                  "model": {k: v.detach().clone().cpu() for k, v in model.state_dict().items()},
                                  "optimizer": _cpu(copy.deepcopy(opt.state_dict()))}
    return assemble(replica, epochs, g0, losses, accs, taken, val, lr, time.perf_counter() - t0, "sequential",
                    checkpoints)


def _evaluate(model, VX, VY, loss_fn, classify: bool) -> tuple[float, float]:
    torch = _t()
    model.eval()
    with torch.no_grad():
        out = model(VX)
        loss = float(loss_fn(out, VY))
        acc = float((out.argmax(1) == VY).double().mean()) if classify else float("nan")
    model.train()
    return loss, acc


def _cpu(obj):
    torch = _t()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj

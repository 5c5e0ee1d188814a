"""What both engines share: building a replica's model, torch optimizers and their state, losses, and turning
per-step / per-epoch numbers into a ``ReplicaResult`` (divergence handling included)."""

from __future__ import annotations

import contextlib
import copy
import math

import numpy as np

from ...errors import require
from ..spec import TAG_DROPOUT, ReplicaError, ReplicaResult, ReplicaSpec, TrainingSpec, seed_key


_torch_mod = None


def _t():
    """torch, imported on first use (whyspike itself never needs it)."""
    global _torch_mod
    if _torch_mod is None:
        _torch_mod = require("torch", "torch")
    return _torch_mod


@contextlib.contextmanager
def one_thread():
    """Train with one intra-op thread (two threads per process were measured 25x slower under load on 2 cores)."""
    torch = _t()
    old = torch.get_num_threads()
    if old != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if old != 1:
            torch.set_num_threads(old)


def seed_global(seed: int, device) -> None:
    """``torch.manual_seed(seed)`` for the CPU (and ``device``'s) generator only: torch.manual_seed also queues a
    lazy seeding call for every accelerator backend, capturing a stack trace each time (0.5 ms; 0.5 s for 1024
    replicas' models). The values drawn on the CPU are the same."""
    torch = _t()
    seed &= (1 << 63) - 1
    torch.default_generator.manual_seed(seed)
    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.manual_seed(seed)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, ReplicaError):
        text = f"{type(exc).__name__}: {text}"
    return text[:300]


def dropout_key(replica: ReplicaSpec) -> int:
    return seed_key(TAG_DROPOUT, replica.noise_seed)


# ------------------------------------------------------------------------------------------ models
def build_model(cfg: TrainingSpec, replica: ReplicaSpec, device):
    """The replica's model: ``model_fn`` (and the transform) under ``torch.manual_seed(init_seed)``, with the
    branch state loaded; the caller's global RNG state is left as it was."""
    torch = _t()
    with torch.random.fork_rng(devices=[]):
        seed_global(int(replica.init_seed), "cuda" if torch.cuda.is_initialized() else "cpu")
        model = cfg.model_fn()
        if cfg.model_transform is not None:
            model = cfg.model_transform(model)
    if not isinstance(model, torch.nn.Module):
        raise ReplicaError(f"model_fn{' + model_transform' if cfg.model_transform else ''} returned "
                           f"{type(model).__name__}, not a torch.nn.Module")
    if replica.start is not None:
        load_model_state(model, replica.start["model"], transformed=cfg.model_transform is not None)
    return model.to(device)


def load_model_state(model, state: dict, transformed: bool) -> None:
    """Load a checkpoint's model state; with a model transform, state the transform made obsolete (BN running
    statistics after BN -> GroupNorm) is ignored, but every parameter and buffer of the model must be found."""
    try:
        model.load_state_dict(state, strict=True)
        return
    except RuntimeError as exc:
        if not transformed:
            raise ReplicaError(f"start model state does not fit the model: {one_line(exc)}") from None
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise ReplicaError(f"start model state lacks {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} "
                           "of the transformed model")


def has_batchnorm(model) -> bool:
    torch = _t()
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


# ------------------------------------------------------------------------------------------ torch optimizers
def make_optimizer(cfg: TrainingSpec, params):
    """The torch optimizer with the replica's hyper-parameters (torch validates them)."""
    torch = _t()
    try:
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                   weight_decay=cfg.weight_decay)
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    except ValueError as exc:
        raise ReplicaError(f"optimizer {cfg.optimizer}: {exc}") from None


def optimizer_state_kind(state_dict: dict | None) -> str | None:
    """'sgd' (momentum buffers), 'adam' (moments), or None (no per-parameter state)."""
    if not state_dict or not state_dict.get("state"):
        return None
    keys = set().union(*(set(s) for s in state_dict["state"].values() if isinstance(s, dict)))
    if "exp_avg" in keys:
        return "adam"
    if "momentum_buffer" in keys:
        return "sgd"
    return None


def usable_optimizer_state(cfg: TrainingSpec, start: dict | None, n_params: int) -> dict | None:
    """The branch's optimizer state if it belongs to this replica's optimizer family (SGD momentum buffers for
    SGD, moments for Adam / AdamW), else None: a branch that changes the optimizer starts with a fresh state."""
    if start is None:
        return None
    osd = start.get("optimizer")
    kind = optimizer_state_kind(osd)
    if kind is None or kind != ("sgd" if cfg.optimizer == "sgd" else "adam"):
        return None
    n_saved = sum(len(g.get("params", ())) for g in osd.get("param_groups", ()))
    if n_saved != n_params:
        raise ReplicaError(f"start optimizer state holds {n_saved} parameters, the model has {n_params}")
    return osd


def load_optimizer_state(opt, osd: dict) -> None:
    """Load the state (momentum buffers / moments / step counts) but keep this replica's hyper-parameters:
    torch's ``load_state_dict`` would bring back the checkpoint's LR, momentum, betas, ..."""
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    if len(osd.get("param_groups", ())) != len(opt.param_groups):
        osd = {"state": osd["state"], "param_groups": [
            {**fresh[0], "params": [i for g in osd["param_groups"] for i in g["params"]]}]}
    opt.load_state_dict(copy.deepcopy(osd))
    for g, f in zip(opt.param_groups, fresh):
        g.update(f)


# ------------------------------------------------------------------------------------------ losses
def is_classification(cfg: TrainingSpec) -> bool:
    return cfg.loss == "cross_entropy"


def check_targets(cfg: TrainingSpec) -> None:
    torch = _t()
    for name in ("train_y", "val_y"):
        y = getattr(cfg, name)
        if y is None:
            continue
        if not isinstance(y, torch.Tensor):
            raise ReplicaError(f"{name} must be a torch.Tensor (got {type(y).__name__})")
        if is_classification(cfg) and (y.is_floating_point() or y.is_complex()):
            raise ReplicaError(f"loss cross_entropy needs integer class labels in {name} (got {y.dtype}); "
                               "use loss='mse' for real-valued targets")
    for name in ("train_x", "val_x"):
        x = getattr(cfg, name)
        if x is not None and not isinstance(x, torch.Tensor):
            raise ReplicaError(f"{name} must be a torch.Tensor (got {type(x).__name__})")


# ------------------------------------------------------------------------------------------ results
def assemble(replica: ReplicaSpec, epochs: list[int], first_step: int, losses: np.ndarray, accs: np.ndarray,
             taken: np.ndarray, val: np.ndarray | None, lr: np.ndarray, seconds: float, engine: str,
             checkpoints: dict | None = None) -> ReplicaResult:
    """One replica's result from its per-step arrays (epochs x steps-per-epoch: loss, accuracy, whether the step
    ran) and per-epoch arrays (val: epochs x (loss, accuracy); lr). Both engines go through here, so divergence
    means the same everywhere: the first step whose loss is not finite ends the record — it stays in
    ``step_loss``, and its epoch and all later ones hold nan."""
    E = len(epochs)
    losses = np.asarray(losses, dtype=np.float64).reshape(E, -1)
    accs = np.asarray(accs, dtype=np.float64).reshape(E, -1)
    taken = np.asarray(taken, dtype=bool).reshape(E, -1)
    spe = taken.shape[1]
    steps = first_step + np.arange(E * spe, dtype=np.int64).reshape(E, spe)
    bad = taken & ~np.isfinite(losses)
    diverged = bool(bad.any())
    live = np.ones(E, dtype=bool)
    keep = taken.copy()
    if diverged:
        flat_bad = int(np.flatnonzero(bad.ravel())[0])
        e_bad = flat_bad // spe
        live[e_bad:] = False
        keep.ravel()[flat_bad + 1:] = False
    n = taken.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        train_loss = np.where(taken, losses, 0.0).sum(1) / n
        train_accuracy = np.where(taken, accs, 0.0).sum(1) / n
    train_loss[~live | (n == 0)] = np.nan
    train_accuracy[~live | (n == 0)] = np.nan
    val_loss, val_accuracy = np.full(E, np.nan), np.full(E, np.nan)
    if val is not None:
        val = np.asarray(val, dtype=np.float64).reshape(E, 2)
        val_loss[live], val_accuracy[live] = val[live, 0], val[live, 1]
    return ReplicaResult(name=replica.name, replica=replica, epochs=np.asarray(epochs, dtype=np.int64),
                         train_loss=train_loss, train_accuracy=train_accuracy, val_loss=val_loss,
                         val_accuracy=val_accuracy, step_loss=losses[keep], lr=np.asarray(lr, dtype=np.float64),
                         diverged=diverged, seconds=float(seconds), steps=steps[keep], engine=engine,
                         checkpoints=checkpoints or {})


def error_result(replica: ReplicaSpec, message: str, seconds: float = 0.0, engine: str = "") -> ReplicaResult:
    empty = np.zeros(0)
    return ReplicaResult(name=replica.name, replica=replica, epochs=np.zeros(0, dtype=np.int64),
                         train_loss=empty, train_accuracy=empty, val_loss=empty, val_accuracy=empty,
                         step_loss=empty, lr=empty, error=message, seconds=float(seconds),
                         steps=np.zeros(0, dtype=np.int64), engine=engine)


def schedule_value(schedule, step: int, epoch: int) -> float:
    if schedule is None:
        return 1.0
    v = float(schedule(step, epoch))
    if not math.isfinite(v) or v < 0:
        raise ReplicaError(f"schedule returned {v!r} at step {step} (epoch {epoch}): it must be a finite "
                           "multiplier >= 0")
    return v

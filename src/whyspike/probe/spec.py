"""What a counterfactual training is: the shared setup, one replica's changes to it, and what came out.

A probe trains the same small PyTorch problem several times, each *replica* changing exactly one factor: a seed
(initialisation, data order and dropout noise are separate seeds), a hyper-parameter, the LR schedule, the model
(BN -> GroupNorm, say), the batches taken, or the starting point (a branch from a checkpoint). The engines in
``whyspike.probe.engines`` turn ``TrainingSpec`` + ``ReplicaSpec`` into ``ReplicaResult``; everything random in a
training is a pure function of the replica's three seeds, so a replica can be re-run, branched and compared.

Randomness, precisely (both engines, any device):

- initialisation: ``torch.manual_seed(init_seed)`` right before ``model_fn()`` (and ``model_transform``);
- data order of epoch ``e``: ``epoch_order(data_seed, e, n)`` — a permutation that depends on ``(data_seed, e)``
  only, so a branch from epoch ``e`` replays the order an unbranched replica would have seen after ``e``;
- dropout: the masks of ``torch.nn.functional.dropout`` / ``dropout1d/2d/3d`` (so ``nn.Dropout*`` too) are a
  counter-based hash of ``(noise_seed, global step, call number within the forward, element)``: the same masks in
  the sequential and the vectorized engine, on CPU and GPU, and unchanged by any other intervention. Other random
  ops inside ``forward`` draw from torch's global generator, seeded per epoch from ``noise_seed`` (sequential
  engine; the vectorized engine draws them per replica from one generator: same distribution, other values).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import require

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adam", "adamw")
# The TrainingSpec fields a replica may override (scalars only: tensors and callables have their own fields).
OVERRIDABLE = ("lr", "momentum", "nesterov", "weight_decay", "betas", "eps", "batch_size", "epochs", "shuffle",
               "drop_last", "optimizer")


@dataclass
class TrainingSpec:
    """One training, fully described, in PyTorch: a model factory, the whole (small) data set in memory, the loss,
    the optimizer with torch's exact semantics, the batching and an optional LR schedule.

    ``schedule(global_step, epoch)`` returns the LR multiplier applied before that step (global steps count every
    batch from 0, skipped ones included). ``model_transform(model)`` returns the model to train (BN -> GroupNorm,
    a BN momentum changed, ...); it runs right after ``model_fn`` under the same seed.
    """

    model_fn: Callable[[], Any]
    train_x: Any
    train_y: Any
    val_x: Any = None
    val_y: Any = None
    loss: str = "cross_entropy"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int = 32
    epochs: int = 10
    shuffle: bool = True
    drop_last: bool = False
    schedule: Callable[[int, int], float] | None = None
    model_transform: Callable[[Any], Any] | None = None
    device: str = "cpu"

    @property
    def n_train(self) -> int:
        return int(len(self.train_x))

    @property
    def steps_per_epoch(self) -> int:
        n, b = self.n_train, int(self.batch_size)
        return n // b if self.drop_last else -(-n // b)


@dataclass
class ReplicaSpec:
    """One replica: the spec with at most a few things changed.

    ``start`` branches from a checkpoint: ``{"epoch": e, "step": s, "model": state_dict, "optimizer": torch
    optimizer state_dict or None}`` holds the state at the end of epoch ``e`` (``s`` = global steps done), and
    training continues with epoch ``e + 1``. A whyspike PyTorch recorder checkpoint
    (``whyspike.record.torch.load_checkpoint(path)``) has this shape, and so have the ``checkpoints`` an engine
    returns for the epochs named in ``checkpoint_epochs``.
    """

    name: str = "baseline"
    init_seed: int = 0
    data_seed: int = 0
    noise_seed: int = 0
    overrides: dict = field(default_factory=dict)
    schedule: Callable | None = None
    model_transform: Callable | None = None
    skip_steps: frozenset[int] = frozenset()
    start: dict | None = None
    checkpoint_epochs: frozenset[int] = frozenset()

    def to_dict(self) -> dict:
        """JSON-safe description (no callables, no tensors: a schedule / transform / start state is noted, not
        stored)."""
        start = None
        if self.start is not None:
            start = {"epoch": _int_or_none(self.start.get("epoch")), "step": _int_or_none(self.start.get("step"))}
        return {"name": self.name, "init_seed": int(self.init_seed), "data_seed": int(self.data_seed),
                "noise_seed": int(self.noise_seed), "overrides": _json_value(dict(self.overrides)),
                "schedule": _callable_name(self.schedule), "model_transform": _callable_name(self.model_transform),
                "skip_steps": sorted(int(s) for s in self.skip_steps), "start": start,
                "checkpoint_epochs": sorted(int(e) for e in self.checkpoint_epochs)}

    @classmethod
    def from_dict(cls, d: dict) -> ReplicaSpec:
        """The replica as described; callables and start states are not restored (``start`` keeps only its epoch
        and step, as a record of where the replica began)."""
        overrides = dict(d.get("overrides") or {})
        if isinstance(overrides.get("betas"), list):
            overrides["betas"] = tuple(overrides["betas"])
        return cls(name=d.get("name", "baseline"), init_seed=int(d.get("init_seed", 0)),
                   data_seed=int(d.get("data_seed", 0)), noise_seed=int(d.get("noise_seed", 0)),
                   overrides=overrides, skip_steps=frozenset(int(s) for s in d.get("skip_steps") or ()),
                   start=dict(d["start"]) if d.get("start") else None,
                   checkpoint_epochs=frozenset(int(e) for e in d.get("checkpoint_epochs") or ()))


@dataclass
class ReplicaResult:
    """What one replica's training produced. Per-epoch arrays cover the epochs trained (``epochs``, numbered as in
    an unbranched training); after a divergence (a non-finite training loss) they hold nan, ``step_loss`` ends at
    the step that diverged. ``steps`` are the global indices of the steps taken (skipped ones are absent).
    ``reused`` says which of these epochs were not trained for this replica but taken from a training known to be
    identical through them: ``{"from": "original" | replica name, "epochs": [first, last]}`` (a probe study's
    baseline seed 0 is the original; an arm forked from the baseline shares its epochs before the fork)."""

    name: str
    replica: ReplicaSpec
    epochs: np.ndarray
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    step_loss: np.ndarray
    lr: np.ndarray
    diverged: bool = False
    error: str | None = None
    seconds: float = 0.0
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    engine: str = ""
    checkpoints: dict = field(default_factory=dict)
    reused: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        """JSON-safe: arrays as lists, nan / inf as None, no callables, no checkpoints (tensors)."""
        return {"name": self.name, "replica": self.replica.to_dict(),
                "epochs": [int(e) for e in self.epochs], "train_loss": _floats(self.train_loss),
                "train_accuracy": _floats(self.train_accuracy), "val_loss": _floats(self.val_loss),
                "val_accuracy": _floats(self.val_accuracy), "step_loss": _floats(self.step_loss),
                "steps": [int(s) for s in self.steps], "lr": _floats(self.lr), "diverged": bool(self.diverged),
                "error": self.error, "seconds": float(self.seconds), "engine": self.engine,
                "reused": _json_value(dict(self.reused))}

    @classmethod
    def from_dict(cls, d: dict) -> ReplicaResult:
        def arr(key):
            return np.array([np.nan if v is None else v for v in d.get(key) or []], dtype=np.float64)

        return cls(name=d["name"], replica=ReplicaSpec.from_dict(d.get("replica") or {"name": d["name"]}),
                   epochs=np.array(d.get("epochs") or [], dtype=np.int64), train_loss=arr("train_loss"),
                   train_accuracy=arr("train_accuracy"), val_loss=arr("val_loss"),
                   val_accuracy=arr("val_accuracy"), step_loss=arr("step_loss"), lr=arr("lr"),
                   diverged=bool(d.get("diverged", False)), error=d.get("error"),
                   seconds=float(d.get("seconds", 0.0)), steps=np.array(d.get("steps") or [], dtype=np.int64),
                   engine=d.get("engine", ""), reused=dict(d.get("reused") or {}))


class ReplicaError(Exception):
    """A replica that cannot run as specified; its message becomes ``ReplicaResult.error``."""


def resolve(spec: TrainingSpec, replica: ReplicaSpec) -> TrainingSpec:
    """The TrainingSpec this replica trains with (overrides, schedule and transform applied), or ``ReplicaError``
    saying why it cannot run."""
    bad = sorted(set(replica.overrides) - set(OVERRIDABLE))
    if bad:
        raise ReplicaError(f"unknown override {', '.join(map(repr, bad))} (allowed: {', '.join(OVERRIDABLE)})")
    cfg = dataclasses.replace(spec, **replica.overrides)
    if replica.schedule is not None:
        cfg.schedule = replica.schedule
    if replica.model_transform is not None:
        cfg.model_transform = replica.model_transform
    ov = replica.overrides
    if cfg.optimizer not in OPTIMIZERS:
        raise ReplicaError(f"optimizer {cfg.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if cfg.loss not in LOSSES:
        raise ReplicaError(f"loss {cfg.loss!r} is not one of {', '.join(LOSSES)}")
    if cfg.optimizer in ("adam", "adamw"):
        if cfg.momentum:
            raise ReplicaError(f"momentum={cfg.momentum:g} but optimizer {cfg.optimizer} has no momentum "
                               f"(its beta1 is betas[0])")
        if cfg.nesterov:
            raise ReplicaError(f"nesterov=True but optimizer {cfg.optimizer} has no Nesterov momentum")
    else:
        for key in ("betas", "eps"):
            if key in ov:
                raise ReplicaError(f"{key}={ov[key]!r} but optimizer sgd has no {key}")
        if cfg.nesterov and not cfg.momentum > 0:
            raise ReplicaError(f"nesterov=True needs momentum > 0 (got momentum={cfg.momentum:g})")
    _check_number("lr", cfg.lr, lo=0.0)
    _check_number("momentum", cfg.momentum, lo=0.0)
    _check_number("weight_decay", cfg.weight_decay, lo=0.0)
    _check_number("eps", cfg.eps, lo=0.0)
    try:
        b1, b2 = (float(b) for b in cfg.betas)
    except (TypeError, ValueError):
        raise ReplicaError(f"betas={cfg.betas!r} is not a pair of numbers") from None
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ReplicaError(f"betas={cfg.betas!r}: each must lie in [0, 1)")
    cfg.betas = (b1, b2)
    for key in ("batch_size", "epochs"):
        v = getattr(cfg, key)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (1 if key == "batch_size" else 0):
            raise ReplicaError(f"{key}={v!r} must be an integer >= {1 if key == 'batch_size' else 0}")
    cfg.batch_size, cfg.epochs = int(cfg.batch_size), int(cfg.epochs)
    n = _length(spec.train_x, "train_x")
    if _length(spec.train_y, "train_y") != n:
        raise ReplicaError(f"train_x has {n} samples but train_y has {_length(spec.train_y, 'train_y')}")
    if (spec.val_x is None) != (spec.val_y is None):
        raise ReplicaError("val_x and val_y must be given together")
    if spec.val_x is not None and _length(spec.val_x, "val_x") != _length(spec.val_y, "val_y"):
        raise ReplicaError("val_x and val_y have different lengths")
    if cfg.drop_last and n < cfg.batch_size:
        raise ReplicaError(f"drop_last=True with batch_size={cfg.batch_size} > {n} samples leaves no batch")
    if replica.start is not None:
        start = replica.start
        if not isinstance(start, dict) or "epoch" not in start or start.get("model") is None:
            raise ReplicaError("start must be a dict with 'epoch', 'step' and a 'model' state_dict "
                               "(a whyspike checkpoint or an engine's checkpoints[epoch])")
        if _int_or_none(start.get("epoch")) is None or start["epoch"] < 0:
            raise ReplicaError(f"start epoch {start.get('epoch')!r} is not an epoch index")
    return cfg


def first_epoch(replica: ReplicaSpec) -> int:
    """The first epoch this replica trains (0, or the one after its branch point)."""
    return 0 if replica.start is None else int(replica.start["epoch"]) + 1


def first_step(replica: ReplicaSpec, cfg: TrainingSpec) -> int:
    """The global index of this replica's first step (a branch continues the counter of its checkpoint)."""
    if replica.start is None:
        return 0
    s = replica.start.get("step")
    return int(s) if s is not None else (int(replica.start["epoch"]) + 1) * cfg.steps_per_epoch


# ------------------------------------------------------------------------------------------ seeded data order
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
TAG_ORDER, TAG_DROPOUT, TAG_GLOBAL = 0x4F52444552, 0x44524F50, 0x474C4F42


def _signed(v: int) -> int:
    v &= _M64
    return v - (1 << 64) if v >> 63 else v


def mix64(x: int) -> int:
    """splitmix64's finaliser on a Python int (mod 2**64), returned as a signed int64 value."""
    z = x & _M64
    z = ((z ^ (z >> 30)) * _MIX1) & _M64
    z = ((z ^ (z >> 27)) * _MIX2) & _M64
    return _signed(z ^ (z >> 31))


def seed_key(*parts: int) -> int:
    """A 64-bit key from several integers (tag, seed, epoch, ...): order matters, every part changes it."""
    h = 0
    for p in parts:
        h = mix64((h ^ (int(p) & _M64)) + _GOLDEN)
    return h


def mix64_tensor(z):
    """``mix64`` on an int64 tensor (wrapping multiplication; logical shifts spelled out for signed int64)."""
    z = z ^ ((z >> 30) & ((1 << 34) - 1))
    z = z * _signed(_MIX1)
    z = z ^ ((z >> 27) & ((1 << 37) - 1))
    z = z * _signed(_MIX2)
    return z ^ ((z >> 31) & ((1 << 33) - 1))


_EPOCH_MIX = 0xE7037ED1A0B428DB


def epoch_orders(seed_keys, epoch: int, n: int):
    """The data orders of ``epoch`` for R replicas at once: ``seed_keys`` is an int64 (R, 1) tensor of
    ``seed_key(TAG_ORDER, data_seed)``; returns (R, n) permutations, on the keys' device."""
    torch = require("torch", "torch")
    base = mix64_tensor(seed_keys + _signed(epoch * _EPOCH_MIX))
    idx = torch.arange(1, n + 1, dtype=torch.int64, device=seed_keys.device) * _signed(_GOLDEN)
    return torch.argsort(mix64_tensor(base + idx), dim=1, stable=True)


def epoch_order(data_seed: int, epoch: int, n: int, shuffle: bool = True, device=None):
    """The order in which a replica with ``data_seed`` visits the ``n`` training samples in ``epoch``.

    A function of ``(data_seed, epoch)`` alone: sorting hashed keys (``torch.argsort(stable=True)``) gives a
    uniformly random permutation that is the same on every device and can be drawn for many replicas in one call
    (``epoch_orders``). (Not ``torch.randperm`` with a seeded generator: that needs one call per replica and
    epoch, 10 ms per epoch for 1024 replicas, and its values differ between CPU and CUDA.)

    >>> epoch_order(0, 3, 5).tolist() == epoch_order(0, 3, 5).tolist() != epoch_order(1, 3, 5).tolist()
    True
    >>> epoch_order(0, 3, 5, shuffle=False).tolist()
    [0, 1, 2, 3, 4]
    """
    torch = require("torch", "torch")
    if not shuffle:
        return torch.arange(n, device=device)
    keys = torch.tensor([[seed_key(TAG_ORDER, data_seed)]], dtype=torch.int64, device=device)
    return epoch_orders(keys, epoch, n)[0]


# ------------------------------------------------------------------------------------------ small helpers
def _check_number(name: str, v: Any, lo: float) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v) or v < lo:
        raise ReplicaError(f"{name}={v!r} must be a finite number >= {lo:g}")


def _length(x: Any, name: str) -> int:
    try:
        return int(len(x))
    except TypeError:
        raise ReplicaError(f"{name} has no length: pass a tensor with samples along dimension 0") from None


def _int_or_none(v: Any) -> int | None:
    try:
        return None if v is None or isinstance(v, bool) else int(v)
    except (TypeError, ValueError):
        return None


def _callable_name(fn: Callable | None) -> str | None:
    if fn is None:
        return None
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _json_value(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return repr(v)


def _floats(a: Any) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(a, dtype=np.float64).ravel()]

"""Dropout masks that depend on the replica's noise seed, the global step and the element — nothing else.

torch draws dropout masks from a generator whose state depends on everything drawn before, so two engines (one
replica at a time vs R replicas under ``vmap``) could never agree on a mask, and changing an unrelated factor would
change the noise too. Here each mask element is a hash of ``(noise_seed, global step, call number in the forward,
element index)`` (splitmix64 on int64 tensors: exact integer arithmetic, the same on every device): the
sequential engine, the vectorized engine (``vmap`` or the stacked fast path) and a branch all draw identical masks.

While an engine trains, ``torch.nn.functional.dropout`` and ``dropout1d/2d/3d`` (which ``nn.Dropout*`` call) are
replaced by the hashed versions; outside a training step, or in eval mode, they behave exactly as torch's.
"""

from __future__ import annotations

import contextlib

from ..spec import _GOLDEN, _signed, mix64_tensor
from ._common import _t

_STEP_MIX = _signed(0xD6E8FEB86659FD93)
_CALL_MIX = _signed(0xA0761D6478BD642F)
_ELEM_MIX = _signed(_GOLDEN)
_BITS = 24


class _State:
    def __init__(self):
        self.seeds = None  # int64 tensor: () sequential, (R, 1, 1) fast path, a batched scalar under vmap
        self.step = 0
        self.calls = 0
        self.base = None  # per-step key, derived lazily from seeds and step
        self.depth = 0
        self.originals: dict = {}


_state = _State()
_index_cache: dict = {}


@contextlib.contextmanager
def hashed_dropout():
    """Install the hashed dropout functions for the duration of a training (re-entrant)."""
    F = _t().nn.functional
    if _state.depth == 0:
        _state.originals = {name: getattr(F, name) for name in ("dropout", "dropout1d", "dropout2d", "dropout3d")}
        F.dropout = _dropout
        F.dropout1d = _feature(1, "dropout1d")
        F.dropout2d = _feature(2, "dropout2d")
        F.dropout3d = _feature(3, "dropout3d")
    _state.depth += 1
    saved = (_state.seeds, _state.step, _state.calls, _state.base)
    try:
        yield _state
    finally:
        _state.seeds, _state.step, _state.calls, _state.base = saved
        _state.depth -= 1
        if _state.depth == 0:
            for name, fn in _state.originals.items():
                setattr(F, name, fn)


def set_step(seeds, step: int) -> None:
    """Masks drawn from now on belong to global ``step`` of the replicas whose seed keys are ``seeds``."""
    _state.seeds, _state.step, _state.calls, _state.base = seeds, int(step), 0, None


def stop() -> None:
    """Outside a training step (evaluation, user code): torch's own dropout."""
    _state.seeds, _state.base = None, None


@contextlib.contextmanager
def replica_seeds(seeds):
    """Inside a ``vmap``-ped forward: use the batched per-replica seed keys (the step stays as set)."""
    saved = (_state.seeds, _state.calls, _state.base)
    _state.seeds, _state.calls, _state.base = seeds, 0, None
    try:
        yield
    finally:
        _state.seeds, _state.calls, _state.base = saved


def _index(shape: tuple, device, transposed: bool):
    """Element numbers (times the mixing constant) of a tensor of ``shape`` in row-major order; ``transposed``
    gives them for the feature-major layout (last two dims swapped) of the stacked fast path."""
    key = (shape, str(device), transposed)
    idx = _index_cache.get(key)
    if idx is None:
        torch = _t()
        n = 1
        for s in shape:
            n *= int(s)
        idx = (torch.arange(1, n + 1, dtype=torch.int64, device=device) * _ELEM_MIX).view(shape)
        if transposed:
            idx = idx.transpose(-1, -2)
        if len(_index_cache) > 64:
            _index_cache.clear()
        _index_cache[key] = idx
    return idx


def _call_key():
    if _state.base is None:
        _state.base = mix64_tensor(_state.seeds + _signed(_state.step * _STEP_MIX))
    _state.calls += 1
    return mix64_tensor(_state.base + _signed(_state.calls * _CALL_MIX))


def keep_mask(shape: tuple, device, p: float, transposed: bool = False):
    """The boolean keep-mask of the next dropout call of the current step (shape: the per-replica shape; the
    replica dimensions come from the seeds' shape)."""
    key = _call_key()
    h = mix64_tensor(key + _index(tuple(shape), device, transposed))
    threshold = int(round((1.0 - float(p)) * (1 << _BITS)))
    return ((h >> (64 - _BITS)) & ((1 << _BITS) - 1)) < threshold


def apply_mask(x, keep, p: float):
    """``x`` with dropped elements zeroed and kept ones scaled by 1 / (1 - p), as torch computes it."""
    if p >= 1.0:
        return x * 0.0
    return x * keep.to(x.dtype).div_(1.0 - p)


def _active(p: float, training: bool) -> bool:
    return _state.seeds is not None and training and p > 0.0


def _dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    if not _active(p, training):
        return _state.originals["dropout"](input, p, training, inplace)
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return apply_mask(input, keep_mask(tuple(input.shape), input.device, p), p)


def _feature(spatial: int, name: str):
    def dropout_nd(input, p: float = 0.5, training: bool = True, inplace: bool = False):
        if not _active(p, training) or input.dim() != spatial + 2:
            return _state.originals[name](input, p, training, inplace)
        mask_shape = tuple(input.shape[:2])
        keep = keep_mask(mask_shape, input.device, p).view(*mask_shape, *([1] * spatial))
        return apply_mask(input, keep, p)

    dropout_nd.__name__ = name
    return dropout_nd

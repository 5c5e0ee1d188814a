"""Epoch checkpoints (model + optimizer + scheduler state) in a format loaded with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import InputError, UsageError
from ._support import _t

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_FORMAT = "whyspike/torch-checkpoint-v1"

_DROP = object()


def _weights_only_safe(value: Any, depth: int = 0) -> Any:
    """What ``torch.load(weights_only=True)`` accepts: tensors, numbers, strings, containers of them. Anything else
    (a function a scheduler keeps, say) is left out, with the dict key or list item holding it."""
    torch = _t()
    if depth > 8:
        return _DROP
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, (list, tuple)):
        items = [v for v in (_weights_only_safe(v, depth + 1) for v in value) if v is not _DROP]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            safe = _weights_only_safe(v, depth + 1)
            if isinstance(k, (str, int, float, bool)) and safe is not _DROP:
                out[k] = safe
        return out
    return _DROP


def save_checkpoint(writer, epoch: int, step: int, model=None, optimizer=None, scheduler=None) -> None:
    """Write the checkpoint of ``epoch`` into ``writer``'s ring buffer (a write error stops the writer, quietly
    for training)."""
    d = writer.checkpoint_dir(epoch)
    if d is None:
        return
    torch = _t()
    state: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "epoch": int(epoch), "step": int(step)}
    if model is not None:
        state["model"] = model.state_dict()
    if optimizer is not None:
        state["optimizer"] = _weights_only_safe(optimizer.state_dict())
    if scheduler is not None and hasattr(scheduler, "state_dict"):
        state["scheduler"] = _weights_only_safe(scheduler.state_dict())
    try:
        torch.save(state, d / CHECKPOINT_FILE)
    except OSError as exc:
        writer.fail(f"{exc.strerror or exc} while writing a checkpoint")
        return
    writer.commit_checkpoint(epoch)


def load_checkpoint(path: str | os.PathLike, model=None, optimizer=None, *, scheduler=None, map_location="cpu"):
    """Load a recorder checkpoint (a ``checkpoints/epoch-NNNN`` directory or its ``state.pt``) into ``model`` /
    ``optimizer`` / ``scheduler``; returns the whole state dict. Never unpickles objects (``weights_only=True``)."""
    torch = _t()
    p = Path(path)
    if p.is_dir():
        if (p / "checkpoints").is_dir():
            have = ", ".join(sorted(c.name for c in (p / "checkpoints").iterdir() if c.is_dir())[-5:])
            raise UsageError(f"{p} is a run directory: pass one of its checkpoints, e.g. {p}/checkpoints/<epoch> "
                             f"(latest: {have or 'none'})")
        p = p / CHECKPOINT_FILE
    if not p.is_file():
        raise InputError(p, "is not a whyspike checkpoint (no such file)",
                         "pass a checkpoints/epoch-NNNN directory of a run recorded with checkpoints > 0")
    state = torch.load(p, map_location=map_location, weights_only=True)
    if model is not None and "model" in state:
        model.load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    return state

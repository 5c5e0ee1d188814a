"""Plumbing shared by the PyTorch recorder's modules: torch imported on first use, the run directory, never raising
into training, and host copies of device scalars."""

from __future__ import annotations

import functools
import math
import os
import re
import sys
import time
from pathlib import Path

from ...errors import require
from ..store import RunWriter

_torch_mod = None


def _t():
    """torch, imported on first use (whyspike itself never needs it)."""
    global _torch_mod
    if _torch_mod is None:
        _torch_mod = require("torch", "torch")
    return _torch_mod


def new_run_dir(base: str | os.PathLike = "whyspike-runs", name: str = "torch") -> Path:
    """A fresh ``base/<script-or-name>-YYYYmmdd-HHMMSS[-n]`` path (the layout the Keras recorder uses)."""
    arg0 = sys.argv[0] if sys.argv else ""
    stem = Path(arg0).stem if arg0.endswith(".py") else name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or name
    base_path = Path(base) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base_path, 2
    while path.exists():
        path, n = base_path.with_name(f"{base_path.name}-{n}"), n + 1
    return path


def _writer_for(run_dir, checkpoints: int) -> RunWriter:
    if isinstance(run_dir, RunWriter):
        return run_dir
    return RunWriter(run_dir if run_dir is not None else new_run_dir(), keep_checkpoints=max(int(checkpoints), 1))


def _guarded(default=None):
    """Never let a recorder method raise into training: report once per method, return ``default``."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the training loop must survive any recorder bug
                self._problem(fn.__name__, exc)
                return default() if callable(default) else default

        return wrapper

    return deco


def _device_of(model):
    for p in model.parameters():
        return p.device
    return None


def _to_floats(tensors: list) -> list[float]:
    """Host floats for a list of 0-d tensors: one stack and one copy per (device, dtype)."""
    torch = _t()
    out: list[float] = [math.nan] * len(tensors)
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    for (device, dtype), idx in groups.items():
        stacked = torch.stack([tensors[i] for i in idx])
        if not stacked.is_floating_point():
            stacked = stacked.float()
        if device.type in ("cpu", "cuda"):
            stacked = stacked.double()
        elif dtype in (torch.float16, torch.bfloat16):
            stacked = stacked.float()
        for i, v in zip(idx, stacked.cpu().tolist()):
            out[i] = v
    return out

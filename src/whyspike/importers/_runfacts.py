"""Facts shared by the experiment-tracker importers (MLflow, W&B): hyper-parameters → Setup, epoch boundaries.

Trackers store hyper-parameters as a flat dict the user chose the keys of; only a few common spellings are
mapped onto :class:`~whyspike.run.Setup` fields. Everything stays in ``Setup.config`` as logged.

    >>> from whyspike.run import Setup
    >>> s = Setup(); apply_hparams(s, {"lr": "0.1", "batch_size": "128", "optimizer": "SGD"})
    >>> s.learning_rate, s.batch_size, s.optimizer
    (0.1, 128, 'SGD')
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..run import Event, Setup

# Setup field -> accepted config keys (compared lower-cased, '-' read as '_'), first match wins
_ALIASES: dict[str, tuple[str, ...]] = {
    "learning_rate": ("lr", "learning_rate", "learningrate", "base_lr", "initial_lr"),
    "batch_size": ("batch_size", "batchsize", "train_batch_size", "per_device_train_batch_size"),
    "momentum": ("momentum",),
    "weight_decay": ("weight_decay", "weightdecay", "wd"),
    "optimizer": ("optimizer", "optim", "optimizer_name"),
    "epochs": ("epochs", "num_epochs", "n_epochs", "max_epochs", "num_train_epochs"),
}
_KIND = {"learning_rate": float, "momentum": float, "weight_decay": float, "batch_size": int, "epochs": int,
         "optimizer": str}


def _number(value: Any, kind: type) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def apply_hparams(setup: Setup, config: dict[str, Any]) -> None:
    """Fill the Setup fields still unknown from well-known hyper-parameter keys of ``config``."""
    norm = {str(k).lower().replace("-", "_"): v for k, v in config.items()}
    for fieldname, keys in _ALIASES.items():
        if getattr(setup, fieldname) is not None:
            continue
        for key in keys:
            if key not in norm:
                continue
            raw = norm[key]
            if _KIND[fieldname] is str:
                value = raw if isinstance(raw, str) and raw.strip() else None
            else:
                value = _number(raw, _KIND[fieldname])
            if value is not None:
                setattr(setup, fieldname, value)
                break


def epoch_boundary_events(steps: Sequence[float], epochs: Sequence[float], source: str) -> list[Event]:
    """An ``epoch_boundary`` event at the first step where the logged epoch value changes.

    ``steps``/``epochs`` are the (step, epoch-value) pairs of an ``epoch`` metric in logging order.
    """
    events: list[Event] = []
    last = None
    for step, epoch in sorted(zip(steps, epochs), key=lambda p: p[0]):
        if not math.isfinite(epoch):
            continue
        if last is not None and epoch != last:
            e = int(epoch) if float(epoch).is_integer() else epoch
            events.append(Event("epoch_boundary", "step", float(step), f"{source}: epoch {e} starts at step {step:g}",
                                {"epoch": float(epoch)}))
        last = epoch
    return events

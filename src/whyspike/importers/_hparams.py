"""Hyper-parameters as logged (tracker params, config dumps, hparams.yaml) → :class:`~whyspike.run.Setup`.

Maps the common spellings (``lr``, ``batch_size``, ``optimizer``, ...), the schedule fields and the spellings of older
frameworks (Torch7's ``learningRateDecayRatio``, ``epoch_step``, ``optimMethod``, ``max_epoch``), and reads the
simple ``key: value`` YAML Lightning writes to ``hparams.yaml`` without needing PyYAML.

    >>> from whyspike.run import Setup
    >>> s = Setup(); fill_setup(s, {"learningRate": 0.1, "epoch_step": [60, 120], "learningRateDecayRatio": 0.2})
    >>> s.learning_rate, s.lr_milestones, s.lr_decay_factor
    (0.1, [60.0, 120.0], 0.2)
    >>> parse_simple_yaml("lr: 0.1\\nopt:\\n  name: sgd\\nmilestones: [30, 60]\\n")
    {'lr': 0.1, 'opt': {'name': 'sgd'}, 'milestones': [30, 60]}
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..run import Setup

# Setup field -> accepted config keys (compared lower-cased, '-' read as '_'), first match wins; the order of the
# fields matters only for epoch_step, whose single-number form needs `epochs` first
_ALIASES: dict[str, tuple[str, ...]] = {
    "learning_rate": ("lr", "learning_rate", "learningrate", "base_lr", "initial_lr"),
    "batch_size": ("batch_size", "batchsize", "train_batch_size", "per_device_train_batch_size"),
    "momentum": ("momentum",),
    "weight_decay": ("weight_decay", "weightdecay", "wd"),
    "optimizer": ("optimizer", "optim", "optimizer_name", "optimmethod", "opt", "optim_method"),
    "epochs": ("epochs", "num_epochs", "n_epochs", "max_epochs", "num_train_epochs", "max_epoch", "nepochs",
               "n_epoch", "num_epoch"),
    "lr_milestones": ("lr_milestones", "milestones", "epoch_step", "lr_steps", "lr_decay_epochs", "schedule",
                      "decay_epochs"),
    "lr_decay_factor": ("lr_decay_factor", "learningratedecayratio", "gamma", "lr_gamma", "lr_decay_rate",
                        "decay_rate"),
}


def _number(value: Any, kind: type = float) -> float | int | None:
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


def _numbers(v: Any) -> list[float] | None:
    if isinstance(v, str):
        v = [p for p in re.split(r"[\s,\[\]()]+", v) if p]
    if isinstance(v, dict):  # a Lua table dumped as {1: 60, 2: 120}
        v = [v[k] for k in sorted(v, key=lambda k: float(k) if _number(k) is not None else math.inf)]
    if not isinstance(v, (list, tuple)):
        return None
    out = [_number(x) for x in v]
    return None if not out or any(x is None for x in out) else out  # type: ignore[return-value]


def _milestones(raw: Any, key: str, setup: Setup) -> list[float] | None:
    value = _numbers(raw)
    n = _number(raw)
    if value is None and n is not None and n > 0 and key == "epoch_step" and setup.epochs:
        # one number: Torch7 WRN decays every n epochs; the milestones follow once epochs are known
        value = [n * i for i in range(1, int(setup.epochs // n) + 1)]
        if value and value[-1] >= setup.epochs:
            value.pop()
    return value


def _parse(fieldname: str, raw: Any, key: str, setup: Setup) -> Any:
    if fieldname == "optimizer":
        return raw.strip() if isinstance(raw, str) and raw.strip() else None
    if fieldname in ("batch_size", "epochs"):
        return _number(raw, int)
    if fieldname == "lr_decay_factor":
        n = _number(raw)
        return n if n is not None and 0 < n < 1 else None
    if fieldname == "lr_milestones":
        return _milestones(raw, key, setup)
    return _number(raw)


def fill_setup(setup: Setup, config: dict[str, Any]) -> None:
    """Fill the Setup fields still unknown from ``config`` (a flat or nested dict as logged); never overwrites."""
    flat: dict[str, Any] = {str(k): v for k, v in config.items()}
    for v in config.values():  # nested sections (`optimizer: {lr: ...}`) count too, top level first
        if isinstance(v, dict):
            for k2, v2 in v.items():
                flat.setdefault(str(k2), v2)
    norm = {str(k).lower().replace("-", "_"): v for k, v in flat.items()}
    for fieldname, keys in _ALIASES.items():
        if getattr(setup, fieldname) is not None:
            continue
        for key in keys:
            if key in norm and (value := _parse(fieldname, norm[key], key, setup)) is not None:
                setattr(setup, fieldname, value)
                break


# ------------------------------------------------------------------------------------------------ simple YAML

_PY_TAG = re.compile(r"^!!\S+\s*")


def _scalar(text: str) -> Any:
    s = text.strip()
    if not s or s in ("~", "null", "Null", "NULL"):
        return None
    if s[0] in "'\"" and s[-1] == s[0] and len(s) >= 2:
        return s[1:-1]
    if s in ("true", "True", "TRUE", "yes"):
        return True
    if s in ("false", "False", "FALSE", "no"):
        return False
    if s.startswith("[") and s.endswith("]"):
        inner = s[1:-1].strip()
        return [_scalar(p) for p in inner.split(",")] if inner else []
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def parse_simple_yaml(text: str) -> dict[str, Any]:
    """The ``key: value`` subset of YAML: nested mappings by indentation, ``- item`` lists, flow lists, scalars.

    Tagged values (``!!python/object``) and anything fancier come back as text; this never raises.
    """
    root: dict[str, Any] = {}
    stack: list[tuple[int, Any]] = [(0, root)]  # (indent of the container's entries, container)
    pending: tuple[int, dict, str] | None = None  # a `key:` whose value starts on the next line
    for raw in text.splitlines():
        line = "" if raw.lstrip().startswith("#") else raw.rstrip()
        if " #" in line and "'" not in line and '"' not in line:
            line = line.split(" #", 1)[0].rstrip()
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        item = body == "-" or body.startswith("- ")
        if pending is not None:
            p_indent, p_parent, p_key = pending
            pending = None
            if indent > p_indent or (item and indent == p_indent):
                container: Any = [] if item else {}
                p_parent[p_key] = container
                stack.append((indent, container))
        while len(stack) > 1:
            top_indent, top = stack[-1]
            if indent < top_indent or (isinstance(top, list) and not item and indent <= top_indent):
                stack.pop()
            else:
                break
        parent = stack[-1][1]
        if item:
            if isinstance(parent, list):
                parent.append(_scalar(_PY_TAG.sub("", body[1:].strip())))
            continue
        if ":" not in body or not isinstance(parent, dict):
            continue
        key, _, value = body.partition(":")
        key = key.strip().strip("'\"")
        if not key:
            continue
        value = _PY_TAG.sub("", value.strip())
        if value:
            parent[key] = _scalar(value)
        else:
            parent[key] = None
            pending = (indent, parent, key)
    return root

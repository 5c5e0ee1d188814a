"""Keras logs: the ``CSVLogger`` file (``keras-csv``) and a saved ``History`` (``keras-history``).

``CSVLogger`` writes ``epoch`` (0-based, used as is) then the metric names sorted, one row per epoch, ``NA`` for a
key missing in an epoch. A History has no numbering; its values are numbered 1, 2, ... as Keras prints epochs.

    >>> # json.dump(model.fit(...).history, open("history.json", "w"))
    >>> run = load_run("history.json")                      # doctest: +SKIP
    >>> run.series["val_accuracy"].x[:3]                    # doctest: +SKIP
    array([1, 2, 3])
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..run import Run, Source, make_series
from ._registry import Importer, Probe, register
from ._tabular import STEP_NAMES, add_table_series, head_dialect, open_table, read_json

_IDENT = re.compile(r"^[A-Za-z_][\w.\-/]*$")
_LIST_START = re.compile(r'^\{\s*"[^"]*"\s*:\s*\[\s*(?:[-+\d.]|NaN|-?Infinity|null|"[-+\d.]|\])')
_DICT_START = re.compile(r'^\{\s*"[^"]*"\s*:\s*\{\s*"\d+"\s*:')  # pandas DataFrame(history.history).to_json()
_WRAPPED = re.compile(r'^\{\s*"(?:history|params|epoch)"\s*:')


def _keras_like(name: str) -> bool:
    low = name.lower()
    return low.endswith(("loss", "accuracy", "acc")) or low in ("lr", "learning_rate") or low.startswith("val_")


def sniff_csv(p: Probe) -> float:
    d = head_dialect(p)
    if d is None or not d.names or d.names[0].strip() != "epoch":
        return 0.0
    rest = [n.strip() for n in d.names[1:] if n.strip()]
    if not rest or any(n.lower() in STEP_NAMES for n in rest):
        return 0.0  # a step column: Lightning, W&B or a generic table
    if not all(_IDENT.match(n) for n in rest) or not any(_keras_like(n) for n in rest):
        return 0.0
    return 0.9 if rest == sorted(rest) else 0.8  # CSVLogger sorts its keys


def load_csv(path: Path) -> Run:
    run, table = open_table(path, "keras-csv")
    epoch = table.find(("epoch",))
    if epoch is None:
        raise InputError(path, "has no numeric 'epoch' column, which Keras' CSVLogger always writes",
                         "read it with --input-format table")
    add_table_series(run, table, mode="epoch", epoch_col=epoch)
    return run


def sniff_history(p: Probe) -> float:
    if p.is_dir:
        return 0.0
    t = p.text.lstrip("\ufeff").lstrip()
    if not t.startswith("{") or '"log_history"' in t:
        return 0.0
    keras_names = bool(re.search(r'"(?:val_)?(?:loss|accuracy|acc)"\s*:', t[:4096]))
    if _LIST_START.match(t):
        return 0.85 if keras_names else 0.6
    if _DICT_START.match(t) or (_WRAPPED.match(t) and '"history"' in t):
        return 0.7 if keras_names else 0.4
    return 0.0


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):  # json.dump(..., default=str) writes numpy floats as text
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _as_list(v: Any) -> list | None:
    if isinstance(v, list):
        return v
    if isinstance(v, dict) and v and all(re.fullmatch(r"-?\d+", str(k)) for k in v):
        return [v[k] for k in sorted(v, key=int)]
    return None


def load_history(path: Path) -> Run:
    what = "a Keras History saved as JSON (metric name -> list of per-epoch values)"
    data = read_json(path, what)
    run = Run(Source(str(path), "keras-history"))
    hist, params, numbered = data, None, None
    if isinstance(data, dict) and isinstance(data.get("history"), dict):
        # {"history": history.history, "params": history.params, "epoch": history.epoch}
        hist, params, numbered = data["history"], data.get("params"), _as_list(data.get("epoch"))
    if not isinstance(hist, dict):
        raise InputError(path, f"is JSON but not {what}", "save it with json.dump(history.history, f)")
    lists: dict[str, list[float | None]] = {}
    for key, value in hist.items():
        seq = _as_list(value)
        if seq is None:
            continue
        nums = [_number(v) for v in seq]
        if any(n is None and v is not None for n, v in zip(nums, seq)):
            run.warnings.append(f"{key!r}: values that are not numbers were skipped")
        lists[str(key)] = nums
    if not lists:
        raise InputError(path, f"is JSON but not {what}", "save it with json.dump(history.history, f)")
    n = max(len(v) for v in lists.values())
    base = np.arange(1, n + 1, dtype=np.float64)
    if numbered is not None and len(numbered) == n and all(_number(e) is not None for e in numbered):
        base = np.array([_number(e) for e in numbered], dtype=np.float64) + 1  # History.epoch is 0-based
    for key, nums in lists.items():
        m = len(nums)
        if m == 0:
            continue
        if m == n:
            x = base
        elif n % m == 0:
            k = n // m
            x = base[k - 1::k]
            run.warnings.append(f"{key!r} has {m} values for {n} epochs: read as logged every {k} epochs "
                                f"(validation_freq={k}), first at epoch {x[0]:g}")
        else:
            x = base[:m]
            run.warnings.append(f"{key!r} has {m} values for {n} epochs; they are numbered from the first epoch")
        y = np.array([math.nan if v is None else v for v in nums], dtype=np.float64)
        logged = np.array([v is not None for v in nums], dtype=bool)
        run.add(make_series(key, "epoch", x[logged], y[logged], events=run.events, warnings=run.warnings))
    if isinstance(params, dict):
        run.setup.config = dict(params)
        epochs, steps = _number(params.get("epochs")), _number(params.get("steps"))
        run.setup.epochs = int(epochs) if epochs is not None and epochs.is_integer() else None
        run.setup.steps_per_epoch = steps if steps else None
    return run


register(Importer("keras-csv", "Keras CSVLogger file (epoch column, 0-based)", sniff_csv, load_csv))
register(Importer("keras-history", "Keras History saved as JSON (dict of per-epoch lists, 1-based)", sniff_history,
                  load_history))

"""The optional inputs of the report — probe results and landscape measurements — read tolerantly.

Both are JSON documents another part of whyspike writes (schemas ``whyspike/probe-v1`` and ``whyspike/landscape-v1``,
described in docs/report.md). Any key may be missing and a section is drawn from what is there; what cannot be
used (a run whose x and y differ in length, a value that is not a number) is dropped with a note, never a crash.
A document of another kind altogether (wrong schema, not JSON) is an :class:`~whyspike.errors.InputError`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError

PROBE_SCHEMA = "whyspike/probe-v1"
LANDSCAPE_SCHEMA = "whyspike/landscape-v1"


def read_json(value: Any, what: str, schema: str, keys: tuple[str, ...]) -> dict | None:
    """``value`` as a dict: None stays None, a dict is taken as is, a path is read as JSON.

    ``keys``: a document without a ``schema`` is still accepted when it has one of these keys.
    """
    if value is None:
        return None
    where: str | None = None
    if isinstance(value, (str, os.PathLike)):
        where = str(value)
        path = Path(value)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(path, "no such file", f"give the {what} JSON file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(path, f"cannot be read ({exc})", f"give the {what} JSON file") from None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InputError(path, f"is not valid JSON ({exc})", f"give the {what} JSON file ({schema})") from None
    if not isinstance(value, dict):
        raise InputError(where, f"the {what} document is a {type(value).__name__}, not a JSON object",
                         f"give the {what} JSON file ({schema})")
    found = value.get("schema")
    if found is not None and not str(found).startswith(schema.rsplit("-", 1)[0]):
        raise InputError(where, f"has schema {found!r}, not {schema}", f"give the {what} JSON file ({schema})")
    if found is None and not any(k in value for k in keys):
        raise InputError(where, f"has neither a schema nor any of the keys {', '.join(keys)}",
                         f"give the {what} JSON file ({schema})")
    return value


def read_probes(value: Any) -> dict | None:
    """A probe result (``whyspike probe``'s result.json, a path or a dict), checked as :func:`read_json` does."""
    return read_json(value, "probe results", PROBE_SCHEMA, ("interventions", "baseline"))


def read_landscape(value: Any) -> dict | None:
    """A landscape report (``whyspike landscape --format json``, a path or a dict), checked as :func:`read_json`."""
    return read_json(value, "landscape", LANDSCAPE_SCHEMA, ("interpolation", "surface", "curvature", "noise_scale"))


def num(v: Any) -> float | None:
    """A finite float, or None (bools, strings, NaN and inf are not numbers here)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def nums(v: Any) -> np.ndarray:
    """A float array from a list, NaN where an entry is not a number; empty when ``v`` is not a list."""
    if not isinstance(v, (list, tuple)):
        return np.zeros(0)
    return np.array([np.nan if num(e) is None else float(e) for e in v], dtype=np.float64)


def text(v: Any, default: str = "") -> str:
    return default if v is None else str(v)


def xy(d: Any, notes: list[str], where: str, xkey: str = "x", ykey: str = "y") -> tuple[np.ndarray, np.ndarray] | None:
    """``(x, y)`` from ``d[xkey]`` / ``d[ykey]``, sorted by x with non-finite x dropped; None when unusable."""
    if not isinstance(d, dict):
        return None
    x, y = nums(d.get(xkey)), nums(d.get(ykey))
    if len(x) == 0 or len(y) == 0:
        return None
    if len(x) != len(y):
        notes.append(f"{where}: {xkey} has {len(x)} values and {ykey} {len(y)}; the first {min(len(x), len(y))} "
                     "are drawn")
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
    ok = np.isfinite(x)
    order = np.argsort(x[ok], kind="stable")
    return x[ok][order], y[ok][order]


def runs(v: Any, notes: list[str], where: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The ``[{"name", "x", "y"}]`` runs of a probe document that can be drawn."""
    out = []
    for k, r in enumerate(v if isinstance(v, list) else []):
        got = xy(r, notes, f"{where} run {k + 1}")
        if got is not None:
            name = text(r.get("name"), f"run {k + 1}")
            out.append((name, *got))
    return out


__all__ = ["LANDSCAPE_SCHEMA", "PROBE_SCHEMA", "num", "nums", "read_json", "runs", "text", "xy"]

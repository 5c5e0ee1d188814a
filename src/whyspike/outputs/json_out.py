"""The diagnosis as JSON (contract 2): strict JSON, NaN/inf written as null."""

from __future__ import annotations

import json
import math

from ..diagnosis import Diagnosis


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def to_json(d: Diagnosis, indent: int | None = 2) -> str:
    return json.dumps(_clean(d.to_dict()), indent=indent, allow_nan=False)

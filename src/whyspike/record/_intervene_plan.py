"""What a probe asks of a re-run script: the ``NAME=VALUE`` interventions in ``WHYSPIKE_INTERVENE``, parsed and
checked into a :class:`Plan` before the script runs (``whyspike.record._intervene`` applies them to Keras)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import UsageError

def derived_seed(*parts: Any) -> int:
    """A 31-bit seed from several values (the seed, a tag, an epoch, ...); stable across runs and machines."""
    digest = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


ENV_INTERVENE = "WHYSPIKE_INTERVENE"

NAMES = ("seed", "seed.init", "seed.data", "seed.noise", "lr.shift", "lr.decay", "lr.hold", "lr.scale", "lr.warmup",
         "momentum", "adam.eps", "adam.beta2", "wd", "wd.scale", "batch.scale", "shuffle", "bn.momentum", "branch")
# the rest of the probe vocabulary (whyspike.probe.interventions): known, but not possible from outside Model.fit
NOT_BLACK_BOX = {
    "skip": "Model.fit takes whole epochs from its data and cannot leave out single batches — use the in-process "
            "engine (a model / data / optimizer factory) to skip batches",
    "bn.norm": "replacing BatchNorm by GroupNorm means rebuilding the script's model — use the in-process engine",
    "bn.recompute": "it is an evaluation, not a retraining: record the baseline with the detailed tier (detailed=True, "
                    "whyspike run --detailed), whose PreciseBN columns bn_share() reads",
    "bn.train_mode": "the Keras recorder does not evaluate in train mode; the detailed tier's PreciseBN columns "
                     "(bn.recompute) answer the same question",
}
SEED_ONLY = ("seed",)  # any script; PyTorch loops take the optimizer-level names too (torch._intervene_torch)


class InterventionError(UsageError):
    """The training cannot take this intervention (raised from ``Model.fit``, or from a PyTorch optimizer's first
    step; a probe reports it per replica)."""


# ------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Plan:
    """The interventions of one replica, parsed; ``raw`` keeps them as given (``NAME: VALUE`` strings)."""

    raw: dict = field(default_factory=dict)
    seed: int | None = None
    seed_init: int | None = None
    seed_data: int | None = None
    seed_noise: int | None = None
    lr_shift: int = 0
    lr_decay_off: bool = False
    lr_hold: int | None = None
    lr_scale: float = 1.0
    lr_warmup: float | None = None
    momentum: float | str | None = None  # "off" or a value
    adam_eps: float | None = None
    adam_beta2: float | None = None
    wd_off: bool = False
    wd_scale: float | None = None
    batch_scale: float | None = None
    shuffle: str | None = None
    bn_momentum: float | None = None
    branch: Path | None = None

    @property
    def touches_lr_schedule(self) -> bool:
        return bool(self.lr_shift) or self.lr_decay_off or self.lr_hold is not None or self.lr_warmup is not None

    @property
    def needs_fit(self) -> bool:
        return any(k not in SEED_ONLY for k in self.raw)


def parse_interventions(items: Mapping[str, Any]) -> Plan:
    """``{"lr.shift": "+3", "seed": "0"}`` -> :class:`Plan`; a name or value that makes no sense raises
    :class:`UsageError` naming it.

        >>> parse_interventions({"lr.shift": "+3", "momentum": "off"}).lr_shift
        3
    """
    if not isinstance(items, Mapping):
        raise UsageError(f"interventions must be NAME=VALUE pairs (a JSON object), got {type(items).__name__}")
    raw = {str(k).strip(): str(v).strip() for k, v in items.items()}
    unknown = [k for k in raw if k not in NAMES and k not in NOT_BLACK_BOX]
    if unknown:
        raise UsageError(f"unknown intervention {', '.join(map(repr, unknown))} — known: "
                         f"{', '.join(NAMES + tuple(NOT_BLACK_BOX))}")
    for name, why in NOT_BLACK_BOX.items():
        if name in raw:
            given = f"{name}={raw[name]}" if raw[name] else name
            raise UsageError(f"{given} is not possible in a black-box Keras script: {why}")
    kw: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "seed" or name.startswith("seed."):
            kw[name.replace(".", "_")] = _int(name, value, lo=0)
        elif name == "lr.shift":
            kw["lr_shift"] = _int(name, value)
        elif name == "lr.decay":
            _choice(name, value, ("off",))
            kw["lr_decay_off"] = True
        elif name == "lr.hold":
            kw["lr_hold"] = _int(name, value, lo=0)
        elif name == "lr.scale":
            kw["lr_scale"] = _float(name, value, lo=0.0, lo_open=True)
        elif name == "lr.warmup":
            kw["lr_warmup"] = _float(name, value, lo=0.0, lo_open=True)
        elif name == "momentum":
            kw["momentum"] = "off" if value == "off" else _float(name, value, lo=0.0, hi=1.0, hi_open=True)
        elif name == "adam.eps":
            kw["adam_eps"] = _float(name, value, lo=0.0, lo_open=True)
        elif name == "adam.beta2":
            kw["adam_beta2"] = _float(name, value, lo=0.0, hi=1.0, hi_open=True)
        elif name == "wd":
            _choice(name, value, ("off",))
            kw["wd_off"] = True
        elif name == "wd.scale":
            kw["wd_scale"] = _float(name, value, lo=0.0)
        elif name == "batch.scale":
            kw["batch_scale"] = _float(name, value, lo=0.0, lo_open=True)
        elif name == "shuffle":
            kw["shuffle"] = _choice(name, value, ("fixed", "reshuffle"))
        elif name == "bn.momentum":
            kw["bn_momentum"] = _float(name, value, lo=0.0, hi=1.0, lo_open=True)
        elif name == "branch":
            if not value:
                raise UsageError("branch= needs a checkpoint directory: RUN_DIR/checkpoints/epoch-NNNN")
            kw["branch"] = Path(value)
    if "wd" in raw and "wd.scale" in raw:
        raise UsageError("wd=off and wd.scale=F contradict each other: give one")
    if "lr.decay" in raw and ("lr.shift" in raw or "lr.hold" in raw):
        raise UsageError("lr.decay=off leaves no schedule to shift or hold: give lr.decay=off alone")
    return Plan(raw=raw, **kw)


def _int(name: str, value: str, lo: int | None = None) -> int:
    try:
        v = int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a whole number") from None
    if lo is not None and v < lo:
        raise UsageError(f"{name}={value} must be >= {lo}")
    return v


def _float(name: str, value: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> float:
    try:
        v = float(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(v) or (lo is not None and (v < lo or (lo_open and v == lo))) or \
            (hi is not None and (v > hi or (hi_open and v == hi))):
        lo_s = "" if lo is None else f"{lo:g} {'<' if lo_open else '<='} "
        hi_s = "" if hi is None else f" {'<' if hi_open else '<='} {hi:g}"
        raise UsageError(f"{name}={value} is out of range: it needs {lo_s}{name}{hi_s}")
    return v


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UsageError(f"{name}={value!r}: use {' or '.join(f'{name}={a}' for a in allowed)}")
    return value


def plan_from_env(environ: Mapping[str, str] = os.environ) -> Plan | None:
    """The plan in ``WHYSPIKE_INTERVENE`` (None when unset or empty)."""
    text = environ.get(ENV_INTERVENE, "").strip()
    if not text:
        return None
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{ENV_INTERVENE} is not JSON ({exc}) — give an object such as "
                         '{"lr.shift": "3"}') from None
    return parse_interventions(items)


def interventions_env(items: Mapping[str, Any]) -> str:
    """The value of ``WHYSPIKE_INTERVENE`` for these interventions (checked first)."""
    plan = parse_interventions(items)
    return json.dumps(plan.raw, sort_keys=True)

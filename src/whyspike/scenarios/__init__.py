"""Scenarios: small real trainings with a known cause, recorded and diagnosed end to end (``whyspike demo``).

    >>> from whyspike import scenarios
    >>> scenarios.get("lr-step-decay").truth
    'lr_schedule'
    >>> run_dir = scenarios.get("lr-step-decay").record("whyspike-demo", size="ci")   # doctest: +SKIP

Each is a module here: a frozen ``Config`` per size, ``train(config, run_dir)`` recording through whyspike's own
recorders, and a :class:`Scenario` saying what the ground truth is.
"""

from __future__ import annotations

import importlib

from ..errors import UsageError
from ._base import SIZES, Outcome, Scenario, judge

_MODULES = (
    "seed_examples",
    "lr_step_decay",
    "grokking",
    "catapult",
    "edge_of_stability",
    "deep_linear_plateau",
    "warmup_spike",
    "warm_restarts",
    "batchnorm_lag",
    "stochastic_jump",
    "small_eval_set",
    "resume_without_optimizer_state",
    "augmentation_switch",
    "running_average",
)


def _load() -> dict[str, Scenario]:
    out: dict[str, Scenario] = {}
    for m in _MODULES:
        mod = importlib.import_module(f"{__name__}.{m}")
        for sc in getattr(mod, "SCENARIOS", None) or (mod.SCENARIO,):
            out[sc.name] = sc
    return out


REGISTRY: dict[str, Scenario] = _load()


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Scenario:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"no scenario named {name!r} — `whyspike demo --list` shows them: "
                         f"{', '.join(REGISTRY)}") from None


__all__ = ["REGISTRY", "SIZES", "Outcome", "Scenario", "get", "judge", "names"]

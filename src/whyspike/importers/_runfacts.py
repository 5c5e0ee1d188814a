"""Epoch boundaries read from a logged ``epoch`` value, shared by the importers whose x axis is the step."""

from __future__ import annotations

import math
from typing import Sequence

from ..run import Event

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

"""The Run: the one data model every importer returns and every later layer reads.

A Run holds aligned numeric series on an ``epoch`` and/or ``step`` axis, events (step rewinds, wall-clock gaps,
appended runs), what is known of the setup, and the warnings raised while reading. Missing knowledge is ``None``,
never a guess.

    >>> import numpy as np
    >>> s = make_series("val_accuracy", "epoch", np.arange(3), np.array([0.5, 0.6, 0.9]))
    >>> s.role.kind, s.role.split, s.role.higher_is_better
    ('accuracy', 'val', True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .roles import Role, classify

Axis = Literal["epoch", "step"]


@dataclass(frozen=True)
class Source:
    path: str
    format: str


@dataclass
class Series:
    """One metric over one axis, numbered as the source numbers it.

    ``x`` is strictly increasing after :func:`make_series`; ``y`` is float64 and may hold NaN/inf exactly as logged.
    """

    name: str
    axis: Axis
    x: np.ndarray
    y: np.ndarray
    role: Role
    wall_time: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def finite(self) -> np.ndarray:
        return np.isfinite(self.y)

    def value_at(self, at: float) -> float | None:
        """The value at position ``at`` (exact match), or None."""
        i = int(np.searchsorted(self.x, at))
        if i < len(self.x) and self.x[i] == at:
            return float(self.y[i])
        return None


@dataclass(frozen=True)
class Event:
    """Something that happened at a position on an axis: ``step_rewind``, ``wall_gap``, ``run_start``, ..."""

    kind: str
    axis: Axis
    at: float
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Setup:
    """What is known of the training setup. ``None`` means unknown."""

    optimizer: str | None = None
    learning_rate: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    steps_per_epoch: float | None = None
    train_size: int | None = None
    eval_size: int | None = None
    eval_size_inferred: bool = False
    epochs: int | None = None
    lr_milestones: list[float] | None = None  # epochs where a step schedule decays, as configured
    lr_decay_factor: float | None = None
    lr_schedule: dict[str, Any] | None = None  # e.g. a Keras schedule's config
    has_batchnorm: bool | None = None
    config: dict[str, Any] = field(default_factory=dict)  # raw hyper-parameters as the source logged them


@dataclass
class Run:
    source: Source
    series: dict[str, Series] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    setup: Setup = field(default_factory=Setup)
    warnings: list[str] = field(default_factory=list)

    def add(self, series: Series) -> None:
        self.series[series.name] = series

    def find(self, *, kind: str | None = None, split: str | None = None, axis: str | None = None) -> list[Series]:
        """Series whose role matches every given field, longest first."""
        out = [
            s
            for s in self.series.values()
            if (kind is None or s.role.kind == kind)
            and (split is None or s.role.split == split)
            and (axis is None or s.axis == axis)
        ]
        return sorted(out, key=len, reverse=True)

    def learning_rate(self, axis: str | None = None) -> Series | None:
        """The logged learning-rate series on ``axis`` (any axis if None), preferring the epoch axis."""
        cands = self.find(kind="lr", axis=axis)
        if not cands:
            return None
        cands.sort(key=lambda s: (s.axis != "epoch", -len(s)))
        return cands[0]

    @property
    def metric_series(self) -> list[Series]:
        """Series worth looking for jumps in: accuracy-like and loss-like metrics."""
        return [s for s in self.series.values() if s.role.kind in ("accuracy", "loss", "metric")]


def make_series(
    name: str,
    axis: Axis,
    x,
    y,
    wall_time=None,
    *,
    events: list[Event] | None = None,
    warnings: list[str] | None = None,
) -> Series:
    """Build a Series with x sorted and unique.

    Where x goes backwards (a resumed run re-logging steps it had logged before), the values written later win, as
    TensorBoard does, and a ``step_rewind`` event is appended to ``events``. Duplicates without a rewind keep the
    last value and add a warning.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    wt = None if wall_time is None else np.asarray(wall_time, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"series {name!r}: x and y differ in length ({x.shape} vs {y.shape})")
    keep = np.isfinite(x)
    if not keep.all():
        x, y = x[keep], y[keep]
        wt = None if wt is None else wt[keep]
    if len(x) > 1:
        back = np.flatnonzero(np.diff(x) <= 0) + 1
        if len(back):
            rewinds = [i for i in back if x[i] < x[i - 1]]
            if events is not None:
                for i in rewinds[:50]:
                    events.append(
                        Event("step_rewind", axis, float(x[i]), f"{name}: {axis} went back from {x[i-1]:g} to {x[i]:g}",
                              {"series": name, "from": float(x[i - 1]), "to": float(x[i])})
                    )
            if warnings is not None and len(back) > len(rewinds):
                warnings.append(f"{name}: {len(back) - len(rewinds)} repeated {axis} value(s); the last logged value is used")
            # keep the last occurrence of each x: reverse, take first unique, restore order
            rev = x[::-1]
            _, idx = np.unique(rev, return_index=True)
            last = len(x) - 1 - idx
            x, y = x[last], y[last]
            wt = None if wt is None else wt[last]
    if len(x) and np.all(x == np.round(x)) and np.abs(x).max() < 2**53:
        x = x.astype(np.int64)
    return Series(name=name, axis=axis, x=x, y=y, role=classify(name, y), wall_time=wt)

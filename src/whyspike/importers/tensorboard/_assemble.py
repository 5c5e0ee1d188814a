"""Turn the scalars of a run directory into Series and the events resume detection needs.

* ``step_rewind``: a step logged again after later ones (a resume from an earlier checkpoint), via make_series;
* ``wall_gap``: wall-clock time between two consecutive values of a series far above its usual interval;
* ``run_start``: a writer starting again (a new event file, or a second run appended to a file) after values.
"""

from __future__ import annotations

import numpy as np

from ...run import Event, Run, make_series, roles
from ._log import Columns

GAP_MIN_SECONDS = 600.0
GAP_FACTOR = 20.0  # times the series' median interval


def axis_of(tag: str) -> str:
    """Keras' TensorBoard callback logs ``epoch_<metric>`` with step = epoch; everything else is on the step axis.
    A tag that is just ``epoch`` is a per-step record of the epoch counter (Lightning), so it stays on steps."""
    toks = roles.tokens(tag)
    return "epoch" if len(toks) > 1 and toks[0] == "epoch" else "step"


def add_to_run(run: Run, columns: dict[str, Columns], markers: list[tuple[int, float, str]], prefix: str) -> None:
    gaps = []
    for tag, (_, step, wall, value) in columns.items():
        name, axis = prefix + tag, axis_of(tag)
        if name in run.series:
            run.warnings.append(f"{name}: logged both as a tag and as a run sub-directory's tag; kept the first")
            continue
        gaps += _wall_gaps(name, axis, step, wall)
        run.add(make_series(name, axis, step, value, wall, events=run.events, warnings=run.warnings))
    run.events += _merge_gaps(gaps)
    run.events += _run_starts(columns, markers, prefix)


def _wall_gaps(name: str, axis: str, x: np.ndarray, wall: np.ndarray) -> list[tuple]:
    dt = np.diff(wall)
    usual = dt[dt > 0]
    if len(usual) < 3:  # too few intervals to know what is usual
        return []
    median = float(np.median(usual))
    limit = max(GAP_MIN_SECONDS, GAP_FACTOR * median)
    return [(float(wall[i]), float(wall[i + 1]), axis, float(x[i + 1]), float(dt[i]), median, name)
            for i in np.flatnonzero(dt > limit)[:50].tolist()]


def _merge_gaps(gaps: list[tuple]) -> list[Event]:
    """One event per pause and axis: the series of a run all stop and restart together."""
    events = []
    for axis in ("step", "epoch"):
        spans = sorted(g for g in gaps if g[2] == axis)
        group: list[tuple] = []
        for gap in spans + [None]:
            if group and (gap is None or gap[0] >= max(g[1] for g in group)):
                t0, t1, _, at, seconds, median, name = min(group, key=lambda g: g[1])  # first to log again
                events.append(Event(
                    "wall_gap", axis, at,
                    f"{name}: nothing logged for {seconds / 60:.0f} min before {axis} {at:g} "
                    f"(usual interval {median:.3g} s)",
                    {"series": name, "seconds": seconds, "median_interval": median, "from_wall_time": t0,
                     "to_wall_time": t1}))
                group = []
            if gap is not None:
                group.append(gap)
    return events


def _run_starts(columns: dict[str, Columns], markers: list[tuple[int, float, str]], prefix: str) -> list[Event]:
    if not columns or not markers:
        return []
    tags = list(columns)
    record = np.concatenate([columns[t][0] for t in tags])
    which = np.repeat(np.arange(len(tags)), [len(columns[t][0]) for t in tags])
    order = np.argsort(record, kind="stable")
    record, which = record[order], which[order]
    position = np.concatenate([np.arange(len(columns[t][0])) for t in tags])[order]
    events = []
    for rec, wall, file in markers:
        i = int(np.searchsorted(record, rec))
        if i == 0 or i == len(record):  # the first writer, or one that logged nothing
            continue
        tag = tags[which[i]]
        axis = axis_of(tag)
        at = float(columns[tag][1][position[i]])
        events.append(Event(
            "run_start", axis, at, f"{prefix}{file}: a new writer starts logging at {axis} {at:g}",
            {"series": prefix + tag, "file": prefix + file, "wall_time": wall}))
    return events

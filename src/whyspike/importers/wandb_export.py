"""A W&B run history exported as CSV (``run.history().to_csv()``, or a chart's "Export CSV").

History exports carry ``_step`` (W&B's step, the x axis here), ``_runtime``, ``_timestamp`` (used as wall time)
and the logged keys as named (``train/loss``); rows are sparse. A chart export has ``Step`` and columns
``<run> - <metric>`` plus ``__MIN``/``__MAX`` envelope columns, which are skipped. The offline run directory
is read by the ``wandb`` importer, not this one.

    >>> run = load_run("history.csv")                        # doctest: +SKIP
    >>> run.series["train/loss"].axis                        # doctest: +SKIP
    'step'
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..run import Run
from ._registry import Importer, Probe, register
from ._tabular import add_table_series, epoch_boundaries, head_dialect, open_table, steps_per_epoch


def sniff(p: Probe) -> float:
    d = head_dialect(p)
    if d is None:
        return 0.0
    names = [n.strip() for n in d.names]
    if "_step" in names:
        return 0.95 if {"_runtime", "_timestamp"} & set(names) else 0.9
    if names and names[0] == "Step" and any(" - " in n for n in names[1:]):
        return 0.8
    return 0.0


def load(path: Path) -> Run:
    run, table = open_table(path, "wandb-csv")
    step = table.find(("_step",)) or ("Step" if "Step" in table.columns else None)
    if step is None:
        raise InputError(path, "has no '_step' (history export) or 'Step' (chart export) column",
                         "read it with --input-format table")
    envelope = [n for n in table.names if n.endswith(("__MIN", "__MAX"))]
    wall = "_timestamp" if "_timestamp" in table.columns else None
    add_table_series(run, table, mode="step", step_col=step, skip=envelope, wall_col=wall)
    epoch = table.find(("epoch",))
    if epoch is not None:
        e, s = table.columns[epoch], table.columns[step]
        both = e.mask() & s.mask()
        run.setup.steps_per_epoch = steps_per_epoch(s.values[both], e.values[both])
        run.events.extend(epoch_boundaries(s.values[both], e.values[both], epoch))
    return run


register(Importer("wandb-csv", "W&B run history exported as CSV (_step, _runtime, _timestamp, metric columns)",
                  sniff, load))

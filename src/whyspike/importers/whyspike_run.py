"""Format ``whyspike-run``: a run directory written by a whyspike recorder (see :mod:`whyspike.record.store`).

Step-level columns become series named ``step/<column>`` on the step axis, epoch-level columns keep their names on
the epoch axis. ``meta.json`` fills the Setup. Parts still being written (``*.tmp``) are ignored, so a run can be
diagnosed while it trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import CorruptLogError, InputError
from ..run import Run, Source, make_series
from ._hparams import fill_setup
from ._registry import Importer, Probe, register

FORMAT = "whyspike-run"
_SETUP_KEYS = ("optimizer", "learning_rate", "momentum", "weight_decay", "batch_size", "steps_per_epoch",
               "train_size", "eval_size", "epochs", "lr_schedule", "has_batchnorm")


def _sniff(p: Probe) -> float:
    if p.is_dir and "meta.json" in p.entries and ("steps" in p.entries or "epochs" in p.entries):
        try:
            meta = json.loads((p.path / "meta.json").read_text())
        except (OSError, ValueError):
            return 0.5
        return 1.0 if str(meta.get("schema", "")).startswith("whyspike/run") else 0.3
    return 0.0


def _read_parts(folder: Path, run: Run):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for part in sorted(folder.glob("part-*.parquet")):
        try:
            tables.append(pq.read_table(part))
        except (OSError, pa.ArrowInvalid) as exc:
            run.warnings.append(f"{part}: unreadable part skipped ({exc})")
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def add_table(run: Run, table, key: str, axis: str, prefix: str) -> None:
    if table is None or key not in table.column_names:
        return
    x = table.column(key).to_numpy(zero_copy_only=False).astype(float)
    wall = table.column("wall_time").to_numpy(zero_copy_only=False).astype(float) \
        if "wall_time" in table.column_names else None
    for name in table.column_names:
        if name in (key, "wall_time", "epoch", "step"):
            continue
        col = table.column(name)
        logged = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if not logged.any():
            continue
        y = col.to_numpy(zero_copy_only=False).astype(float)
        run.add(make_series(prefix + name, axis, x[logged], y[logged], None if wall is None else wall[logged],
                            events=run.events, warnings=run.warnings))


def load(path: Path) -> Run:
    if not (path / "meta.json").exists():
        raise InputError(path, "is not a whyspike run directory (no meta.json)", "point at the directory a recorder wrote")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise CorruptLogError(path / "meta.json", f"cannot be read ({exc})", "re-run the recording") from None
    run = Run(Source(str(path), FORMAT))
    add_table(run, _read_parts(path / "steps", run), "step", "step", "step/")
    add_table(run, _read_parts(path / "epochs", run), "epoch", "epoch", "")
    st = run.setup
    for k in _SETUP_KEYS:
        if meta.get(k) is not None:
            setattr(st, k, meta[k])
    st.config = {k: v for k, v in meta.items() if k not in _SETUP_KEYS}
    fill_setup(st, meta.get("hyperparameters", {}) or {})
    return run


register(Importer(FORMAT, "run directory written by a whyspike recorder", _sniff, load))

"""MLflow tracking stores, read without mlflow: the file store (``mlruns/``) and the SQLite backend (``mlflow.db``).

**File store** — point at ``mlruns/``, one experiment directory (``mlruns/<experiment_id>/``), one run directory
(``mlruns/<experiment_id>/<run_id>/``) or a project directory holding ``mlruns/``. Each metric is a file
``metrics/<key>`` (a key with slashes such as ``train/loss`` is nested directories) with one line per logged
value, ``timestamp_ms value step`` (old files omit the step; newer ones may append a dataset name and digest).
``params/<key>`` files hold the hyper-parameters as strings. Deleted runs and ``.trash`` are ignored.

**SQLite backend** — ``mlflow.db`` (tables ``metrics``, ``params``, ``runs``, ``experiments``), opened read-only
so that nothing, not even a journal, is written. NaN is stored as ``is_nan = 1``; ±inf as ±1.797e308, which is
read back as ±inf.

**Which run** — when the store holds several runs the most recent one (by start time) that logged metrics is
read, and a warning names the others. Select another by pointing at its run directory (file store) or with
``load(path, run_id=...)`` (either backend).

**Axes** — MLflow has only a ``step`` per value, so series go on the ``step`` axis, numbered as logged, with the
timestamp as wall time (ms → s). A metric moves to the ``epoch`` axis only when an ``epoch`` metric was logged too
and at every step the metric was logged at, ``epoch`` equals the step: the user logged with ``step=epoch``, so the
steps are epochs. Otherwise an ``epoch`` metric on the step axis (Lightning logs one at global steps) yields
``epoch_boundary`` events. A metric logged without a step (MLflow then records step 0 for every value) is placed
at its logging index 0, 1, 2, ... with a warning, rather than collapsed onto one point.

    >>> run = load_run("mlruns/")                        # doctest: +SKIP
    >>> run = load("mlflow.db", run_id="4f2c...")        # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import EmptyLogError, InputError
from ..run import Run, Setup, Source, make_series
from ._registry import Importer, Probe, register
from ._hparams import fill_setup
from ._runfacts import epoch_boundary_events

FORMAT = "mlflow"
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_TIMEOUT_S = 1.0  # how long to wait for a writer's lock before reporting the file as locked
_SQL_INF = 1.7976931348623157e308  # MLflow's SQL stores replace ±inf by ±max float
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_MAX_LINE_WARNINGS = 5


@dataclass
class _Metric:
    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # seconds


@dataclass
class _RunInfo:
    run_id: str
    name: str | None
    experiment: str | None
    start_ms: float | None
    has_metrics: bool
    path: Path | None = None  # run directory (file store)
    deleted: bool = False

    def label(self) -> str:
        bits = [repr(self.name)] if self.name else []
        if self.experiment:
            bits.append(f"experiment {self.experiment!r}")
        if self.start_ms:
            bits.append("started " + datetime.fromtimestamp(self.start_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        return f"{self.run_id} ({', '.join(bits)})" if bits else self.run_id


# ---------------------------------------------------------------------------------------------------- sniffing


def _sniff(p: Probe) -> float:
    if not p.is_dir:
        if not p.head.startswith(SQLITE_MAGIC):
            return 0.0
        # the schema usually lies beyond the probe's head (MLflow creates ~60 tables); look for it, then the name
        if b'CREATE TABLE "latest_metrics"' in p.head or b"CREATE TABLE latest_metrics" in p.head:
            return 0.95
        if "mlflow" in p.name or "mlruns" in p.name:
            return 0.9
        return 0.3  # some SQLite file: reading it says clearly whether it holds MLflow tables
    entries = set(p.entries)
    if "meta.yaml" in entries and ("metrics" in entries or "params" in entries):
        return 0.95  # a run directory
    if p.name == "mlruns":
        return 0.95
    if "meta.yaml" in entries and any(_RUN_ID.fullmatch(e) for e in entries):
        return 0.9  # an experiment directory
    if ".trash" in entries and any(e.isdigit() for e in entries):
        return 0.85  # an mlruns/ directory under another name
    if "mlruns" in entries:
        return 0.5  # a project directory
    return 0.0


# ---------------------------------------------------------------------------------------------------- file store


def _read_meta(path: Path) -> dict[str, str]:
    """Top-level ``key: value`` pairs of an MLflow meta.yaml (flat scalars, which is all MLflow writes there)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if not line or line[0] in " \t#-" or ":" not in line:
            continue
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip().strip("'\"")
    return out


def _run_info_from_dir(run_dir: Path, experiment: str | None) -> _RunInfo | None:
    meta = _read_meta(run_dir / "meta.yaml")
    run_id = meta.get("run_id") or meta.get("run_uuid")
    if not run_id:
        return None  # an experiment's meta.yaml, or a logged model's
    if meta.get("lifecycle_stage") == "deleted":
        return None
    try:
        start_ms = float(meta["start_time"])
    except (KeyError, ValueError):
        start_ms = None
    metrics = run_dir / "metrics"
    has_metrics = metrics.is_dir() and any(files for _, _, files in os.walk(metrics))
    return _RunInfo(run_id, meta.get("run_name") or None, experiment, start_ms, has_metrics, run_dir)


def _runs_in_experiment(exp_dir: Path) -> list[_RunInfo]:
    name = _read_meta(exp_dir / "meta.yaml").get("name") or exp_dir.name
    runs = []
    for sub in sorted(exp_dir.iterdir()):
        if sub.is_dir() and (sub / "meta.yaml").is_file():
            info = _run_info_from_dir(sub, name)
            if info is not None:
                runs.append(info)
    return runs


def _find_file_runs(path: Path) -> list[_RunInfo]:
    if (path / "meta.yaml").is_file():
        meta = _read_meta(path / "meta.yaml")
        if meta.get("run_id") or meta.get("run_uuid"):  # a run directory: read it even if marked deleted
            exp = _read_meta(path.parent / "meta.yaml").get("name")
            info = _run_info_from_dir(path, exp)
            if info is None:
                info = _RunInfo(meta.get("run_id") or meta["run_uuid"], meta.get("run_name"), exp, None, True, path,
                                deleted=True)
            return [info]
        return _runs_in_experiment(path)
    runs: list[_RunInfo] = []
    for sub in sorted(path.iterdir()):
        if sub.is_dir() and not sub.name.startswith(".") and (sub / "meta.yaml").is_file():
            runs.extend(_runs_in_experiment(sub))
    if not runs and (path / "mlruns").is_dir():
        return _find_file_runs(path / "mlruns")
    return runs


def _walk_files(root: Path) -> list[tuple[str, Path]]:
    """``(key, file)`` for every file under ``root``; the key keeps its slashes (``train/loss``)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            f = Path(dirpath) / fn
            out.append((f.relative_to(root).as_posix(), f))
    return out


def _read_metric_file(key: str, f: Path, warnings: list[str]) -> _Metric:
    m = _Metric()
    try:
        text = f.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        warnings.append(f"{f}: cannot be read ({exc.strerror}); metric {key!r} skipped")
        return m
    bad: list[int] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) not in (2, 3, 5):
                raise ValueError
            ts, value = float(parts[0]), float(parts[1])
            step = float(int(parts[2])) if len(parts) >= 3 else 0.0
        except ValueError:
            bad.append(lineno)
            if len(bad) <= _MAX_LINE_WARNINGS:
                warnings.append(f"{f}: line {lineno} is not 'timestamp value step' ({line.strip()[:60]!r}); skipped")
            continue
        m.steps.append(step)
        m.values.append(value)
        m.times.append(ts / 1000.0)
    if len(bad) > _MAX_LINE_WARNINGS:
        warnings.append(f"{f}: {len(bad) - _MAX_LINE_WARNINGS} more malformed line(s) skipped")
    return m


def _read_file_run(run_dir: Path, warnings: list[str]) -> tuple[dict[str, _Metric], dict[str, str]]:
    metrics = {}
    mdir = run_dir / "metrics"
    if mdir.is_dir():
        for key, f in _walk_files(mdir):
            metrics[key] = _read_metric_file(key, f, warnings)
    params = {}
    pdir = run_dir / "params"
    if pdir.is_dir():
        for key, f in _walk_files(pdir):
            try:
                params[key] = f.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                warnings.append(f"{f}: cannot be read ({exc.strerror}); parameter {key!r} skipped")
    return metrics, params


# ---------------------------------------------------------------------------------------------------- SQLite


def _sqlite_error(path: Path, exc: sqlite3.Error) -> InputError:
    msg = str(exc).strip() or type(exc).__name__
    if "locked" in msg or "busy" in msg:
        return InputError(path, f"the MLflow database is locked by another process ({msg})",
                          "retry when the run writing it has finished, or copy the file and read the copy")
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return InputError(path, f"is not a readable SQLite database ({msg})",
                          "point whyspike at the mlflow.db your tracking URI names, or restore it from a backup")
    return InputError(path, f"cannot be read as an MLflow SQLite store ({msg})",
                      "check that the file is the mlflow.db your tracking URI names and that it is readable")


def _sqlite_tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}


def _sqlite_runs(con: sqlite3.Connection, tables: set[str]) -> list[_RunInfo]:
    rcols = _columns(con, "runs")
    name = "r.name" if "name" in rcols else "NULL"
    start = "r.start_time" if "start_time" in rcols else "NULL"
    stage = "r.lifecycle_stage" if "lifecycle_stage" in rcols else "'active'"
    if "experiments" in tables and "experiment_id" in rcols:
        exp, join = "e.name", "LEFT JOIN experiments e ON e.experiment_id = r.experiment_id"
    else:
        exp, join = "NULL", ""
    rows = con.execute(
        f"SELECT r.run_uuid, {name}, {exp}, {start}, {stage}, "
        f"EXISTS (SELECT 1 FROM metrics m WHERE m.run_uuid = r.run_uuid) FROM runs r {join}"
    ).fetchall()
    return [
        _RunInfo(str(rid), rname or None, ename, float(st) if st is not None else None, bool(has))
        for rid, rname, ename, st, stg, has in rows
        if stg != "deleted"
    ]


def _read_sqlite_run(con: sqlite3.Connection, tables: set[str], run_id: str) -> tuple[dict[str, _Metric], dict[str, str]]:
    mcols = _columns(con, "metrics")
    step = "step" if "step" in mcols else "0"
    is_nan = "is_nan" if "is_nan" in mcols else "0"
    metrics: dict[str, _Metric] = {}
    for key, value, ts, st, nan in con.execute(
        f'SELECT "key", value, timestamp, {step}, {is_nan} FROM metrics WHERE run_uuid = ? ORDER BY timestamp, rowid',
        (run_id,),
    ):
        v = float("nan") if nan or value is None else float(value)
        if abs(v) == _SQL_INF:
            v = math.copysign(math.inf, v)
        m = metrics.setdefault(str(key), _Metric())
        m.steps.append(float(st or 0))
        m.values.append(v)
        m.times.append(float(ts) / 1000.0 if ts is not None else math.nan)
    params: dict[str, str] = {}
    if "params" in tables:
        for key, value in con.execute('SELECT "key", value FROM params WHERE run_uuid = ?', (run_id,)):
            params[str(key)] = "" if value is None else str(value)
    return metrics, params


def _load_sqlite(path: Path, run_id: str | None, warnings: list[str]):
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=SQLITE_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise _sqlite_error(path, exc) from None
    try:
        tables = _sqlite_tables(con)
        if not {"metrics", "runs"} <= tables:
            raise InputError(path, "is an SQLite database without MLflow's tables (metrics, runs)",
                             "point whyspike at the mlflow.db your MLflow tracking URI names")
        runs = _sqlite_runs(con, tables)
        info = _choose(path, runs, run_id, warnings, how_to="read another with whyspike.importers.mlflow.load(path, run_id=...)")
        metrics, params = _read_sqlite_run(con, tables, info.run_id)
    except sqlite3.Error as exc:
        raise _sqlite_error(path, exc) from None
    finally:
        con.close()
    return info, metrics, params


# ---------------------------------------------------------------------------------------------------- assembling


def _choose(path: Path, runs: list[_RunInfo], run_id: str | None, warnings: list[str], how_to: str) -> _RunInfo:
    if run_id is not None:
        for r in runs:
            if r.run_id == run_id:
                return r
        known = ", ".join(r.run_id for r in runs[:10]) or "none"
        raise InputError(path, f"holds no MLflow run {run_id!r}", f"use one of its runs: {known}")
    if not runs:
        raise EmptyLogError(path, "holds no MLflow runs", "log a run first, or point at the mlruns/ or mlflow.db that holds them")
    # most recent first; a run without metrics (just started, or crashed) is only read when no run has any
    ranked = sorted(runs, key=lambda r: (r.has_metrics, r.start_ms if r.start_ms is not None else -math.inf), reverse=True)
    chosen = ranked[0]
    if len(ranked) > 1:
        others = ranked[1:]
        listed = ", ".join(r.label() for r in others[:10]) + (f", and {len(others) - 10} more" if len(others) > 10 else "")
        warnings.append(f"{len(runs)} MLflow runs found; read the most recent, {chosen.label()}; "
                        f"the others: {listed} — {how_to}")
    return chosen


def _build(run: Run, metrics: dict[str, _Metric]) -> None:
    epoch = metrics.get("epoch")
    epoch_at: dict[float, float] = {}
    if epoch is not None:
        for s, v in zip(epoch.steps, epoch.values):
            epoch_at[s] = v
    epoch_on_epoch_axis = False
    for key, m in metrics.items():
        if not m.values:
            continue
        steps = m.steps
        if len(steps) > 1 and len(set(steps)) == 1:
            steps = [float(i) for i in range(len(steps))]
            run.warnings.append(f"{key}: every value was logged at step {m.steps[0]:g}; "
                                f"placed at its logging index 0..{len(steps) - 1} instead")
        axis = "step"
        if epoch_at and steps is m.steps and all(epoch_at.get(s) == s for s in steps):
            axis = "epoch"
            epoch_on_epoch_axis |= key == "epoch"
        times = m.times if not all(math.isnan(t) for t in m.times) else None
        run.add(make_series(key, axis, steps, m.values, times, events=run.events, warnings=run.warnings))
    if epoch is not None and not epoch_on_epoch_axis:
        run.events.extend(epoch_boundary_events(epoch.steps, epoch.values, "epoch"))


def load(path: str | os.PathLike, run_id: str | None = None) -> Run:
    """Read one MLflow run (the most recent unless ``run_id`` is given) from a file store or an SQLite store."""
    path = Path(path)
    warnings: list[str] = []
    if path.is_dir():
        try:
            runs = _find_file_runs(path)
        except OSError as exc:
            raise InputError(path, f"cannot list the MLflow store ({exc.strerror})", "check its permissions") from None
        info = _choose(path, runs, run_id, warnings,
                       how_to="pass a run directory (mlruns/<experiment_id>/<run_id>) to read another")
        if info.deleted:
            warnings.append(f"run {info.run_id} is marked deleted in MLflow; read anyway because it was named directly")
        metrics, params = _read_file_run(info.path or path, warnings)
    else:
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise InputError(path, f"cannot be read ({exc.strerror})", "check the path and its permissions") from None
        if head != SQLITE_MAGIC:
            raise InputError(path, "is neither an MLflow file store directory nor an SQLite database",
                             "point whyspike at mlruns/, a run directory inside it, or mlflow.db")
        info, metrics, params = _load_sqlite(path, run_id, warnings)
    run = Run(source=Source(str(path), FORMAT), setup=Setup(config=dict(params)), warnings=warnings)
    fill_setup(run.setup, params)
    _build(run, metrics)
    return run


register(Importer(FORMAT, "MLflow tracking store: mlruns/ file store or mlflow.db (SQLite)", _sniff, load))

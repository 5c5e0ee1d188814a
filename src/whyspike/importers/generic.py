"""Logs in no framework's format: a text table (``table``) and JSON lines (``jsonl``).

``table``: CSV, TSV, ``;``/``|``-separated or whitespace-aligned text with a header row. The x axis is an
``epoch`` / ``step`` / ``iteration`` column as logged; with none, the 0-based row index is the epoch. Per-parameter-
group LR lists (``[0.1, 0.1, 0.02]``) become one series, the largest group's LR.

``jsonl``: one JSON object per line, also objects printed after a prefix among other stdout (``json_stats: {...}``).
Numbers that vary are series; strings, booleans, lists and numbers that never change (a config echoed on every
line) go to ``Setup.config``, as does a Torch7 ``{ key : value }`` config dump at the top of the file.

    >>> run = load_run("results/cifar10/resnet-110/log.txt")      # doctest: +SKIP
    >>> run.series["Valid Acc."].value_at(81)                      # doctest: +SKIP
    92.7
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import EmptyLogError, InputError
from ..run import Run, Source, classify
from ._hparams import fill_setup
from ._registry import Importer, Probe, register
from ._tabular import (
    EPOCH_NAMES,
    STEP_NAMES,
    ColumnBuilder,
    Table,
    add_table_series,
    epoch_boundaries,
    flatten,
    head_dialect,
    open_table,
    steps_per_epoch,
    table_from_records,
)

_WALL_NAMES = ("wall_time", "walltime", "timestamp", "_timestamp", "unix_time")


# ------------------------------------------------------------------------------------------------------- table


def sniff_table(p: Probe) -> float:
    d = head_dialect(p)
    if d is None:
        return 0.0
    if d.data_rows == 0:
        return 0.2  # a header alone: maybe a table that has not been written to yet
    return 0.5 if d.numeric_share >= 0.9 else 0.35


def _axes(table: Table) -> tuple[str | None, str | None]:
    return table.find(EPOCH_NAMES), table.find(STEP_NAMES)


def _wall_column(table: Table) -> str | None:
    name = table.find(_WALL_NAMES)
    if name is None:
        return None
    v = table.columns[name].values
    v = v[np.isfinite(v)]
    return name if len(v) and v.min() > 1e8 else None  # seconds since 1970, not a duration


def _place(run: Run, table: Table, *, wall_col: str | None = None) -> None:
    """Series of ``table`` on the axes its columns name (see the module doc), with steps per epoch when both exist."""
    epoch, step = _axes(table)
    mode = "mixed" if epoch and step else "epoch" if epoch else "step" if step else "row"
    add_table_series(run, table, mode=mode, epoch_col=epoch, step_col=step, wall_col=wall_col)
    if epoch and step:
        e, s = table.columns[epoch], table.columns[step]
        both = e.mask() & s.mask()
        run.setup.steps_per_epoch = steps_per_epoch(s.values[both], e.values[both])
        run.events.extend(epoch_boundaries(s.values[both], e.values[both], epoch))


def load_table(path: Path) -> Run:
    run, table = open_table(path, "table")
    _place(run, table, wall_col=_wall_column(table))
    if table.list_columns:
        run.setup.config["param_group_lists"] = table.list_columns
    return run


# ------------------------------------------------------------------------------------------------------- jsonl

_DECODER = json.JSONDecoder()
_LUA_ENTRY = re.compile(r"^\s+([A-Za-z_]\w*)\s*:\s*(.*?)\s*$")
_LUA_ITEM = re.compile(r"^\s+(\w+)\s*:\s*(.*?)\s*$")


def _object_in(line: str) -> tuple[dict | None, bool]:
    """The JSON object in ``line`` (alone or after a prefix) and whether the line looked like one but was broken."""
    i = line.find("{")
    if i < 0 or line[:i].rstrip().endswith('":'):
        return None, False  # a nested object inside pretty-printed JSON, not a log line
    text = line[i:].rstrip()
    try:
        obj = json.loads(text)
    except ValueError:
        try:
            obj, _ = _DECODER.raw_decode(line, i)  # text after the object
        except ValueError:
            return None, text.startswith('{"')
    return (obj, False) if isinstance(obj, dict) and obj else (None, False)


def _numeric_values(obj: dict) -> bool:
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj.values())


def sniff_jsonl(p: Probe) -> float:
    if p.is_dir:
        return 0.0
    text = p.text
    if not text:
        return 0.0
    lines = text.splitlines()
    if len(p.head) >= 64 * 1024 and not text.endswith("\n"):
        lines = lines[:-1]
    pure = embedded = 0
    for line in lines[:2000]:
        if "{" not in line:
            continue
        obj, _ = _object_in(line)
        if obj is not None and _numeric_values(obj):
            if line.lstrip().startswith("{"):
                pure += 1
            else:
                embedded += 1
    found = pure + embedded
    if found == 0:
        return 0.0
    bonus = 0.1 if p.name.endswith((".jsonl", ".ndjson")) else 0.0
    if found >= 2:
        return min(0.95, (0.8 if pure >= embedded else 0.7) + bonus)
    # one object alone is more likely a config file than a log, unless it is printed after a prefix
    return 0.4 + bonus if embedded or bonus else 0.0


def _lua_value(text: str) -> Any:
    t = text.strip().rstrip(",")
    if len(t) >= 2 and t[0] == t[-1] == '"':
        return t[1:-1]
    if t in ("true", "false"):
        return t == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def _lua_config(lines: list[str]) -> dict[str, Any]:
    """The ``{ key : value }`` table Torch7 scripts print first (``print(opt)``), nested tables as lists/dicts."""
    i = next((k for k, ln in enumerate(lines) if ln.strip()), None)
    if i is None or lines[i].strip() != "{":
        return {}
    out: dict[str, Any] = {}
    pending: str | None = None
    nested: dict[str, Any] | None = None
    for ln in lines[i + 1:]:
        s = ln.strip()
        if s == "}" and nested is None:
            break
        if nested is not None:
            if s.rstrip(",") == "}":
                keys = list(nested)
                if pending is not None:
                    out[pending] = [nested[k] for k in keys] if all(k.isdigit() for k in keys) else nested
                nested, pending = None, None
                continue
            m = _LUA_ITEM.match(ln)
            if m:
                nested[m.group(1)] = _lua_value(m.group(2))
            continue
        if pending is not None and s == "{":
            nested = {}
            continue
        m = _LUA_ENTRY.match(ln)
        if not m:
            return out if out else {}
        key, value = m.group(1), m.group(2)
        if value == "":
            pending = key  # a table follows on the next lines
        else:
            out[key] = _lua_value(value)
            pending = None
    return out


class _JsonLines:
    """The JSON objects of a file, yielded one by one (a multi-GB log never sits in memory as dicts)."""

    def __init__(self, path: Path):
        self.path = path
        self.broken = 0
        self.first_broken = 0
        self.found = 0

    def head_lines(self, n: int = 400) -> list[str]:
        with open(self.path, encoding="utf-8-sig", errors="replace") as fh:
            return [line for _, line in zip(range(n), fh)]

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        with open(self.path, encoding="utf-8-sig", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if "{" not in line:
                    continue
                obj, bad = _object_in(line)
                if obj is not None:
                    self.found += 1
                    yield n, flatten(obj)
                elif bad:
                    self.broken += 1
                    self.first_broken = self.first_broken or n


def _arrow_leaves(array, name: str):
    """(key, array) for every leaf of a possibly nested struct column, keys joined by '/' as :func:`flatten` does."""
    import pyarrow as pa

    if pa.types.is_struct(array.type):
        for i in range(array.type.num_fields):
            child = array.type.field(i).name
            yield from _arrow_leaves(array.field(i), f"{name}/{child}")
    else:
        yield name, array


def _read_jsonl_fast(path: Path) -> tuple[Table, dict[str, Any]] | None:
    """Pure JSON lines through ``pyarrow.json``, batch by batch; None when the line-by-line reader must do it.

    That is when any line is not a bare object (a prefix, a NaN literal, a broken line), a key appears only
    after the first block, or a key holds numbers as text: rare, and the slow reader handles them all.
    """
    import pyarrow as pa
    from pyarrow import json as pajson

    builders: dict[str, ColumnBuilder] = {}
    other: dict[str, Any] = {}
    nrows = 0
    try:
        reader = pajson.open_json(path, read_options=pajson.ReadOptions(use_threads=False, block_size=4 << 20))
        for batch in reader:
            for col_name, col in zip(batch.schema.names, batch.columns):
                for key, leaf in _arrow_leaves(col, col_name):
                    t = leaf.type
                    if pa.types.is_integer(t) or pa.types.is_floating(t):
                        b = builders.setdefault(key, ColumnBuilder(key))
                        b.add_numeric(leaf.cast(pa.float64()).to_numpy(zero_copy_only=False),
                                      leaf.is_valid().to_numpy(zero_copy_only=False) if leaf.null_count else None)
                    elif pa.types.is_string(t) or pa.types.is_large_string(t):
                        return None  # numbers written as text need the careful reader
                    elif key not in other and leaf.null_count < len(leaf):
                        other[key] = leaf.filter(leaf.is_valid())[0].as_py()
            nrows += batch.num_rows
    except (pa.ArrowException, OSError, UnicodeDecodeError):
        return None
    if nrows == 0:
        return None
    table = Table([], {}, nrows)
    for b in builders.values():
        b.finish(table, [])
    return table, other


def _constant(values: np.ndarray) -> bool:
    return len(values) > 0 and bool(np.all(values == values[0]))


def load_jsonl(path: Path) -> Run:
    if path.is_dir():
        raise InputError(path, "is a directory; the jsonl reader takes a file", "point at the log file itself")
    run = Run(Source(str(path), "jsonl"))
    lines = _JsonLines(path)
    try:
        head = lines.head_lines()
        lua = _lua_config(head)
        first = next((ln.lstrip() for ln in head if ln.strip()), "")
        fast = _read_jsonl_fast(path) if first.startswith("{") and not lua else None
        table, other = fast if fast is not None else table_from_records(lines, run.warnings)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})", "check the path and its permissions") from None
    if not table.nrows:
        if path.stat().st_size == 0:
            raise EmptyLogError(path, "the file is empty", "point whyspike at a log that has been written to")
        raise InputError(path, "holds no JSON object lines (one {...} per line, optionally after a prefix)",
                         "check the path, or force another reader with --input-format")
    if lines.broken:
        run.warnings.append(f"{lines.broken} line(s) that start like a JSON object could not be parsed and were "
                            f"skipped, first at line {lines.first_broken}")
    epoch, step = _axes(table)
    config: dict[str, Any] = dict(lua)
    config.update(other)
    # a config echoed on every line is not a curve: numbers that never change, unless they are metrics
    roles = {name: classify(name) for name in table.names}
    varying_lr = any(roles[n].kind == "lr" and not _constant(table.columns[n].values)
                     for n in table.names if table.columns[n].present is None)
    for name in list(table.names):
        col = table.columns[name]
        if name in (epoch, step) or col.present is not None or not _constant(col.values):
            continue
        kind = roles[name].kind
        settled = name in lua or (table.nrows >= 3 and kind not in ("accuracy", "loss")
                                  and (kind != "lr" or varying_lr))
        if settled:
            config[name] = int(col.values[0]) if float(col.values[0]).is_integer() else float(col.values[0])
            table.names.remove(name)
    _place(run, table, wall_col=_wall_column(table))
    run.setup.config = config
    fill_setup(run.setup, config)
    return run


register(Importer("table", "text table with a header: CSV, TSV or whitespace-aligned (epoch/step column or row "
                  "index)", sniff_table, load_table))
register(Importer("jsonl", "JSON lines, also JSON objects printed after a prefix among other output", sniff_jsonl,
                  load_jsonl))

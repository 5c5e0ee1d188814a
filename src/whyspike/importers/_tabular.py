"""Shared reading for the text-table and JSON importers: text → numeric columns → Series on the right axis.

A :class:`Table` holds float64 columns with a presence mask. An empty (or ``NA``) cell means "not logged on this
row" — the sparse rows of Lightning and W&B exports — and is dropped; a logged ``nan``/``inf`` is kept as logged.

Delimited files go through ``pyarrow.csv.open_csv`` batch by batch straight into float64 arrays (a 1M-row CSV
loads in a fraction of a second, a multi-GB one never sits in memory as text). A column holding anything but
numbers (a word, ``93.5%``, a per-parameter-group LR list) is re-read as text and converted cell by cell, the other
columns staying on the fast path. What pyarrow cannot take at all — whitespace-aligned columns, a header that is
not the first line or repeats inside the file — goes through a careful row-wise Python reader. Both warn about what
they had to skip or guess.

    >>> d = detect_dialect("epoch,loss\\n0,1.5\\n1,0.9\\n")
    >>> d.delimiter, d.names
    (',', ('epoch', 'loss'))
"""

from __future__ import annotations

import csv
import functools
import json
import re
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np

from ..errors import CorruptLogError, EmptyLogError, InputError
from ..run import Event, Run, Source, make_series
from ._registry import Probe, probe
from ._runfacts import epoch_boundary_events

# empty cells are "not logged"; Keras' CSVLogger writes "NA" for a key missing in an epoch
_NULLS = frozenset({"", "na", "n/a", "null", "none", "nil"})
_ARROW_NULLS = ["", "NA", "N/A", "n/a", "na", "null", "NULL", "Null", "None", "none", "nil"]
_DELIMITERS = (",", "\t", ";", "|")
_SAMPLE_ROWS = 80
_TENSOR = re.compile(r"^tensor\(\s*\[?\s*([-+0-9.eEinfa]+)")

EPOCH_NAMES = ("epoch", "epochs", "ep")
STEP_NAMES = ("step", "steps", "global_step", "iteration", "iterations", "iter", "it", "_step", "trainer/global_step")

AxisMode = Literal["row", "epoch", "step", "mixed"]


@dataclass
class Column:
    values: np.ndarray  # float64, NaN where not present
    present: np.ndarray | None = None  # bool; None means present on every row

    def mask(self) -> np.ndarray:
        return np.ones(len(self.values), dtype=bool) if self.present is None else self.present


@dataclass
class Table:
    names: list[str]  # numeric columns, in file order
    columns: dict[str, Column]
    nrows: int
    text_columns: list[str] = field(default_factory=list)  # dropped: they hold words, not numbers
    list_columns: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"groups": n, "differ": bool}

    def find(self, candidates: Iterable[str]) -> str | None:
        """The first column whose name (case-insensitive, trimmed) is one of ``candidates``."""
        lowered = {n.strip().lower(): n for n in reversed(self.names)}
        for cand in candidates:
            if cand in lowered:
                return lowered[cand]
        return None


@dataclass(frozen=True)
class Dialect:
    delimiter: str | None  # None: runs of whitespace
    names: tuple[str, ...]  # header fields as written
    header_line: int  # 0-based index of the header line in the file
    trailing: bool  # data rows carry one more (empty) field than the header: a trailing delimiter
    numeric_share: float  # share of numeric-looking cells in the sampled data rows (0 when there are none)
    data_rows: int  # data rows seen in the sample


# ---------------------------------------------------------------------------------------------------- sniffing


def _looks_numeric(cell: str) -> bool:
    s = cell.strip()
    if not s:
        return False
    try:
        float(s)
        return True
    except ValueError:
        return _messy_number(s) is not None


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    if '"' not in line:
        return line.split(delimiter)
    return next(csv.reader([line], delimiter=delimiter), [])


@functools.lru_cache(maxsize=16)
def detect_dialect(text: str) -> Dialect | None:
    """The delimiter and header of a text table from its first lines, or None when it is not a headed table."""
    text = text.lstrip("\ufeff")
    lines = text.splitlines()
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the head may end inside a line
    header_at = next((i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")), None)
    if header_at is None:
        return None
    header = lines[header_at]
    if header.lstrip()[:1] in ("{", "["):
        return None  # JSON
    sample = [ln for ln in lines[header_at + 1: header_at + 1 + _SAMPLE_ROWS]
              if ln.strip() and not ln.lstrip().startswith("#")]
    best: tuple[tuple[float, int], Dialect] | None = None
    for rank, delim in enumerate(_DELIMITERS + (None,)):
        names = [n.strip() for n in _split(header, delim)]
        n = len(names)
        if n < 2 and not (delim is None and n == 1 and sample and all(len(_split(s, None)) == 1 for s in sample)):
            continue
        if sum(_looks_numeric(x) for x in names) > n / 2:
            continue  # a row of numbers, not a header
        rows = [_split(s, delim) for s in sample]
        exact = sum(len(r) == n for r in rows)
        plus_one = sum(len(r) == n + 1 and not r[-1].strip() for r in rows)
        trailing = plus_one > exact
        width = n + 1 if trailing else n
        fits = [r[:n] for r in rows if len(r) == width and (not trailing or not r[-1].strip())]
        if rows and len(fits) < 0.5 * len(rows):
            continue
        cells = [c for r in fits for c in r if c.strip()]
        share = sum(_looks_numeric(c) for c in cells) / len(cells) if cells else 0.0
        if rows and share < 0.5:
            continue
        d = Dialect(delim, tuple(names), header_at, trailing, share, len(fits))
        key = (share, -rank)
        if best is None or key > best[0]:
            best = (key, d)
    return None if best is None else best[1]


# ---------------------------------------------------------------------------------------------------- reading


class _NeedsPython(Exception):
    """The fast reader cannot take this file; the careful one must."""


def _unique_names(names: Iterable[str], warnings: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name and name in seen:
            seen[name] += 1
            new = f"{name}.{seen[name]}"
            warnings.append(f"column {name!r} appears more than once; the repeat is read as {new!r}")
            out.append(new)
        else:
            seen.setdefault(name, 0)
            out.append(name)
    return out


def _messy_number(s: str) -> float | list[float] | None:
    """A number written the way sloppy logs write them: ``93.5%``, ``tensor(0.71, device='cuda:0')``, ``[0.1, 0.1]``."""
    if s.endswith("%"):
        try:
            return float(s[:-1])
        except ValueError:
            return None
    if s.startswith("[") and s.endswith("]"):
        try:
            vals = [float(v) for v in s[1:-1].replace(",", " ").split()]
        except ValueError:
            return None
        return vals or None
    m = _TENSOR.match(s)
    if m:
        try:
            return float(m.group(1))
        except ValueError:
            return None
    return None


class ColumnBuilder:
    """One column's values, batch by batch: numeric arrays as they come, text cells converted one by one."""

    def __init__(self, name: str):
        self.name = name
        self.parts: list[np.ndarray] = []
        self.masks: list[np.ndarray | None] = []  # None: every row of that part present
        self.good = 0
        self.bad = 0
        self.first_bad: tuple[int, str] | None = None
        self.groups = 0  # most list entries seen in one cell (per-parameter-group LRs)
        self.differ = 0  # rows whose list entries differ

    def add_numeric(self, values: np.ndarray, mask: np.ndarray | None) -> None:
        self.parts.append(values)
        self.masks.append(mask)
        self.good += len(values) if mask is None else int(mask.sum())

    @property
    def hopeless(self) -> bool:
        """Thousands of words and not one number: a text column; later batches are only counted."""
        return self.good == 0 and self.bad >= 1000

    def add_cells(self, cells: list[str | None], lines) -> None:
        n = len(cells)
        if self.hopeless:
            self.bad += n
            return
        values = np.full(n, np.nan)
        mask = np.zeros(n, dtype=bool)
        for i, cell in enumerate(cells):
            if cell is None:
                continue
            s = cell.strip()
            if s.lower() in _NULLS:
                continue
            mask[i] = True
            try:
                values[i] = float(s)
                self.good += 1
                continue
            except ValueError:
                pass
            v = _messy_number(s)
            if v is None:
                self.bad += 1
                if self.first_bad is None:
                    self.first_bad = (lines[i], s)
            elif isinstance(v, list):
                values[i] = max(v)
                self.good += 1
                self.groups = max(self.groups, len(v))
                self.differ += min(v) != max(v)
            else:
                values[i] = v
                self.good += 1
        self.parts.append(values)
        self.masks.append(None if mask.all() else mask)

    def finish(self, table: Table, warnings: list[str]) -> None:
        name = self.name
        if not name:
            return  # a trailing delimiter or an unnamed index column
        if self.bad > self.good:
            table.text_columns.append(name)
            return
        values = np.concatenate(self.parts) if self.parts else np.empty(0)
        if all(m is None for m in self.masks):
            mask = None
        else:
            mask = np.concatenate([np.ones(len(p), dtype=bool) if m is None else m
                                   for p, m in zip(self.parts, self.masks)])
        if self.bad:
            line, text = self.first_bad  # type: ignore[misc]
            warnings.append(f"column {name!r}: {self.bad} non-numeric value(s) read as NaN, "
                            f"first {text[:40]!r} at line {line}")
        table.names.append(name)
        table.columns[name] = Column(values, mask)
        if self.groups:
            note = "the groups differ" if self.differ else "all groups are equal"
            table.list_columns[name] = {"groups": self.groups, "differ": bool(self.differ)}
            warnings.append(f"column {name!r} holds a list per row (one learning rate per parameter group, up to "
                            f"{self.groups} groups; {note}); the series holds the largest group's value")


def read_table(path: Path, dialect: Dialect, warnings: list[str]) -> Table:
    """Every numeric column of the delimited text file ``path`` read with ``dialect``."""
    names = _unique_names(dialect.names, warnings)
    if dialect.trailing:
        names.append("")
    if dialect.delimiter is not None and dialect.header_line == 0:
        text_cols: set[int] = set()
        while True:
            local: list[str] = []
            try:
                table = _read_arrow(path, dialect.delimiter, names, text_cols, local)
            except _NeedsPython as exc:
                # a text cell in a column read as numbers: read that column as text and convert it cell by cell
                col = exc.args[0] if exc.args else None
                if isinstance(col, int) and col not in text_cols and len(text_cols) < 16:
                    text_cols.add(col)
                    continue
                break
            warnings.extend(local)
            return table
    return _read_python(path, dialect, names, warnings)


_ARROW_COLUMN = re.compile(r"CSV column #(\d+)")


def _read_arrow(path: Path, delimiter: str, names: list[str], text_cols: set[int], warnings: list[str]) -> Table:
    import pyarrow as pa
    from pyarrow import csv as pacsv

    ragged: list[tuple[int | None, str]] = []

    def on_ragged(row) -> str:
        ragged.append((row.number, row.text))
        return "skip"

    keys = [f"c{i}" for i in range(len(names))]
    read = pacsv.ReadOptions(column_names=keys, skip_rows=1, block_size=4 << 20,
                             use_threads=False)  # serial is faster here (measured) and numbers the rows
    parse = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_ragged)
    convert = pacsv.ConvertOptions(
        column_types={k: (pa.string() if i in text_cols else pa.float64()) for i, k in enumerate(keys)},
        null_values=_ARROW_NULLS, strings_can_be_null=True, quoted_strings_can_be_null=True)
    builders = [ColumnBuilder(n) for n in names]
    nrows = 0
    # a ragged row that is not valid UTF-8 cannot be handed to on_ragged: pyarrow prints "Exception ignored" and
    # fails the read (the careful reader then takes over); keep that print off the user's terminal
    unraisable = sys.unraisablehook
    sys.unraisablehook = lambda _: None
    try:
        with pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as reader:
            for batch in reader:
                for i, b in enumerate(builders):
                    col = batch.column(i)
                    if i in text_cols:
                        if b.hopeless:
                            b.bad += len(col)
                            continue
                        try:
                            col = col.cast(pa.float64())
                        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                            # line numbers assume no skipped (blank or ragged) rows before: exact in practice
                            b.add_cells(col.to_pylist(), range(nrows + 2, nrows + 2 + len(col)))
                            continue
                    b.add_numeric(col.to_numpy(zero_copy_only=False),
                                  col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None)
                nrows += batch.num_rows
    except pa.ArrowInvalid as exc:
        m = _ARROW_COLUMN.search(str(exc))
        raise _NeedsPython(int(m.group(1)) if m else None) from None
    except (pa.ArrowException, UnicodeDecodeError, OSError) as exc:
        raise _NeedsPython(None) from exc
    finally:
        sys.unraisablehook = unraisable
    if any(b.first_bad and b.first_bad[1] == b.name.strip() for b in builders if b.name):
        raise _NeedsPython(None)  # the header repeated inside the file: the row-wise reader drops those rows
    if ragged:
        line, text = ragged[0]
        where = f"line {line}" if line else repr(text[:60])
        warnings.append(f"{len(ragged)} row(s) with a different number of fields than the header ({len(names)}) "
                        f"were skipped, first at {where}")
    table = Table([], {}, nrows)
    for b in builders:
        b.finish(table, warnings)
    return table


def _read_python(path: Path, dialect: Dialect, names: list[str], warnings: list[str]) -> Table:
    n = len(names)
    builders = [ColumnBuilder(x) for x in names]
    header = [x.strip() for x in dialect.names]
    ragged, first_ragged, repeats, nrows = 0, 0, 0, 0
    chunk: list[list[str]] = []
    lines: list[int] = []

    def flush() -> None:
        for j, b in enumerate(builders):
            b.add_cells([r[j] for r in chunk], lines)
        chunk.clear()
        lines.clear()

    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        for _ in range(dialect.header_line + 1):
            fh.readline()
        if dialect.delimiter is None:
            rows: Iterable[tuple[int, list[str]]] = (
                (dialect.header_line + 2 + i, ln.split()) for i, ln in enumerate(fh))
        else:
            reader = csv.reader(fh, delimiter=dialect.delimiter)
            rows = ((dialect.header_line + 1 + reader.line_num, r) for r in reader)
        for lineno, fields in rows:
            if not fields or (len(fields) == 1 and not fields[0].strip()) or fields[0].lstrip().startswith("#"):
                continue
            if len(fields) > n and not any(f.strip() for f in fields[n:]):
                fields = fields[:n]
            if len(fields) != n:
                ragged += 1
                first_ragged = first_ragged or lineno
                continue
            if [f.strip() for f in fields] == header:
                repeats += 1  # `cat`-ed logs repeat their header
                continue
            chunk.append(fields)
            lines.append(lineno)
            nrows += 1
            if len(chunk) >= 65536:
                flush()
    flush()
    if ragged:
        warnings.append(f"{ragged} row(s) with a different number of fields than the header ({n}) were skipped, "
                        f"first at line {first_ragged}")
    if repeats:
        warnings.append(f"the header line is repeated {repeats} time(s) inside the file (appended runs?); "
                        "those lines were skipped")
    table = Table([], {}, nrows)
    for b in builders:
        b.finish(table, warnings)
    return table


def table_from_records(records: Iterable[tuple[int | str, dict[str, Any]]],
                       warnings: list[str]) -> tuple[Table, dict[str, Any]]:
    """Columns from JSON-like records (where, flat dict); also the first non-numeric value of every other key.

    ``where`` names the record in warnings: a line number, or text such as ``"log_history[3]"``. Booleans,
    strings, lists and dicts are not series; numbers written as strings (``"nan"``, ``"0.5"``) are, and ``"n/a"``
    counts as not logged. Records are consumed one by one, so a generator keeps a large file out of memory.
    """
    cols: dict[str, tuple[array, array]] = {}  # key -> (row indices, values): 16 bytes a value
    other: dict[str, Any] = {}
    bad: dict[str, tuple[int, int | str, Any]] = {}  # key -> (count, where first, first value)
    nrows = 0
    for where, rec in records:
        for key, v in rec.items():
            if v is None:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                num: float | None = float(v)
            elif isinstance(v, str):
                if v.strip().lower() in _NULLS:
                    continue
                try:
                    num = float(v)
                except ValueError:
                    num = None
            else:
                num = None
            if num is None:
                if key not in bad:
                    other.setdefault(key, v)
                    bad[key] = (1, where, v)
                else:
                    c, at, first = bad[key]
                    bad[key] = (c + 1, at, first)
                continue
            col = cols.get(key)
            if col is None:
                col = cols[key] = (array("q"), array("d"))
            col[0].append(nrows)
            col[1].append(num)
        nrows += 1
    table = Table([], {}, nrows)
    for key, (idx, vals) in cols.items():
        nbad = bad[key][0] if key in bad else 0
        if nbad > len(vals):
            continue  # mostly words: a setting, not a metric (its first value is in `other`)
        values = np.full(nrows, np.nan)
        mask = np.zeros(nrows, dtype=bool)
        ix = np.frombuffer(idx, dtype=np.int64)
        values[ix] = np.frombuffer(vals, dtype=np.float64)
        mask[ix] = True
        if nbad:
            _, at, first = bad[key]
            where_text = f"line {at}" if isinstance(at, int) else at
            warnings.append(f"{key!r}: {nbad} non-numeric value(s) ignored, first {str(first)[:40]!r} at {where_text}")
            other.pop(key, None)
        table.names.append(key)
        table.columns[key] = Column(values, None if mask.all() else mask)
    return table, other


def flatten(obj: dict[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of ``outer/inner`` keys."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, sep, key + sep))
        else:
            out[key] = v
    return out


def head_dialect(p: Probe) -> Dialect | None:
    """The table dialect of a probed file (sniffers call this; it is cached per head)."""
    return None if p.is_dir else detect_dialect(p.text)


def open_table(path: Path, fmt: str) -> tuple[Run, Table]:
    """A new Run for ``path`` and every numeric column of the text table there; InputError when it is none."""
    if path.is_dir():
        raise InputError(path, f"is a directory; the {fmt} reader takes a file", "point at the log file itself")
    p = probe(path)
    if not p.head.strip():
        raise EmptyLogError(path, "the file is empty", "point whyspike at a log that has been written to")
    dialect = detect_dialect(p.text)
    if dialect is None:
        raise InputError(path, "is not a text table (a header row of names, then rows of numbers)",
                         "check the path, or force another reader with --input-format")
    run = Run(Source(str(path), fmt))
    table = read_table(path, dialect, run.warnings)
    if table.text_columns:
        run.warnings.append("column(s) holding text rather than numbers were not read: "
                            + ", ".join(repr(c) for c in table.text_columns[:8]))
    return run, table


def read_json(path: Path, what: str) -> Any:
    """The JSON document at ``path``, or a one-line error naming ``what`` was expected."""
    if path.is_dir():
        raise InputError(path, f"is a directory; expected {what}", "point at the JSON file itself")
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8-sig"))
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})", "check the path and its permissions") from None
    except UnicodeDecodeError:
        raise InputError(path, f"is not text; expected {what}",
                         "check the path, or force another reader with --input-format") from None
    except json.JSONDecodeError as exc:
        raise CorruptLogError(path, f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                              f"expected {what}", "check that the file was written completely") from None



# ---------------------------------------------------------------------------------------------------- series


def epoch_level(name: str, epochs: np.ndarray) -> bool:
    """Whether a metric logged at these epoch values is per-epoch (one value per epoch) rather than per-step."""
    low = name.lower()
    if low.endswith(("_step", "/step", "-step")):
        return False
    if low.endswith(("_epoch", "/epoch", "-epoch")):
        return True
    e = epochs[np.isfinite(epochs)]
    # two values in a row for one epoch = logged within the epoch; a resume that re-logs earlier epochs is not that
    return not bool(np.any(np.diff(e) == 0))


def add_table_series(
    run: Run,
    table: Table,
    *,
    mode: AxisMode,
    epoch_col: str | None = None,
    step_col: str | None = None,
    skip: Iterable[str] = (),
    wall_col: str | None = None,
) -> None:
    """Turn every column of ``table`` into a Series of ``run``.

    ``mode``: ``row`` (x = 0-based row index, axis epoch), ``epoch`` / ``step`` (x = that column), or ``mixed``
    (per column: per-step metrics on the step axis, once-per-epoch metrics on the epoch axis — Lightning).
    """
    skipped = set(skip) | {c for c in (wall_col,) if c}
    if mode in ("epoch", "mixed") and epoch_col:
        skipped.add(epoch_col)
    if mode in ("step", "mixed") and step_col:
        skipped.add(step_col)
    epoch = table.columns[epoch_col] if epoch_col else None
    step = table.columns[step_col] if step_col else None
    wall = table.columns[wall_col].values if wall_col else None
    unplaced: dict[str, int] = {}
    for name in table.names:
        if name in skipped:
            continue
        col = table.columns[name]
        rows = col.mask()
        if mode == "row":
            axis, x = "epoch", np.arange(table.nrows, dtype=np.float64)
        else:
            if mode == "mixed" and epoch is not None and step is not None:
                with_epoch, with_step = rows & epoch.mask(), rows & step.mask()
                # rows logged without an epoch number (logger.log_metrics by hand) can only go on the step axis
                on_epoch = with_epoch.sum() >= with_step.sum() and epoch_level(name, epoch.values[with_epoch])
                axis = "epoch" if on_epoch else "step"
            else:
                axis = "epoch" if mode == "epoch" else "step"
            axis_col = epoch if axis == "epoch" else step
            if axis_col is None:
                raise ValueError(f"add_table_series: mode {mode!r} needs its axis column")
            x = axis_col.values
            placed = rows & axis_col.mask()
            if placed.sum() < rows.sum():
                unplaced[name] = int(rows.sum() - placed.sum())
            rows = placed
        if not rows.any():
            continue
        if rows.all():  # no copies for a dense column: a 1M-row file stays a few arrays
            xs, ys, wt = x, col.values, wall
        else:
            xs, ys = x[rows], col.values[rows]
            wt = wall[rows] if wall is not None else None
        if len(xs) > 1:
            # the same value logged twice at one position (HF repeats `epoch` on train and eval rows) is no conflict
            same = (np.diff(xs) == 0) & ((np.diff(ys) == 0) | (np.isnan(ys[1:]) & np.isnan(ys[:-1])))
            if same.any():
                keep = np.concatenate(([True], ~same))
                xs, ys, wt = xs[keep], ys[keep], (None if wt is None else wt[keep])
        run.add(make_series(name, axis, xs, ys, wt, events=run.events, warnings=run.warnings))
    if unplaced:
        total = sum(unplaced.values())
        names = ", ".join(repr(n) for n in list(unplaced)[:5])
        run.warnings.append(f"{total} value(s) logged on rows without an epoch/step number were skipped ({names})")


def steps_per_epoch(steps: np.ndarray, epochs: np.ndarray) -> float | None:
    """Optimizer steps per epoch from (step, epoch) pairs logged together, or None when they do not tell.

    Whole-number epochs (Lightning, W&B): the median growth of the last step logged in each epoch. Fractional
    epochs (Hugging Face): step / epoch at the furthest point logged.
    """
    ok = np.isfinite(steps) & np.isfinite(epochs)
    s, e = steps[ok], epochs[ok]
    if len(s) < 2:
        return None
    if np.any(e != np.round(e)):
        i = int(np.argmax(e))
        return float(s[i] / e[i]) if e[i] > 0 and s[i] > 0 else None
    uniq, inverse = np.unique(e, return_inverse=True)
    if len(uniq) < 3:
        return None
    last = np.full(len(uniq), -np.inf)
    np.maximum.at(last, inverse, s)
    last, uniq = last[:-1], uniq[:-1]  # the final epoch may be cut short
    growth = np.diff(last) / np.diff(uniq)
    growth = growth[growth > 0]
    return float(np.median(growth)) if len(growth) else None


def epoch_boundaries(steps: np.ndarray, epochs: np.ndarray, source: str) -> list[Event]:
    """``epoch_boundary`` events where the whole epoch number changes along the steps (see ``_runfacts``)."""
    ok = np.isfinite(steps) & np.isfinite(epochs)
    s, e = steps[ok], np.floor(epochs[ok])  # fractional epochs (HF) cross a boundary when they pass n
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    if len(s) == 0:
        return []
    change = np.concatenate(([True], e[1:] != e[:-1]))  # only the rows where it changes matter: 1M rows stay fast
    return epoch_boundary_events(s[change].tolist(), e[change].tolist(), source)

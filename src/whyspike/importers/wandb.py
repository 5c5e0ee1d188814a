"""Weights & Biases run directories (offline or synced), read from the ``.wandb`` datastore without wandb.

Point at a run directory (``wandb/offline-run-YYYYMMDD_HHMMSS-<id>/`` or ``wandb/run-...``), at its
``run-<id>.wandb`` file, at the ``wandb/`` folder, or at a project directory holding ``wandb/``. With several runs
the most recent (by the time in the directory name) is read, and a warning names the others.

**The datastore** is LevelDB's log format with W&B's own header: 7 bytes ``":W&B"``, magic ``0xBEE1`` (uint16 LE),
version 0; then 32 KiB blocks (counted from the start of the file) of chunks ``crc32: uint32 LE, length: uint16 LE,
type: uint8, data``, where type is FULL=1, FIRST=2, MIDDLE=3, LAST=4, a block tail shorter than a chunk header is
zero padding, and the checksum is zlib's CRC-32 (not CRC-32C) of the type byte followed by the data. Each
reassembled record is a protobuf ``wandb_internal.Record``. Read here (field numbers from ``wandb_internal.proto``):
``Record.history = 2`` → ``HistoryRecord{item = 1 (repeated HistoryItem), step = 2 (HistoryStep{num = 1})}``,
``HistoryItem{key = 1, nested_key = 2 (repeated), none = 3, boolean = 4, integer = 5 (sint64), number = 6 (double),
text = 7, json = 8, value_json = 16}``; ``Record.config = 5`` → ``ConfigRecord{update = 1, remove = 2}`` of
``ConfigItem{key = 1, nested_key = 2, value_json = 16}``; ``Record.run = 17`` → ``RunRecord{run_id = 1,
project = 3, config = 4, display_name = 8, start_time = 17 (Timestamp{seconds = 1, nanos = 2})}``.

**Series** — every numeric history key (keys starting with ``_`` are W&B's own) on the ``step`` axis at the row's
``_step``; a key nested by logging a dict (``{"val": {"acc": ...}}``) is named with dots, ``val.acc``, as W&B
shows it; ``train/loss`` keeps its slash. ``_timestamp`` (or run start + ``_runtime``) is the wall time. An
``epoch`` key stays a series on the step axis and also yields ``epoch_boundary`` events. The config comes from the
run's config records, or from ``files/config.yaml`` when the datastore holds none.

A datastore that ends inside a record (a run still writing, a copy cut short) is read up to there with a warning;
a checksum mismatch stops the read at the damaged record, with a warning, or a CorruptLogError when nothing before
it was usable.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CorruptLogError, EmptyLogError, InputError
from ..run import Run, Setup, Source, make_series
from . import _protowire as pw
from ._registry import Importer, Probe, register
from ._hparams import fill_setup
from ._runfacts import epoch_boundary_events

FORMAT = "wandb"
HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
BLOCK_LEN = 32768
CHUNK_HEADER_LEN = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_TYPE_CRC = {t: zlib.crc32(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}
_RUN_DIR = re.compile(r"(?:offline-)?run-(\d{8}_\d{6})-([A-Za-z0-9]+)")


# ---------------------------------------------------------------------------------------------------- sniffing


def _sniff(p: Probe) -> float:
    if not p.is_dir:
        if p.head.startswith(HEADER[:4]):
            return 0.99
        return 0.6 if p.name.endswith(".wandb") else 0.0
    if any(e.endswith(".wandb") for e in p.entries):
        return 0.95  # a run directory
    if any(_RUN_DIR.fullmatch(e) for e in p.entries):
        return 0.9  # the wandb/ folder
    if _RUN_DIR.fullmatch(p.path.name):
        return 0.6  # a run directory whose datastore is missing: loading says so
    if "wandb" in p.entries:
        return 0.3  # a project directory
    return 0.0


# ---------------------------------------------------------------------------------------------------- finding the run


def _datastore_in(run_dir: Path, warnings: list[str]) -> Path | None:
    stores = sorted(f for f in run_dir.iterdir() if f.name.endswith(".wandb") and f.is_file())
    if not stores:
        return None
    if len(stores) > 1:
        m = _RUN_DIR.fullmatch(run_dir.name)
        named = [f for f in stores if m and f.name == f"run-{m.group(2)}.wandb"]
        chosen = named[0] if named else max(stores, key=lambda f: f.stat().st_size)
        warnings.append(f"{run_dir}: {len(stores)} .wandb files; read {chosen.name}, "
                        f"pass another file to read it instead ({', '.join(f.name for f in stores if f != chosen)})")
        return chosen
    return stores[0]


def _resolve(path: Path, warnings: list[str]) -> Path:
    """The ``.wandb`` file to read for ``path``."""
    if not path.is_dir():
        return path
    store = _datastore_in(path, warnings)
    if store is not None:
        return store
    if _RUN_DIR.fullmatch(path.name):
        raise EmptyLogError(path, "is a W&B run directory without a .wandb datastore",
                            "the run has not logged yet, or its datastore was removed after syncing")
    runs = [d for d in path.iterdir() if _RUN_DIR.fullmatch(d.name) and d.is_dir() and not d.is_symlink()]
    if not runs and (path / "wandb").is_dir():
        return _resolve(path / "wandb", warnings)
    usable = [(d, s) for d in runs if (s := _datastore_in(d, [])) is not None]
    if not usable:
        raise EmptyLogError(path, "holds no W&B run with a .wandb datastore",
                            "point whyspike at a wandb/ folder or one of its run-*/offline-run-* directories")
    # the directory name carries the start time: YYYYMMDD_HHMMSS sorts chronologically
    usable.sort(key=lambda ds: (_RUN_DIR.fullmatch(ds[0].name).group(1), ds[0].name))
    run_dir, store = usable[-1]
    if len(usable) > 1:
        others = [d.name for d, _ in usable[:-1]][::-1]
        listed = ", ".join(others[:10]) + (f", and {len(others) - 10} more" if len(others) > 10 else "")
        warnings.append(f"{len(usable)} W&B runs found; read the most recent, {run_dir.name}; "
                        f"the others: {listed} — pass a run directory to read another")
    return store


# ---------------------------------------------------------------------------------------------------- datastore


@dataclass
class _Scan:
    records: list[bytes] = field(default_factory=list)
    problem: str | None = None  # why reading stopped early
    corrupt: bool = False  # damaged (vs. merely cut short)


def _scan(data: bytes, path: Path) -> _Scan:
    """Reassembled records of a datastore, stopping at the first truncation or damage."""
    if not data.startswith(HEADER[:4]):
        raise InputError(path, "is not a W&B datastore (it does not start with ':W&B')",
                         "point whyspike at the run-<id>.wandb file of a W&B run directory")
    if len(data) < len(HEADER):
        raise CorruptLogError(path, "the W&B datastore is cut inside its 7-byte header", "the file holds no records")
    if data[: len(HEADER)] != HEADER:
        magic, version = struct.unpack("<HB", data[4:7])
        raise InputError(path, f"W&B datastore with an unknown header (magic {magic:#06x}, version {version})",
                         "this whyspike reads version 0 (magic 0xbee1); open an issue with the wandb version used")
    out = _Scan()
    pos, end = len(HEADER), len(data)
    parts: list[bytes] | None = None  # chunks of a record split across blocks
    start = pos
    while True:
        space = BLOCK_LEN - pos % BLOCK_LEN
        if space < CHUNK_HEADER_LEN:  # block trailer: zero padding
            pos += space
            continue
        if pos >= end:
            if parts is not None:
                out.problem = f"ends inside a record that started at byte {start}"
            return out
        if pos + CHUNK_HEADER_LEN > end:
            out.problem = f"ends inside a record header at byte {pos}"
            return out
        crc, length, ctype = struct.unpack_from("<IHB", data, pos)
        if ctype == 0 and length == 0 and crc == 0:  # zeroed (preallocated) space: nothing more in this block
            if not any(data[pos : min(end, pos + space)]):
                pos += space
                continue
        if ctype not in _TYPE_CRC or CHUNK_HEADER_LEN + length > space:
            out.problem, out.corrupt = f"holds a damaged record header at byte {pos}", True
            return out
        if pos + CHUNK_HEADER_LEN + length > end:
            out.problem = f"ends inside a record at byte {pos}"
            return out
        chunk = data[pos + CHUNK_HEADER_LEN : pos + CHUNK_HEADER_LEN + length]
        if zlib.crc32(chunk, _TYPE_CRC[ctype]) != crc:
            out.problem, out.corrupt = f"checksum mismatch in the record at byte {pos}", True
            return out
        if ctype == FULL or ctype == FIRST:
            if parts is not None:
                out.problem, out.corrupt = f"a record split across blocks is missing its end before byte {pos}", True
                return out
            start = pos
        elif parts is None:
            out.problem, out.corrupt = f"a record continuation without its start at byte {pos}", True
            return out
        pos += CHUNK_HEADER_LEN + length
        if ctype == FULL:
            out.records.append(chunk)
        elif ctype == FIRST:
            parts = [chunk]
        elif ctype == MIDDLE:
            parts.append(chunk)  # type: ignore[union-attr]
        else:
            out.records.append(b"".join(parts + [chunk]))  # type: ignore[operator]
            parts = None


# ---------------------------------------------------------------------------------------------------- protobuf


def _item_key(key: str | None, nested: list[str]) -> str | None:
    return ".".join(nested) if nested else key


def _json_value(text: str) -> Any:
    """Decoded JSON, or None when it is not JSON (a value we cannot plot anyway)."""
    try:
        return json.loads(text)  # W&B spells non-finite floats NaN / Infinity / -Infinity, which json accepts
    except ValueError:
        return None


def _item_fields(buf: bytes) -> tuple[str | None, str | None, bool, Any]:
    """``(name, value_json, typed, value)`` of a HistoryItem or ConfigItem: key (1), nested_key (2), value_json (16),
    and the typed value fields newer writers may set in history items instead of / besides value_json."""
    key, nested, value_json = None, [], None
    typed, value = False, None
    for num, wire, val in pw.fields(buf):
        if num == 1 and wire == pw.BYTES:
            key = pw.as_text(val)
        elif num == 2 and wire == pw.BYTES:
            nested.append(pw.as_text(val))
        elif num == 16 and wire == pw.BYTES:
            value_json = pw.as_text(val)
        elif num == 5 and wire == pw.VARINT:
            typed, value = True, float(pw.as_sint64(val))
        elif num == 6 and wire == pw.FIXED64:
            typed, value = True, pw.as_double(val)
        elif num == 8 and wire == pw.BYTES:
            typed, value = True, _json_value(pw.as_text(val))
        elif num in (3, 4, 7):  # none / boolean / text: not a curve
            typed, value = True, None
    return _item_key(key, nested), value_json, typed, value


def _history_item(buf: bytes) -> tuple[str | None, Any]:
    """``(key, value)`` of a HistoryItem; the value as logged (number, dict, ...) or None when it is no number."""
    name, value_json, typed, value = _item_fields(buf)
    if not typed and value_json is not None:
        value = _json_value(value_json)
    return name, value


def _numeric_leaves(name: str, value: Any, out: dict[str, float]) -> None:
    """Numbers in a logged value: a number itself, or the numeric leaves of a dict (``val.acc``)."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        out[name] = float(value)
    elif isinstance(value, dict) and "_type" not in value:  # dicts with _type are media, tables, histograms
        for k, v in value.items():
            _numeric_leaves(f"{name}.{k}", v, out)


def _history(buf: bytes) -> tuple[dict[str, float], float | None]:
    row: dict[str, float] = {}
    step_num = None
    for num, wire, val in pw.fields(buf):
        if num == 1 and wire == pw.BYTES:
            key, value = _history_item(val)
            if key:
                _numeric_leaves(key, value, row)
        elif num == 2 and wire == pw.BYTES:
            step_num = 0.0  # HistoryStep with num 0 encodes as empty
            for n2, w2, v2 in pw.fields(val):
                if n2 == 1 and w2 == pw.VARINT:
                    step_num = float(pw.as_int64(v2))
    return row, step_num


def _config_items(buf: bytes, config: dict[str, Any]) -> None:
    """Apply a ConfigRecord's updates and removals to ``config``."""
    for num, wire, val in pw.fields(buf):
        if num not in (1, 2) or wire != pw.BYTES:
            continue
        name, value_json, _, _ = _item_fields(val)
        if not name or name.startswith("_wandb"):
            continue
        if num == 2:
            config.pop(name, None)
        elif value_json is not None:
            value = _json_value(value_json)
            config[name] = value_json if value is None and value_json.strip() != "null" else value


@dataclass
class _Parsed:
    rows: list[tuple[dict[str, float], float | None]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    start_time: float | None = None
    run_id: str | None = None


def _parse(records: list[bytes]) -> _Parsed:
    out = _Parsed()
    for rec in records:
        for num, wire, val in pw.fields(rec):
            if wire != pw.BYTES:
                continue
            if num == 2:
                out.rows.append(_history(val))
            elif num == 5:
                _config_items(val, out.config)
            elif num == 17:
                for n2, w2, v2 in pw.fields(val):
                    if n2 == 1 and w2 == pw.BYTES:
                        out.run_id = pw.as_text(v2)
                    elif n2 == 4 and w2 == pw.BYTES:
                        _config_items(v2, out.config)
                    elif n2 == 17 and w2 == pw.BYTES:
                        secs = nanos = 0
                        for n3, w3, v3 in pw.fields(v2):
                            if n3 == 1 and w3 == pw.VARINT:
                                secs = pw.as_int64(v3)
                            elif n3 == 2 and w3 == pw.VARINT:
                                nanos = pw.as_int64(v3)
                        out.start_time = secs + nanos / 1e9
    return out


# ---------------------------------------------------------------------------------------------------- config.yaml


def _yaml_scalar(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)  # numbers, true/false/null, "double-quoted"
    except ValueError:
        pass
    try:
        return float(text)  # 1e-3, .5
    except ValueError:
        return text.strip("'")


def _read_config_yaml(path: Path) -> dict[str, Any]:
    """Scalar entries of a W&B ``config.yaml`` (``key:`` then an indented ``value: <scalar>``; nested values are
    left out, W&B's datastore carries the full config)."""
    out: dict[str, Any] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return out
    key = None
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            key, _, rest = line.partition(":")
            key = key.strip().strip("'\"")
            if rest.strip():  # `key: scalar` form
                out[key] = _yaml_scalar(rest)
                key = None
        elif key is not None:
            m = re.match(r"\s+value:\s*(.*)$", line)
            if m and line.startswith("  value:") and m.group(1).strip():
                out[key] = _yaml_scalar(m.group(1))
    for meta in ("wandb_version", "_wandb"):
        out.pop(meta, None)
    return out


# ---------------------------------------------------------------------------------------------------- loading


def load(path: str | os.PathLike) -> Run:
    """Read a W&B run (offline or synced) from its directory, its ``.wandb`` file or the ``wandb/`` folder."""
    path = Path(path)
    warnings: list[str] = []
    try:
        store = _resolve(path, warnings)
        data = store.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})", "check the path and its permissions") from None
    scan = _scan(data, store)
    try:
        parsed = _parse(scan.records)
    except pw.WireError as exc:
        raise CorruptLogError(store, f"a record with a valid checksum is not a W&B record ({exc})",
                              "the file is not a datastore this whyspike understands; open an issue with its wandb version") from None
    if scan.problem:
        rows = len(parsed.rows)
        if scan.corrupt and not rows:
            raise CorruptLogError(store, f"the W&B datastore {scan.problem}, before any logged row",
                                  "the file is damaged; if the run was synced, read it from another copy")
        why = "the file is damaged" if scan.corrupt else "the run may still be writing, or the copy was cut short"
        warnings.append(f"{store}: {scan.problem} ({why}); read the {rows} history row(s) before it")

    run = Run(source=Source(str(path), FORMAT), warnings=warnings)
    config = parsed.config
    yaml_path = store.parent / "files" / "config.yaml"
    if not config and yaml_path.is_file():
        config = _read_config_yaml(yaml_path)
    run.setup = Setup(config=dict(config))
    fill_setup(run.setup, config)
    _build(run, parsed)
    return run


def _build(run: Run, parsed: _Parsed) -> None:
    series: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for index, (row, step_num) in enumerate(parsed.rows):
        step = row.get("_step", step_num if step_num is not None else float(index))
        wall = row.get("_timestamp")
        if wall is None and "_runtime" in row and parsed.start_time is not None:
            wall = parsed.start_time + row["_runtime"]
        for key, value in row.items():
            if key.startswith("_"):
                continue
            xs, ys, ws = series.setdefault(key, ([], [], []))
            xs.append(step)
            ys.append(value)
            ws.append(math.nan if wall is None else wall)
    for key, (xs, ys, ws) in series.items():
        wall_time = None if all(math.isnan(w) for w in ws) else ws
        run.add(make_series(key, "step", xs, ys, wall_time, events=run.events, warnings=run.warnings))
    if "epoch" in series:
        xs, ys, _ = series["epoch"]
        run.events.extend(epoch_boundary_events(xs, ys, "epoch"))


register(Importer(FORMAT, "Weights & Biases run directory or .wandb datastore (offline or synced)", _sniff, load))

"""The run directory every recorder writes and ``whyspike diagnose`` reads (format id ``whyspike-run``).

Layout (schema ``whyspike/run-v1``)::

    RUN_DIR/
      meta.json                 facts written once or rarely (replaced atomically): optimizer and schedule config,
                                steps per epoch, dataset/batch sizes, model facts, framework versions, seeds
      steps/part-00000.parquet  per-step rows: step, epoch, wall_time, lr, loss, grad_norm, ... (one file per flush)
      epochs/part-00000.parquet per-epoch rows: epoch, wall_time, val_accuracy, train_eval_accuracy, weight_norm, ...
      examples/<name>-e0003.npy per-example correctness on the eval set at an epoch (bool, for McNemar tests)
      checkpoints/epoch-0003/   model + optimizer state, in the recorder's safe format (no pickle): the newest
                                ``keep_checkpoints``, those of the last ``hold_epochs`` epochs (a jump is only
                                confirmed a few epochs later) and those pinned around a detected jump

Crash safety: every file is written under a temporary name and renamed into place, so a ``kill -9`` loses at most
the rows buffered since the last flush (every ``flush_seconds``, 5 s by default, or ``flush_rows`` steps, 50,000,
whichever comes first: a Parquet file has a fixed cost of a millisecond or two, so parts are few and large) and a reader never sees half a file. Parts accumulate one per flush; when
more than ``COMPACT_AT`` exist they are merged into one (a crash mid-merge leaves duplicate rows, which readers
drop: the last value of a step wins). Growth: one float64 column costs ~8 bytes a row before compression, so the
default tier (about 8 columns) grows by roughly 30-60 MB per million steps on disk.

If the disk fills up or the directory becomes unwritable, the writer says so once on stderr, stops writing and
never raises into the training loop; what was flushed before stays readable.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._budget import TimeBudget

SCHEMA = "whyspike/run-v1"
COMPACT_AT = 64
# what a first checkpoint is assumed to cost before one has been timed (a small model's torch.save / np.savez and
# the directory renames): with the 0.5% budget the first one waits for ~0.4 s of training
CHECKPOINT_FIRST_GUESS = 0.002


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    # written under a temporary name, then renamed: a reader or a killed process never sees half a file. No fsync:
    # a kill -9 keeps what the kernel has (only a power cut could lose it), and an fsync costs a tiny model's epoch
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _scalar(v: Any) -> float | None:
    """A plain float from a Python/numpy/0-d tensor value (None when it is not a number)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _float_column(v: Any, n: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A float64 column of length ``n`` and its null mask (None: no nulls) from a numpy (masked) array or a list
    with None for nulls; None when ``v`` is not that."""
    try:
        if np.ma.isMaskedArray(v):
            mask = np.ma.getmaskarray(v)
            data = np.array(np.ma.getdata(v), dtype=np.float64).reshape(-1)
            mask = np.array(mask).reshape(-1) if mask.any() else None
        elif isinstance(v, np.ndarray):
            data, mask = np.array(v, dtype=np.float64).reshape(-1), None  # a copy: the caller may reuse its array
        else:
            vals = [None if x is None else float(x) for x in v]
            mask = np.fromiter((x is None for x in vals), dtype=bool, count=len(vals))
            data = np.fromiter((0.0 if x is None else x for x in vals), dtype=np.float64, count=len(vals))
            mask = mask if mask.any() else None
    except (TypeError, ValueError):
        return None
    return (data, mask) if len(data) == n else None


def _block_table(block: dict[str, tuple[np.ndarray, np.ndarray | None]]):
    """The Arrow table of a block of columns kept by :meth:`RunWriter.steps`."""
    import pyarrow as pa

    return pa.table({k: pa.array(data, mask=mask, type=pa.float64()) for k, (data, mask) in block.items()})


class _Table:
    """Rows buffered in memory, flushed as one Parquet part per flush. Rows come one at a time (dicts) or in blocks
    of columns (:meth:`add_columns`); both end up in the same part, in the order they came."""

    def __init__(self, folder: Path, key: str):
        self.folder = folder
        self.key = key
        self.rows: list[dict[str, float]] = []  # single rows since the last block
        # earlier rows and blocks, in order: Arrow tables, or blocks of numpy columns (converted at the flush:
        # Arrow calls between training steps slow the steps after them, far beyond their own few hundred µs)
        self.blocks: list[Any] = []
        self.n = 0  # rows buffered in all
        existing = sorted(folder.glob("part-*.parquet")) if folder.exists() else []
        self.next_part = 1 + max((int(p.stem.split("-")[1]) for p in existing), default=-1)

    def add(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self.n += 1

    def add_columns(self, table, n: int) -> None:
        """A block of ``n`` rows: an Arrow table of float64 columns, or a dict of (float64 data, null mask or None)
        numpy columns."""
        if self.rows:
            self.blocks.append(self._rows_table())
            self.rows = []
        self.blocks.append(table)
        self.n += n

    def _rows_table(self):
        import pyarrow as pa

        cols: dict[str, list] = {}
        for r in self.rows:
            for k in r:
                cols.setdefault(k, None)
        return pa.table({k: pa.array([r.get(k) for r in self.rows], type=pa.float64()) for k in cols})

    def flush(self) -> None:
        if not self.n:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        blocks = [_block_table(b) if isinstance(b, dict) else b for b in self.blocks]
        if self.rows:
            blocks.append(self._rows_table())
        # columns missing from a block are null there
        table = blocks[0] if len(blocks) == 1 else pa.concat_tables(blocks, promote_options="default")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"part-{self.next_part:05d}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        self.next_part += 1
        self.rows, self.blocks, self.n = [], [], 0
        if self.next_part % COMPACT_AT == 0:
            self._compact()

    def _compact(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = sorted(self.folder.glob("part-*.parquet"))
        if len(parts) < 2:
            return
        merged = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
        path = self.folder / f"part-{self.next_part:05d}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(merged, tmp)
        os.replace(tmp, path)  # from here the merged part holds everything; the old parts are duplicates
        self.next_part += 1
        for p in parts:
            p.unlink(missing_ok=True)


class RunWriter:
    """Buffered, crash-safe writer of one run directory.

        >>> import tempfile
        >>> w = RunWriter(tempfile.mkdtemp())
        >>> w.step(0, loss=2.3, lr=0.1); w.epoch(0, val_accuracy=0.5); w.close()
    """

    def __init__(self, path: str | os.PathLike, *, flush_rows: int = 50_000, flush_seconds: float = 5.0,
                 keep_checkpoints: int = 3, hold_epochs: int = 8, checkpoint_budget: float | None = None):
        self.path = Path(path)
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.keep_checkpoints = keep_checkpoints
        # a jump is confirmed a few epochs after it happens (detection needs points on both sides): checkpoints
        # younger than this many epochs are held back from deletion until they can be pinned
        self.hold_epochs = hold_epochs
        # checkpoints may take at most this share of wall-clock time: with epochs of a few milliseconds (tiny
        # models) one per epoch would cost more than the training, so some epochs are then skipped
        # (WHYSPIKE_CHECKPOINT_BUDGET=1 turns the budget off: a checkpoint every epoch, whatever it costs)
        self.checkpoint_budget = TimeBudget(
            checkpoint_budget if checkpoint_budget is not None else
            float(os.environ.get("WHYSPIKE_CHECKPOINT_BUDGET", "0.005")), first_guess=CHECKPOINT_FIRST_GUESS)
        self._ckpt_began: float | None = None
        self.broken: str | None = None  # why writing stopped, once it has
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._pinned: set[int] = set()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            self.fail(f"cannot write the run directory {self.path} ({exc.strerror or exc})")
        self._steps = _Table(self.path / "steps", "step")
        self._epochs = _Table(self.path / "epochs", "epoch")
        self.meta: dict[str, Any] = {"schema": SCHEMA}
        meta_path = self.path / "meta.json"
        if meta_path.exists():
            try:
                self.meta.update(json.loads(meta_path.read_text()))
            except (OSError, ValueError):
                pass
        self.epoch_rows: list[dict[str, float]] = []  # every epoch row, kept for live explanation
        self.meta.setdefault("created", time.time())
        self.write_meta()  # the directory is recognisable (and readable) from the first moment

    # -- failure handling: training must never break because of the recorder
    def fail(self, why: str) -> None:
        """Stop writing (said once on stderr); recorders call this for their own I/O errors too."""
        if self.broken is None:
            self.broken = why
            print(f"whyspike: recording stopped: {why}; training continues, what was saved so far stays "
                  f"readable in {self.path}", file=sys.stderr)

    def _guard(self, fn, *args) -> None:
        if self.broken is not None:
            return
        try:
            fn(*args)
        except OSError as exc:
            self.fail(f"{exc.strerror or exc} while writing {self.path}")

    # -- data
    def write_meta(self, **facts: Any) -> None:
        """Merge ``facts`` (JSON-serialisable) into meta.json and write it at once."""
        self.meta.update(facts)
        data = json.dumps(self.meta, indent=2, default=str, allow_nan=True).encode()
        self._guard(_atomic_write_bytes, self.path / "meta.json", data)

    def step(self, step: int, **values: Any) -> None:
        row = {"step": float(step), "wall_time": time.time()}
        row.update({k: f for k, v in values.items() if (f := _scalar(v)) is not None})
        with self._lock:
            self._steps.add(row)
            if self._steps.n >= self.flush_rows or time.monotonic() - self._last_flush > self.flush_seconds:
                self._flush_locked()

    def steps(self, columns: dict[str, Any]) -> None:
        """Append a block of step rows at once: ``columns`` maps a column name to a 1-d array of one value per row
        (numpy arrays; a masked array's masked entries, or None in a list, are null: not recorded at that step).
        ``step`` is required; ``wall_time`` is now unless given. The same Parquet output and flush rules as
        :meth:`step` (the rows count towards ``flush_rows``); never raises: a column that is not numeric or not of
        the block's length is left out."""
        if self.broken is not None:
            return
        try:
            step = columns.get("step")
            if step is None:
                return
            n = len(step)
            if n == 0:
                return
            block: dict[str, Any] = {}
            for k, v in columns.items():
                col = _float_column(v, n)
                if col is not None:
                    block[k] = col
            if "step" not in block:
                return
            if "wall_time" not in block:
                block["wall_time"] = (np.full(n, time.time()), None)
            order = ["step", "wall_time"] + [k for k in block if k not in ("step", "wall_time")]
            block = {k: block[k] for k in order}
        except Exception as exc:  # noqa: BLE001 - recording must never break training
            print(f"whyspike: a block of step rows was not recorded ({type(exc).__name__}: {exc})", file=sys.stderr)
            return
        with self._lock:
            self._steps.add_columns(block, n)
            if self._steps.n >= self.flush_rows or time.monotonic() - self._last_flush > self.flush_seconds:
                self._flush_locked()

    def epoch(self, epoch: int, **values: Any) -> None:
        row = {"epoch": float(epoch), "wall_time": time.time()}
        row.update({k: f for k, v in values.items() if (f := _scalar(v)) is not None})
        with self._lock:
            self._epochs.add(row)
            self.epoch_rows.append(row)  # live explanation reads these, not the files
            # written with the next flush (every flush_seconds): a file per epoch would cost more than a tiny
            # model's epoch
            if time.monotonic() - self._last_flush > self.flush_seconds:
                self._flush_locked()

    def examples(self, epoch: int, name: str, correct) -> None:
        """Per-example correctness on an eval set at ``epoch`` (a bool vector), for McNemar tests."""
        arr = np.asarray(correct, dtype=bool)

        def write() -> None:
            folder = self.path / "examples"
            folder.mkdir(exist_ok=True)
            path = folder / f"{name}-e{int(epoch):04d}.npy"
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, path)

        self._guard(write)

    # -- checkpoints: a ring buffer of the last K epochs, plus pinned ones (around spikes)
    def checkpoint_dir(self, epoch: int) -> Path | None:
        """A fresh directory for the checkpoint of ``epoch`` (None once writing has stopped)."""
        if self.broken is not None:
            return None
        if not self.checkpoint_budget.allows():
            return None  # over the time budget: skip this epoch's checkpoint
        self._ckpt_began = time.perf_counter()
        d = self.path / "checkpoints" / f"epoch-{int(epoch):04d}.tmp"
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.fail(f"{exc.strerror or exc} while writing a checkpoint")
            return None
        return d

    def commit_checkpoint(self, epoch: int) -> None:
        """Publish the checkpoint written into ``checkpoint_dir(epoch)`` and drop old unpinned ones."""
        def commit() -> None:
            root = self.path / "checkpoints"
            src = root / f"epoch-{int(epoch):04d}.tmp"
            dst = root / f"epoch-{int(epoch):04d}"
            if dst.exists():
                _rmtree(dst)
            os.replace(src, dst)
            done = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp"))
            keep = {p.name for p in done[-self.keep_checkpoints:]} | {f"epoch-{e:04d}" for e in self._pinned}
            newest = int(epoch)
            for p in done:
                held = newest - int(p.name.split("-")[1]) < self.hold_epochs
                if p.name not in keep and not held:
                    _rmtree(p)

        self._guard(commit)
        if self._ckpt_began is not None:
            self.checkpoint_budget.charge(time.perf_counter() - self._ckpt_began)
            self._ckpt_began = None

    def pin(self, epoch: int) -> None:
        """Keep the checkpoints of ``epoch`` (and the one before) whatever the ring buffer's size."""
        self._pinned.update({int(epoch), int(epoch) - 1})

    # -- flushing
    def flush_due(self) -> bool:
        """Whether the timed flush is due (``flush_seconds`` since the last one): a recorder that keeps rows of its
        own before handing them over should hand them over now, so that a crash loses at most that much."""
        return time.monotonic() - self._last_flush > self.flush_seconds

    def _flush_locked(self) -> None:
        self._guard(self._steps.flush)
        self._guard(self._epochs.flush)
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        self.flush()


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)

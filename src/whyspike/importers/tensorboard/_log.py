"""Collect the scalars of one run directory's event files, in the order they were written."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from . import _decode, _fast
from ._records import Batch

SCALAR_PLUGINS = {"", "scalars"}  # '' = a value without plugin metadata (simple_value, bare tensors)

Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # record number, step, wall time, value


class ScalarLog:
    """Scalars per tag plus the markers where a writer (re)started, numbered by record across all files of a run.

    Record numbers order everything: files are added in writing order, so "later" always means "written later",
    which is what a resumed run's rewind needs.
    """

    def __init__(self) -> None:
        self.records = 0
        self.undecodable = 0
        self.file = ""  # name of the file being added, for markers
        self.markers: list[tuple[int, float, str]] = []  # (record, wall time, file) of file_version / session start
        self._plugins: dict[str, set[str]] = defaultdict(set)
        self._fast: dict[str, list[Columns]] = defaultdict(list)
        self._slow: dict[str, list[tuple[int, int, float, float]]] = defaultdict(list)

    def add_batch(self, batch: Batch, first_record: int) -> None:
        fast = _fast.decode(batch.buf, batch.arr, batch.data_start, batch.data_len)
        if len(fast.index):
            record = first_record + fast.index
            # radix sort on small ints: linear time
            key = fast.group.astype(np.uint16 if len(fast.groups) < 1 << 16 else np.int64)
            order = np.argsort(key, kind="stable")
            bounds = np.concatenate(([0], np.cumsum(np.bincount(fast.group, minlength=len(fast.groups)))))
            for g, (tag, plugin) in enumerate(fast.groups):
                sel = order[bounds[g] : bounds[g + 1]]
                self._fast[tag].append((record[sel], fast.step[sel], fast.wall[sel], fast.value[sel]))
                if plugin:
                    self._plugins[tag].add(plugin)
        rest = np.ones(len(batch.data_start), dtype=bool)
        rest[fast.index] = False
        buf = batch.buf
        for k in np.flatnonzero(rest).tolist():
            start = int(batch.data_start[k])
            try:
                ev = _decode.decode_event(buf, start, start + int(batch.data_len[k]))
            except _decode.MalformedEvent:
                self.undecodable += 1
                continue
            record = first_record + k
            if ev.file_version is not None or ev.session_start:
                self.markers.append((record, ev.wall_time, self.file))
            for tag, plugin in ev.plugins:
                self._plugins[tag].add(plugin)
            for tag, value in ev.scalars:
                self._slow[tag].append((record, ev.step, ev.wall_time, value))

    def columns(self) -> dict[str, Columns]:
        """Per tag, every logged value in record order; tags owned by non-scalar plugins are left out.

        Hands the collected values over (the log is empty afterwards), so that the pieces are freed as they are
        joined instead of being held twice."""
        out = {}
        for tag in sorted(self._fast.keys() | self._slow.keys()):
            parts = self._fast.pop(tag, [])
            slow = self._slow.pop(tag, [])
            if self._plugins.get(tag, set()) - SCALAR_PLUGINS:
                continue
            if slow:
                rec, step, wall, value = zip(*slow)
                parts.append((np.array(rec, np.int64), np.array(step, np.int64), np.array(wall, np.float64),
                              np.array(value, np.float64)))
            rec, step, wall, value = (np.concatenate(c) for c in zip(*parts))
            if len(rec) > 1 and not (np.diff(rec) > 0).all():
                order = np.argsort(rec, kind="stable")
                rec, step, wall, value = rec[order], step[order], wall[order], value[order]
            out[tag] = (rec, step, wall, value)
        return out

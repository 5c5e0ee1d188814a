"""Per-step values kept on the device between flushes, then copied to the host and written in one go.

A step's row is a dict of column -> value. Values are Python numbers, 0-d tensors (the loss, a norm), or one of two
deferred cells whose reduction is left to the drain, where it is done for all the buffered steps at once:

- :class:`NormParts`: the per-tensor gradient norms of one step (``torch._foreach_norm``'s output); the drain
  stacks those of every buffered step into one ``(steps, tensors)`` matrix and takes the norm of each row;
- :class:`Count`: a step's vector of correct predictions; the drain stacks them and sums each row.

So the per-step work on the device is one ``foreach_norm``, a ``detach``, one ``argmax`` and one ``==``, with no
reduction and no synchronisation; every ``flush_every`` steps the drain runs a handful of vectorised ops and copies
their results to the host in one concatenation and one transfer per device.
"""

from __future__ import annotations

import bisect
import math
import time
from typing import Any

import numpy as np

from ..store import RunWriter, _scalar
from ._support import _t


class NormParts:
    """The per-tensor 2-norms of one step's gradients (a list of 0-d tensors, or one 1-d tensor)."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = parts


class Count:
    """A vector of correct predictions (bool) whose number of True is counted at the drain."""

    __slots__ = ("hits",)

    def __init__(self, hits):
        self.hits = hits


def summed(v):
    """A :class:`Count` reduced now (a 0-d tensor); other values as they are."""
    return v.hits.sum() if v.__class__ is Count else v


class _Sink:
    """1-d result tensors and the (row, column) each of their elements goes to; :meth:`write` copies them to the
    host: one concatenation and one transfer per accelerator (float64 where the device has it), each result read
    as it is on the CPU."""

    def __init__(self, torch):
        self.torch = torch
        self.by_device: dict[Any, tuple[list, list, list]] = {}

    def add(self, values, rows: list, cols: list) -> None:
        ts, rs, cs = self.by_device.setdefault(values.device, ([], [], []))
        ts.append(values)
        rs.extend(rows)
        cs.extend(cols)

    def write(self) -> None:
        torch = self.torch
        for device, (ts, rs, cs) in self.by_device.items():
            if device.type == "cpu":  # no transfer to save: read each result as it is (fewer ops)
                flat = [v for t in ts for v in t.tolist()]
            else:
                wide = torch.float64 if device.type == "cuda" else torch.float32
                flat = (ts[0].to(wide) if len(ts) == 1 else torch.cat([t.to(wide) for t in ts])).cpu().tolist()
            for r, c, v in zip(rs, cs, flat):
                r[c] = float(v)


def _groups(keys: list) -> list[list[int]]:
    """Indices of equal keys, in order of first appearance."""
    if all(k == keys[0] for k in keys):
        return [list(range(len(keys)))]
    out: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return list(out.values())


def _norms(parts: list, rows: list, cols: list, sink: _Sink, torch) -> None:
    """The global norm of each step from its per-tensor norms: one stack and one norm per shape/device/dtype."""
    tensor_t = torch.Tensor
    keys = []
    for p in parts:
        first = p if p.__class__ is tensor_t else p[0]
        keys.append((p.__class__ is tensor_t, len(p), first.device, first.dtype))
    for idx in _groups(keys):
        is_vec, n, device, _ = keys[idx[0]]
        if is_vec:
            mat = torch.stack([parts[i] for i in idx])
        else:
            mat = torch.stack([t for i in idx for t in parts[i]]).view(len(idx), n)
        wide = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
        sink.add(torch.linalg.vector_norm(mat, dim=1, dtype=wide), [rows[i] for i in idx], [cols[i] for i in idx])


def _counts(hits: list, rows: list, cols: list, sink: _Sink, torch) -> None:
    """The number of hits of each step: one stack and one sum per batch size and device."""
    for idx in _groups([(h.shape[0], h.device) for h in hits]):
        sink.add(torch.stack([hits[i] for i in idx]).sum(1), [rows[i] for i in idx], [cols[i] for i in idx])


def _scalars(values: list, rows: list, cols: list, sink: _Sink, torch) -> None:
    """0-d tensors (losses, norms, extra values): one stack for all of them (dtypes promote), or one per device
    when they live on several."""
    try:
        sink.add(torch.stack(values), rows, cols)
        return
    except RuntimeError:  # tensors on different devices
        pass
    for idx in _groups([v.device for v in values]):
        sink.add(torch.stack([values[i] for i in idx]), [rows[i] for i in idx], [cols[i] for i in idx])


_NUMBERS = {float, int}
_PLAIN = {float, int, type(None)}


def _column(col: list):
    """A float64 array of a column, masked where a step has no value (null in the Parquet file): None, and what
    :meth:`RunWriter.step` would not record (a bool, a non-number)."""
    kinds = set(map(type, col))
    if kinds <= _NUMBERS:  # the fast way: plain numbers only
        return np.asarray(col, dtype=np.float64)
    # numbers and gaps (a sampled column) need no per-value conversion
    vals = col if kinds <= _PLAIN else [_scalar(v) for v in col]
    mask = np.fromiter((v is None for v in vals), dtype=bool, count=len(vals))
    data = np.fromiter((0.0 if v is None else v for v in vals), dtype=np.float64, count=len(vals))
    return np.ma.masked_array(data, mask=mask)


class StepBuffer:
    """Rows of values per step (tensors until the next drain) and the per-epoch means drawn from them.

    The recorder's common per-step path (a plain loop: one optimizer step, one loss) builds no row: it appends the
    step to ``marks`` and puts the loss in ``losses``, and the drain turns those *lanes* into rows, the epoch of each
    step taken from ``bounds``. On a 0.13 ms micro-step the per-step dict and its lookups cost several percent of
    the step; a list append and a dict store cost a fraction of that. Everything rarer (a changed LR, a sampled
    norm or accuracy, extra values, several losses in one step) goes to ``rows`` directly."""

    def __init__(self, writer: RunWriter, flush_every: int | None, epoch: int = 0, first_step: int = 0):
        self.writer = writer
        # None: adaptive, a drain about every FLUSH_PERIOD seconds of training (re-measured at each drain)
        self.adaptive = flush_every is None
        self.flush_every = FLUSH_FIRST if flush_every is None else flush_every
        self._since = (time.perf_counter(), first_step)  # (time, step) of the last drain
        self.step_time: float | None = None  # seconds per step between the last two drains
        self.epoch = epoch
        self.rows: dict[int, dict[str, Any]] = {}
        self.marks: list[int] = []  # steps taken since the last drain (the common path's rows, still to be built)
        self.losses: dict[int, Any] = {}  # step -> its loss (a float, or a tensor off the CPU), common path
        # (first step, epoch) in step order: a lane step's epoch is that of the last bound at or below it
        self.bounds: list[tuple[int, int]] = [(first_step, epoch)]
        # per epoch: the per-step losses / accuracies drained so far (summed at the epoch's end, in step order, as
        # one ``sum``) and the last LR with its step
        self.agg: dict[int, dict[str, Any]] = {}
        # hyper-parameter columns (LR, momentum, ...) are put in a row only when their value changed: per column,
        # the last float recorded (the recorder's) and the last value written (the drain's, to fill the steps between)
        self.hyper: dict[str, float] = {}
        self.hyper_written: dict[str, Any] = {}
        # ended epochs waiting for their last steps to be drained: (epoch, values, fallback, label)
        self.closing: list[tuple[int, dict, dict, int]] = []

    def row(self, step: int) -> dict[str, Any]:
        """The row of ``step``, with its lane loss moved in (a caller may add a second loss to it)."""
        row = self.rows.get(step)
        if row is None:
            row = self.rows[step] = {"epoch": self.epoch}
            if len(self.rows) > self.flush_every:
                self.drain()
        if self.losses:
            loss = self.losses.pop(step, None)
            if loss is not None:
                _add_loss(row, loss)
        return row

    def start_epoch(self, epoch: int, first_step: int) -> None:
        """Steps from ``first_step`` on belong to ``epoch``."""
        self.epoch = epoch
        bounds = self.bounds
        if bounds[-1][0] == first_step:  # an epoch without steps: its bound is replaced
            bounds[-1] = (first_step, epoch)
        else:
            bounds.append((first_step, epoch))

    def pending(self, epoch: int) -> bool:
        """Whether a step of ``epoch`` is still in the buffer."""
        if any(r["epoch"] == epoch for r in self.rows.values()):
            return True
        # the lanes hold steps in increasing order: their first and last steps bound them
        ends = self.marks[:1] + self.marks[-1:]
        if self.losses:
            ends += [next(iter(self.losses)), next(reversed(self.losses))]
        if not ends:
            return False
        lo, hi = min(ends), max(ends)
        bounds = self.bounds
        i = max(bisect.bisect_right(bounds, (lo, math.inf)) - 1, 0)
        return any(e == epoch for b, e in bounds[i:] if b <= hi)

    def drain(self, everything: bool = False) -> None:
        """Tensors -> floats -> one block of columns for the writer (all but the newest step, which may still
        receive values)."""
        rows, marks, losses = self.rows, self.marks, self.losses
        if not (rows or marks or losses):
            self._emit()
            return
        if self.writer.broken:  # nothing can be written any more: do not grow in memory
            rows.clear()
            marks.clear()
            losses.clear()
            self.closing.clear()
            return
        for k in rows.keys() & losses.keys():  # a step with a lane loss and a row (a second loss, say): merged
            _add_loss(rows[k], losses.pop(k))
        keys = sorted(set(marks).union(losses, rows))
        if not everything:
            keys = keys[:-1]  # the newest step may still receive values
        n = len(keys)
        if not n:
            self._emit()
            return
        last = keys[-1]
        if not everything:  # a drain of a full buffer: the steps since the last one tell the step time
            self._adapt(last)
        # the lanes -> columns (lists with None where a step has no value), without a row per step
        cols: dict[str, list] = {"epoch": self._epochs_of(keys)}
        if losses:
            pop = losses.pop
            cols["loss"] = [pop(k, None) for k in keys]
        if marks:
            if marks[-1] <= last:
                marks.clear()
            else:
                marks[:] = [m for m in marks if m > last]
        # the rows of the rarer values, into the same columns
        for k in [k for k in rows if k <= last]:
            i = bisect.bisect_left(keys, k)
            for c, v in rows.pop(k).items():
                col = cols.get(c)
                if col is None:
                    col = cols[c] = [None] * n
                col[i] = v
        self._drop_bounds(last + 1)  # every step still buffered comes after ``last``
        self._fill_hyper(cols)
        self._to_host(cols)
        self._write(keys, cols)
        self._emit()

    def _adapt(self, step: int) -> None:
        """The step time, and (adaptive) about FLUSH_PERIOD seconds of steps between drains: a drain has a fixed cost
        (a few vectorised ops, an Arrow table) that 200 micro-steps of 0.13 ms would pay every 27 ms; a 1 s step,
        conversely, should not wait 200 s on the device before a crash can lose it."""
        now = time.perf_counter()
        t0, s0 = self._since
        self._since = (now, step)
        if step > s0:
            self.step_time = (now - t0) / (step - s0)
            if self.adaptive:
                self.flush_every = int(max(FLUSH_MIN, min(FLUSH_MAX, round(FLUSH_PERIOD / max(self.step_time, 1e-9)))))

    def _epochs_of(self, keys: list[int]) -> list:
        """The epoch of each step of ``keys`` (sorted): the epoch of the last bound at or below it (the first
        bound's for steps below it, numbered so explicitly)."""
        bounds = self.bounds
        out: list = []
        lo = 0
        for i, (_, e) in enumerate(bounds):
            hi = bisect.bisect_left(keys, bounds[i + 1][0], lo) if i + 1 < len(bounds) else len(keys)
            out.extend([e] * (hi - lo))
            lo = hi
        return out

    def _drop_bounds(self, oldest: int) -> None:
        """Forget the bounds no step from ``oldest`` on can fall under (the last one at or below it stays)."""
        bounds = self.bounds
        if len(bounds) > 1:
            i = bisect.bisect_right(bounds, (oldest, math.inf)) - 1
            if i > 0:
                del bounds[:i]

    def _fill_hyper(self, cols: dict[str, list]) -> None:
        """Hyper-parameter columns hold a value only where it changed: carry each forward over the steps between
        (from the previous drain too). Steps before a column's first value stay empty."""
        written = self.hyper_written
        for c in self.hyper.keys() | written.keys():
            col = cols.get(c)
            prev = written.get(c)
            if col is None:
                if prev is not None:
                    cols[c] = [prev] * len(cols["epoch"])
                continue
            for i, v in enumerate(col):
                if v is None:
                    col[i] = prev
                else:
                    prev = v
            if prev is not None:
                written[c] = prev

    @staticmethod
    def _to_host(cols: dict[str, list]) -> None:
        """Replace every tensor and deferred cell of ``cols`` by a float, with a few ops for all of them."""
        torch = _t()
        tensor_t = torch.Tensor
        nr, nc, nv = [], [], []  # NormParts: column lists, indices, per-tensor norms
        cr, cc, cv = [], [], []  # Count
        pr, pc, pv = [], [], []  # plain tensors
        tensors_or_none = {tensor_t, type(None)}
        for col in cols.values():
            kinds = set(map(type, col))
            if kinds <= _PLAIN:  # numbers only (LR, momentum, epoch): nothing to copy
                continue
            if kinds <= tensors_or_none and all(v.dim() == 0 for v in col if v is not None):
                # a column of 0-d tensors (the loss): taken whole, without a look at each cell's class
                for i, v in enumerate(col):
                    if v is not None:
                        pr.append(col)
                        pc.append(i)
                        pv.append(v)
                continue
            for i, v in enumerate(col):
                cls = v.__class__
                if cls in _PLAIN:
                    continue
                if cls is NormParts:
                    nr.append(col)
                    nc.append(i)
                    nv.append(v.parts)
                elif cls is Count:
                    cr.append(col)
                    cc.append(i)
                    cv.append(v.hits)
                elif isinstance(v, tensor_t):
                    pr.append(col)
                    pc.append(i)
                    pv.append(v if v.dim() == 0 else v.reshape(-1)[0])
        if not (nv or cv or pv):
            return
        sink = _Sink(torch)
        if nv:
            _norms(nv, nr, nc, sink, torch)
        if cv:
            _counts(cv, cr, cc, sink, torch)
        if pv:
            _scalars(pv, pr, pc, sink, torch)
        sink.write()

    def _write(self, keys: list[int], cols: dict[str, list]) -> None:
        """Per-step normalisations, the epoch aggregates, then one ``RunWriter.steps`` call."""
        _normalise(cols)
        self._account(keys, cols, range(len(keys)))
        block: dict[str, Any] = {"step": np.asarray(keys, dtype=np.float64)}
        for c, col in cols.items():
            block[c] = _column(col)
        self.writer.steps(block)

    def _account(self, keys: list[int], cols: dict[str, list], idx) -> None:
        """Add the normalised values at ``idx`` of the columns to their epochs' aggregates."""
        loss, acc, lr, epochs = cols.get("loss"), cols.get("accuracy"), cols.get("lr"), cols["epoch"]
        agg_all = self.agg
        first = epochs[idx[0]]
        if all(epochs[i] == first for i in idx):  # the common case: one epoch per drain
            spans = {first: idx}
        else:
            spans = {}
            for i in idx:
                spans.setdefault(epochs[i], []).append(i)
        for e, ix in spans.items():
            agg = agg_all.get(e)
            if agg is None:
                agg = agg_all[e] = {"loss": [], "n_loss": 0, "accuracy": [], "n_accuracy": 0, "rows": 0}
            agg["rows"] += len(ix)
            for name, col in (("loss", loss), ("accuracy", acc)):
                if col is not None:
                    vals = agg[name]
                    vals.extend(col[i] for i in ix if col[i] is not None)
                    if len(vals) > _KEEP:  # an epoch that never ends: keep a partial sum, not every value
                        agg["n_" + name] += len(vals) - 1
                        vals[:] = [sum(vals)]
            if lr is not None:
                for i in reversed(ix):
                    if lr[i] is not None:
                        if keys[i] >= agg.get("lr_step", -1):
                            agg["lr"], agg["lr_step"] = lr[i], keys[i]
                        break

    def close_epoch(self, epoch: int, values: dict[str, Any], fallback: dict[str, Any], label: int | None = None) -> None:
        """The epoch ``epoch`` has ended: its row (mean batch loss / accuracy, the last LR recorded in it, then
        ``values``; ``fallback`` for what the steps did not give) is handed to the writer, as epoch ``label``, once its
        last buffered step has been drained. Copying those steps to the host now would cost a transfer per epoch:
        with epochs of a few milliseconds, more than everything else the recorder does."""
        self.closing.append((epoch, values, fallback, epoch if label is None else label))
        if not (self.marks or self.losses):  # else the epoch's last steps are in the lanes: the drain emits it
            self._emit()

    def _emit(self) -> None:
        """Rows of the closed epochs whose steps have all been drained, in order."""
        closing = self.closing
        while closing:
            epoch, values, fallback, label = closing[0]
            if self.pending(epoch):
                return
            closing.pop(0)
            row = self._means(epoch)
            for k, v in fallback.items():
                if k not in row and v is not None:
                    row[k] = v
            row.update(values)
            self.writer.epoch(label, **row)

    def _means(self, epoch: int) -> dict[str, float]:
        """Mean batch loss / accuracy of ``epoch`` and the last LR recorded in it (forgotten once read).

        A mean is given only when every recorded step of the epoch has the value: the mean of a sampled few
        (the default tier samples the accuracy of micro-steps) would swing from epoch to epoch with the sample and
        show jumps that never happened; the sampled values stay in the step rows."""
        agg = self.agg.pop(epoch, None) or {}
        row: dict[str, Any] = {}
        for col in ("loss", "accuracy"):
            vals = agg.get(col)
            if vals and len(vals) + agg["n_" + col] >= agg["rows"]:
                row[col] = sum(vals) / (len(vals) + agg["n_" + col])
        if "lr" in agg:
            row["lr"] = agg["lr"]
        return row


# values kept per epoch and column before they are summed into one
_KEEP = 1 << 16
# the adaptive drain interval: FLUSH_FIRST steps until the step time is known, then about FLUSH_PERIOD seconds of
# steps, between FLUSH_MIN (no device synchronisation more often than that) and FLUSH_MAX (memory) steps
FLUSH_FIRST, FLUSH_PERIOD, FLUSH_MIN, FLUSH_MAX = 64, 0.5, 16, 2048


def _add_loss(row: dict, loss) -> None:
    """A (micro-)batch loss into ``row``: several in one step are summed and counted (their mean at the drain)."""
    prev = row.get("loss")
    if prev is None:
        row["loss"] = loss
    else:
        row["loss"] = prev + loss
        row["_n_loss"] = row.get("_n_loss", 1) + 1


def _normalise(cols: dict[str, list]) -> None:
    """Per-step normalisations, in place: the mean of several losses summed in one step, hits -> accuracy (the
    ``_n_loss`` and ``_accuracy_n`` columns are removed)."""
    n_loss = cols.pop("_n_loss", None)
    n_acc = cols.pop("_accuracy_n", None)
    loss, acc = cols.get("loss"), cols.get("accuracy")
    if n_loss is not None and loss is not None:  # several losses summed in one step: their mean
        for i, m in enumerate(n_loss):
            if m is not None and m > 1 and loss[i] is not None:
                loss[i] = loss[i] / m
    if n_acc is not None and acc is not None:  # hits counted -> accuracy
        for i, m in enumerate(n_acc):
            if m is not None and acc[i] is not None:
                acc[i] = acc[i] / m if m else math.nan

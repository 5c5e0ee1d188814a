"""Keras 3 recorder: ``WhyspikeCallback`` writes the run directory that ``whyspike diagnose`` reads.

One line in a training script::

    from whyspike.record.keras import WhyspikeCallback
    model.fit(x, y, epochs=30, callbacks=[WhyspikeCallback()])     # -> whyspike-runs/<script>-<time>/

It works on the torch, jax and tensorflow backends (and so with ``from tensorflow import keras`` code on Keras 3):
everything goes through ``keras.ops`` and the callback API. Put it last in ``callbacks`` so that it sees the learning
rate other callbacks set.

What it records, and what it costs
----------------------------------
**default tier** (``tier="default"``, cheap)

- per step: ``lr``, the learning rate the optimizer applied at that step (the schedule evaluated at the optimizer's
  iteration counter *before* the step: after the step the counter is already incremented); ``momentum``,
  ``beta_1``, ``beta_2``, ``weight_decay`` when the optimizer has them; the true per-batch ``loss``, ``accuracy``
  and every other mean-type metric. Keras reports a running mean over the epoch; the per-batch value is recovered
  from the metric's running sums, batch-size weighted (the last batch may be smaller):
  ``(total_k - total_{k-1}) / (count_k - count_{k-1})``, i.e. ``(n_k·mean_k - n_{k-1}·mean_{k-1}) / batch``.
  Cost: a few tiny device-side copies per step; they are converted to numbers together every
  ``FLUSH_STEPS`` steps and at epoch end, so there is no device synchronisation per step. Non-mean metrics (AUC,
  precision, ...) cannot be recovered per batch and are recorded per epoch only.
- per epoch: everything in Keras' ``logs`` (train metrics as Keras reports them — running means — and ``val_*``),
  ``lr`` at the end of the epoch (the LR the next step will use, as Keras' TensorBoard callback logs it).
- once (``meta.json``): optimizer class and config, the schedule's ``get_config()`` (``lr_schedule``), steps per
  epoch, batch size, samples per epoch, validation-set size, epochs, model facts (BatchNorm / dropout present,
  parameter count), keras / backend / framework versions, the global seed when one was set.
- checkpoints: model weights and optimizer variables at each epoch end as ``.npz`` (no pickle), the last
  ``checkpoints`` kept plus those around a detected jump. Cost: one copy of the weights and optimizer state to disk
  per epoch (``checkpoints=0`` turns it off).

**detailed tier** (``tier="detailed"``, opt-in; needs the data: ``train_data=(x, y)`` and ``validation_data=(x, y)``,
captured automatically under ``whyspike run``)

- ``train_eval_*``: the training metrics in eval mode with the end-of-epoch weights, on a fixed sample of
  ``TRAIN_EVAL_SIZE`` training examples — exposes Keras' running-average artifact. Cost: one forward pass over
  that sample per epoch.
- ``val_precise_bn_*``: validation metrics after recomputing BatchNorm statistics on ``PRECISE_BN_BATCHES``
  training batches with frozen weights (PreciseBN), the model's own statistics restored afterwards. Only when the
  model has BatchNormalization (otherwise said once). Cost: up to 50 forward passes plus one validation pass.
- ``examples/val-eNNNN.npy``: per-example correctness on the validation set (McNemar tests between epochs). Cost:
  one prediction pass over the validation set.
- ``weight_norm`` and ``weight_norm/<layer>``: L2 norms of the trainable weights. Cost: negligible.
- ``grad_norm`` per step, the global gradient norm before clipping: only on the torch backend, where the gradients
  of the last step are still attached to the weights when the next step begins (read without a device sync). The
  jax and tensorflow backends compute gradients inside a compiled function a callback cannot see, so it is not
  recorded there. With a LossScaleOptimizer it is the norm of the scaled gradients.

The recorder never raises into training: an error in one of its parts is said once on stderr and that part stops;
a full disk or an unwritable directory stops writing (see :mod:`whyspike.record.store`), training goes on.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UsageError, require
from .live import LiveExplainer
from .store import RunWriter

TIERS = ("default", "detailed")
FLUSH_STEPS = 1000  # per-step device values are converted to numbers (one sync) at most this many steps apart
TRAIN_EVAL_SIZE = 2048  # training examples re-evaluated in eval mode at each epoch end (detailed tier)
PRECISE_BN_BATCHES = 50  # training batches used to recompute BatchNorm statistics (detailed tier)
MAX_LAYER_NORMS = 32  # per-layer weight norms recorded for at most this many layers
HYPER = ("momentum", "beta_1", "beta_2", "weight_decay")  # optimizer attributes recorded per step when numeric


# -- names and places


def _script_name() -> str | None:
    arg0 = sys.argv[0] if sys.argv else ""
    return Path(arg0).stem if arg0.endswith(".py") else None


def default_run_dir(name: str | None = None, root: str | os.PathLike = "whyspike-runs") -> Path:
    """``root/<script-or-name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when that exists already).

        >>> default_run_dir("mlp", root="runs").parent.as_posix()
        'runs'
    """
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", _script_name() or name or "keras").strip("._") or "keras"
    base = Path(root) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 2
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


# -- failures: said once per part, never raised into training


# training examples kept in the run directory for landscape probes (a few MB at most for small inputs)
PROBE_SAMPLE = 1024


def _guarded(part: str):
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            if self._off or part in self._broken:
                return None
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # the recorder must never break training
                self._break(part, exc)
                return None

        return wrapper

    return deco


class _Stash:
    """What was read at the start of one train step (device tensors until ``converted``)."""

    __slots__ = ("call", "epoch", "step", "wall", "tensors", "hyper", "numbers")

    def __init__(self, call: int, epoch: int, step: int, wall: float, tensors: list, hyper: dict):
        self.call, self.epoch, self.step, self.wall = call, epoch, step, wall
        self.tensors, self.hyper = tensors, hyper
        self.numbers: list[float | None] | None = None


class _Recorder:
    """The callback's behaviour; combined with ``keras.callbacks.Callback`` on first use (keras is imported lazily)."""

    def __init__(self, run_dir: str | os.PathLike | None = None, tier: str = "default", every: int = 1,
                 checkpoints: int = 3, live: bool = True, validation_data=None, *, train_data=None,
                 batch_size: int | None = None, verdict: bool = True, out=None, live_budget: float | None = None):
        if tier not in TIERS:
            raise UsageError(f"WhyspikeCallback(tier={tier!r}): unknown tier — use one of {', '.join(TIERS)}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise UsageError(f"WhyspikeCallback(every={every!r}): record every N steps needs an integer N >= 1")
        if not isinstance(checkpoints, int) or isinstance(checkpoints, bool) or checkpoints < 0:
            raise UsageError(f"WhyspikeCallback(checkpoints={checkpoints!r}): the number of epoch checkpoints to "
                             "keep must be an integer >= 0 (0 turns checkpoints off)")
        super().__init__()
        self._run_dir = Path(run_dir) if run_dir is not None else None
        self.tier, self.every, self.checkpoints = tier, every, checkpoints
        self.live_lines, self.verdict = live, verdict
        self.validation_data, self.train_data, self.batch_size = validation_data, train_data, batch_size
        self._out = out
        self._live_budget = live_budget
        self.writer: RunWriter | None = None
        self.live: LiveExplainer | None = None
        self.diagnosis = None
        self._off = False
        self._broken: set[str] = set()
        self._said: set[str] = set()
        self._closed = True

    # -- public
    @property
    def run_dir(self) -> Path | None:
        """Where this callback records (None before training starts)."""
        return self.writer.path if self.writer is not None else self._run_dir

    def close(self) -> None:
        """Write out what is still buffered; safe to call more than once and after a crash in ``fit``."""
        if self._closed or self.writer is None:
            return
        self._closed = True
        if self._epoch_open and "steps" not in self._broken:
            self._guarded_call("steps", self._end_snapshot)
        self._drain(final=True)
        self._guarded_call("writer", self.writer.close)

    # -- failures
    def _break(self, part: str, exc: BaseException) -> None:
        self._broken.add(part)
        if part == "setup":
            self._off = True
        self._say(f"recording error in {part} ({type(exc).__name__}: {exc}); training continues without it", part)

    def _say(self, message: str, key: str | None = None) -> None:
        key = key or message
        if key in self._said:
            return
        self._said.add(key)
        print(f"whyspike: {message}", file=sys.stderr, flush=True)
        if self.writer is not None and key != "writer":
            notes = list(self.writer.meta.get("notes", []))
            notes.append(message)
            self.writer.write_meta(notes=notes)

    # -- training begins: the run directory, the facts, the variables to read
    @_guarded("setup")
    def on_train_begin(self, logs=None):
        import keras

        self._k, self._ops = keras, keras.ops
        self._backend = keras.backend.backend()
        # resolved once: on jax every `self.model` access forces a full state sync (costly per step)
        self._m = model = self.model
        self.writer = RunWriter(self._run_dir or default_run_dir(model.name), keep_checkpoints=max(1, self.checkpoints))
        self._closed = False
        budget = {} if self._live_budget is None else {"budget": self._live_budget}
        self.live = LiveExplainer(self.writer, out=self._out, quiet=not self.live_lines, **budget)
        opt = model.optimizer
        self._opt = opt
        lr = getattr(opt, "_learning_rate", None)
        self._schedule = lr if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else None
        self._lr_var = lr if isinstance(lr, keras.Variable) else None
        self._lr_fn = lr if self._schedule is None and self._lr_var is None and callable(lr) else None
        self._means = _mean_metrics(model, keras)
        self._jax_index = _jax_index(model) if self._backend == "jax" else {}
        self._layers = _all_layers(model)
        self._stack, self._copy = _fast_ops(self._backend, keras.ops)
        self._grads = self.tier == "detailed" and self._backend == "torch"
        self._stash: list[_Stash] = []
        self._pending_grad: list[tuple[int, Any]] = []
        self._calls = 0
        self._epoch = 0
        self._epoch_open = False
        self._want_next = False
        self._end_count: float | None = None
        self._step = int(self._num(opt.iterations) or 0) if opt is not None else 0
        self._prepare_data()
        self.writer.write_meta(**self._meta())
        self._store_probe_material()

    @_guarded("the model and data sample for landscape probes")
    def _store_probe_material(self) -> None:
        """``model.json`` (the architecture, ``model.to_json()``) and ``probe_data/x.npy``, ``y.npy`` (the first
        PROBE_SAMPLE training examples, when fit was given arrays): with the checkpoints, what ``whyspike
        landscape RUN`` needs to rebuild the model and measure it without the user's code."""
        from .store import _atomic_write_bytes

        folder = self.writer.path
        if self.writer.broken is not None:
            return
        try:
            _atomic_write_bytes(folder / "model.json", self._m.to_json().encode())
        except (TypeError, ValueError, NotImplementedError):  # a subclassed model without get_config
            pass
        xy = _split_xy(self.train_data) if self.train_data is not None else None
        if xy is None or isinstance(xy[0], (dict, list, tuple)) or isinstance(xy[1], (dict, list, tuple)):
            return
        n = min(PROBE_SAMPLE, _length(xy[0]))
        x, y = np.asarray(xy[0][:n]), np.asarray(xy[1][:n])
        if x.dtype == object or y.dtype == object:
            return
        (folder / "probe_data").mkdir(exist_ok=True)
        for name, arr in (("x", x), ("y", y)):
            path = folder / "probe_data" / f"{name}.npy"
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, path)

    def _meta(self) -> dict:
        keras, model, opt = self._k, self.model, self._opt
        meta: dict[str, Any] = {"recorder": {"name": "keras", "tier": self.tier, "every": self.every}}
        if opt is not None:
            meta["optimizer"] = type(opt).__name__
            meta["optimizer_config"] = _jsonable(opt.get_config())
            if self._schedule is not None:
                cfg = _jsonable(self._schedule.get_config())
                meta["lr_schedule"] = {"class_name": type(self._schedule).__name__, "config": cfg}
                if isinstance(cfg.get("initial_learning_rate"), (int, float)):
                    meta["learning_rate"] = float(cfg["initial_learning_rate"])
            else:
                meta["learning_rate"] = _f32(self._num(self._current_lr()))
            for k in ("momentum", "weight_decay"):
                v = getattr(opt, k, None)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    meta[k] = float(v)
        params = self.params or {}
        meta["steps_per_epoch"] = params.get("steps")
        meta["epochs"] = params.get("epochs")
        if self.batch_size:
            meta["batch_size"] = int(self.batch_size)
        if self._train is not None:
            meta["train_size"] = int(self._train_n)
        if self._val is not None:
            meta["eval_size"] = int(self._val_n)
        names = [type(layer).__name__ for layer in self._layers]
        meta["has_batchnorm"] = any("BatchNorm" in n for n in names)
        meta["has_dropout"] = any("Dropout" in n for n in names)
        meta["model"] = {"name": model.name, "class": type(model).__name__, "n_params": int(model.count_params()),
                         "n_trainable": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))}
        backend_mod = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}.get(self._backend)
        meta["framework"] = {"keras": keras.__version__, "backend": self._backend,
                             "backend_version": _version(backend_mod), "numpy": np.__version__,
                             "python": platform.python_version()}
        seeds = {"keras_global_seed": _keras_seed(), "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED")}
        meta["seeds"] = {k: v for k, v in seeds.items() if v is not None}
        meta["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return meta

    # -- per step: tiny device-side copies, converted in bulk later
    @_guarded("steps")
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._epoch_open = True
        self._want_next = False
        self._epoch_step0 = self._step

    @_guarded("steps")
    def on_train_batch_begin(self, batch, logs=None):
        call = self._calls
        self._calls += 1
        want_next = self._want_next
        step = self._epoch_step0 + int(batch)
        self._step = step
        if self._grads and self._stash and self._stash[-1].call == call - 1:
            self._pending_grad.append((self._stash[-1].step, _torch_grad_norm(self._m)))
        record, self._want_next = step % self.every == 0, step % self.every == 0
        if not (record or want_next):  # a recorded step needs the sums read at the start of the next one
            return
        tensors = self._read_state(with_lr=True)
        hyper = {}
        for k in HYPER:
            v = getattr(self._opt, k, None)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                hyper[k] = float(v)
        self._stash.append(_Stash(call, self._epoch, step, time.time(), tensors, hyper))
        if len(self._stash) > FLUSH_STEPS:
            self._drain(final=False)

    def _read_state(self, with_lr: bool) -> list:
        """[iterations, LR from a callable, stack(LR variable, total_0, count_0, total_1, ...)] as backend tensors:
        two small device ops per step (a copy and a stack), no device sync."""
        opt, ops = self._opt, self._ops
        iters = self._live(opt.iterations) if opt is not None else None
        lr_fn = ops.convert_to_tensor(self._lr_fn()) if with_lr and self._lr_fn is not None else None
        variables = ([self._lr_var] if self._lr_var is not None else []) + \
            [v for _, total, count in self._means for v in (total, count)]
        values = [self._live(v) for v in variables]
        stacked = self._stack(values) if values and all(v is not None for v in values) else None
        return [None if iters is None else self._copy(iters), lr_fn, stacked]

    def _live(self, var):
        """A variable's current value as a tensor (not a copy), without a device sync. Mid-epoch the jax backend keeps
        the state outside the variables (``model._jax_state``): read it there, before the next step donates it."""
        model = self._m
        if self._backend == "jax" and not getattr(model, "_jax_state_synced", True):
            state = getattr(model, "_jax_state", None) or {}
            where = self._jax_index.get(id(var))
            values = state.get(where[0]) if where else None
            return values[where[1]] if values else None
        return var.value

    @_guarded("steps")
    def on_test_begin(self, logs=None):
        # validation inside fit resets the metrics Keras shares between train and eval: read the last step's sums
        if self._epoch_open:
            self._end_snapshot()

    def _end_snapshot(self) -> None:
        self._epoch_open = False
        if self._grads and self._stash and self._stash[-1].call == self._calls - 1:
            self._pending_grad.append((self._stash[-1].step, _torch_grad_norm(self._m)))
        self._stash.append(_Stash(self._calls, self._epoch, self._step + 1, time.time(),
                                  self._read_state(with_lr=False), {}))
        self._calls += 1
        self._step += 1

    def _convert(self, entries: list[_Stash]) -> None:
        """Numbers for the stashed tensors: one stack and one transfer per field for all entries."""
        todo = [e for e in entries if e.numbers is None]
        if not todo:
            return
        width = 2 + 2 * len(self._means)
        lr_in_stack = self._lr_var is not None
        for e in todo:
            e.numbers = [None] * width
        for j in range(3):
            have = [e for e in todo if e.tensors[j] is not None]
            if not have:
                continue
            values = self._np(self._ops.stack([e.tensors[j] for e in have])).astype(float).reshape(len(have), -1)
            for e, row in zip(have, values):
                if j < 2:
                    e.numbers[j] = float(row[0])
                else:
                    if lr_in_stack:
                        e.numbers[1] = float(row[0])
                    e.numbers[2:] = [float(v) for v in row[int(lr_in_stack):]]
        for e in todo:
            e.tensors = []

    @_guarded("steps")
    def _drain(self, final: bool) -> None:
        """Turn stashed steps into rows: a step's metrics need the sums read at the start of the next step."""
        entries = self._stash
        if len(entries) < 2:
            if final:
                self._stash = []
            return
        self._convert(entries)
        lr = self._step_lrs(entries)
        grads = self._grad_values()
        first_sizes = []
        for i in range(len(entries) - 1):
            a, b = entries[i], entries[i + 1]
            if b.call != a.call + 1 or b.epoch != a.epoch or a.step % self.every:
                continue
            row: dict[str, Any] = {"epoch": a.epoch, "wall_time": a.wall, "lr": lr[i]}
            row.update(a.hyper)
            for m, (name, _, _) in enumerate(self._means):
                t0, c0, t1, c1 = a.numbers[2 + 2 * m], a.numbers[3 + 2 * m], b.numbers[2 + 2 * m], b.numbers[3 + 2 * m]
                if None not in (t0, c0, t1, c1) and c1 - c0 > 0:
                    row[name] = (t1 - t0) / (c1 - c0)
                    if m == 0:  # the loss tracker counts examples: the batch's size (the last one may be smaller)
                        row["samples"] = c1 - c0
                        if len(first_sizes) < 2:
                            first_sizes.append(c1 - c0)
            if a.step in grads:
                row["grad_norm"] = grads.pop(a.step)
            self.writer.step(a.step, **row)
        if first_sizes and "batch_size" not in self.writer.meta:
            self.writer.write_meta(batch_size=int(round(first_sizes[0])))
        last = entries[-1].numbers
        if final and self._means and self._means[0][0] == "loss" and last and len(last) > 3 and last[3]:
            self._end_count = last[3]
        self._stash = [] if final else entries[-1:]

    def _step_lrs(self, entries: list[_Stash]) -> list[float | None]:
        if self._schedule is None:
            return [e.numbers[1] if len(e.numbers) > 1 else None for e in entries]
        iters = [e.numbers[0] for e in entries]
        known = [i for i, v in enumerate(iters) if v is not None]
        out: list[float | None] = [None] * len(entries)
        if known:
            for i, v in zip(known, self._schedule_at(np.array([iters[i] for i in known], dtype=np.int64))):
                out[i] = v
        return out

    def _schedule_at(self, iterations: np.ndarray) -> list[float]:
        """The schedule at each iteration count: vectorized when the schedule allows, one call each otherwise."""
        ops = self._ops
        try:
            v = np.asarray(self._np(self._schedule(ops.convert_to_tensor(iterations))), dtype=float)
            if v.shape == iterations.shape:
                return v.tolist()
        except Exception:
            pass
        return [float(self._np(self._schedule(int(i)))) for i in iterations]

    def _grad_values(self) -> dict[int, float]:
        pending, self._pending_grad = self._pending_grad, []
        pending = [(s, t) for s, t in pending if t is not None]
        if not pending:
            return {}
        values = self._np(self._ops.stack([t for _, t in pending]))
        return {s: float(v) for (s, _), v in zip(pending, np.asarray(values).ravel())}

    # -- per epoch
    def on_epoch_end(self, epoch, logs=None):
        if self._off:
            return
        if self._epoch_open:
            self._guarded_call("steps", self._end_snapshot)
        self._drain(final=True)
        self._epoch_row(int(epoch), dict(logs or {}))
        if self.checkpoints:
            self._checkpoint(int(epoch))
        self._live_line()

    def _guarded_call(self, part: str, fn, *args):
        if part in self._broken:
            return None
        try:
            return fn(*args)
        except Exception as exc:
            self._break(part, exc)
            return None

    @_guarded("epochs")
    def _epoch_row(self, epoch: int, logs: dict) -> None:
        row = {k: v for k, v in logs.items() if k not in ("lr", "learning_rate")}
        row["lr"] = self._num(self._current_lr())
        if "samples_per_epoch" not in self.writer.meta or "eval_size" not in self.writer.meta:
            self._epoch_facts(logs)
        if self.tier == "detailed":
            row.update(self._detailed(epoch))
        self.writer.epoch(epoch, **row)

    def _epoch_facts(self, logs: dict) -> None:
        """Samples per epoch (the loss tracker's count after the last train step) and the validation-set size (its
        count after validation, which Keras runs on the same metric objects)."""
        facts: dict[str, int] = {}
        if self._end_count:
            facts["samples_per_epoch"] = int(round(self._end_count))
        if self._means and self._means[0][0] == "loss" and any(k.startswith("val_") for k in logs):
            count = self._num(self._live(self._means[0][2]))
            if count:
                facts["eval_size"] = int(round(count))
        facts = {k: v for k, v in facts.items() if k not in self.writer.meta}
        if facts:
            self.writer.write_meta(**facts)

    def _current_lr(self):
        if self._schedule is not None:
            return self._schedule(self._opt.iterations)
        if self._lr_var is not None:
            return self._lr_var.value
        if self._lr_fn is not None:
            return self._lr_fn()
        return None

    def _np(self, x) -> np.ndarray:
        """A tensor as a numpy array (torch tensors directly: Keras' own path goes through np.array(tensor), which
        warns on numpy 2 with some torch builds)."""
        if self._backend == "torch":
            import torch

            if isinstance(x, torch.Tensor):
                x = x.detach().cpu()
                # a copy: on the CPU .numpy() shares memory with the live variable
                return (x.float() if x.dtype == torch.bfloat16 else x).numpy().copy()
            if hasattr(x, "value") and isinstance(x.value, torch.Tensor):
                return self._np(x.value)
        return np.asarray(self._ops.convert_to_numpy(x))

    def _num(self, value) -> float | None:
        if value is None:
            return None
        try:
            return float(np.asarray(self._np(value)).reshape(-1)[0])
        except Exception:
            return None

    @_guarded("live")
    def _live_line(self) -> None:
        if self.live_lines or self.checkpoints:  # quiet, it still pins the checkpoints around a jump
            self.live.epoch_end()

    def on_train_end(self, logs=None):
        if self._off or self.writer is None:
            return
        self.close()
        if self.verdict and "live" not in self._broken:
            try:
                self.live.quiet = False  # live=False silences the per-epoch lines, not the verdict asked for
                self.diagnosis = self.live.final()
            except Exception as exc:
                self._break("live", exc)

    # -- checkpoints: weights + optimizer variables as .npz, never pickled
    @_guarded("checkpoints")
    def _checkpoint(self, epoch: int) -> None:
        folder = self.writer.checkpoint_dir(epoch)
        if folder is None:
            return
        model = self.model
        opt_vars = list(self._opt.variables) if self._opt is not None else []
        arrays = {name: [_plain(self._np(v.value)) for v in vs]
                  for name, vs in (("model", model.weights), ("optimizer", opt_vars))}
        manifest = {"format": "whyspike-keras-checkpoint-v1", "epoch": epoch, "step": self._step,
                    "backend": self._backend, "keras": self._k.__version__,
                    "model": [{"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype)} for v in model.weights],
                    "optimizer": [{"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype)} for v in opt_vars]}

        def write() -> None:
            for name, arrs in arrays.items():
                with open(folder / f"{name}.npz", "wb") as fh:
                    np.savez(fh, **{f"v{i:05d}": a for i, a in enumerate(arrs)})
            (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))

        self.writer._guard(write)  # an OSError (disk full) stops the writer, said once
        if self.writer.broken is None:
            self.writer.commit_checkpoint(epoch)

    # -- detailed tier
    def _prepare_data(self) -> None:
        self._train = self._val = None
        self._train_n = self._val_n = 0
        if self.train_data is not None:
            xy = _split_xy(self.train_data)
            if xy is not None:
                self._train, self._train_n = xy, _length(xy[0])
        if self.validation_data is not None:
            xy = _split_xy(self.validation_data)
            if xy is not None:
                self._val, self._val_n = xy, _length(xy[0])
        if self.tier != "detailed":
            return
        if self._train is None:
            self._say("detailed tier: no training data (pass train_data=(x, y) of arrays): train_eval_* and "
                      "PreciseBN are not recorded", "no-train-data")
        if self._val is None:
            self._say("detailed tier: no validation data (pass validation_data=(x, y) of arrays): per-example "
                      "correctness and PreciseBN are not recorded", "no-val-data")
        if not any(isinstance(layer, self._k.layers.BatchNormalization) for layer in self._layers):
            self._say("detailed tier: the model has no BatchNormalization layer, so there are no BatchNorm "
                      "statistics to recompute (PreciseBN skipped)", "no-bn")
        self._bs = int(self.batch_size or 32)
        if self._train is not None:
            rng = np.random.default_rng(0)
            n = self._train_n
            self._train_sample = np.sort(rng.choice(n, size=min(n, TRAIN_EVAL_SIZE), replace=False))
            self._bn_order = rng.permutation(n)[: PRECISE_BN_BATCHES * self._bs]

    def _detailed(self, epoch: int) -> dict:
        row: dict[str, float] = {}
        with _rng_preserved(self._backend):  # the extra passes must not change the training's shuffling or dropout
            for part, fn in (("train-mode/eval-mode evaluation", self._train_eval), ("PreciseBN", self._precise_bn),
                             ("per-example correctness", self._examples), ("weight norms", self._weight_norms)):
                got = self._guarded_call(part, fn, epoch)
                if got:
                    row.update(got)
        return row

    def _evaluate(self, x, y) -> dict:
        out = self.model.evaluate(x, y, batch_size=self._bs, verbose=0, return_dict=True)
        return {k: float(v) for k, v in out.items() if _is_number(v)}

    def _train_eval(self, epoch: int) -> dict | None:
        if self._train is None:
            return None
        take = functools.partial(_take, self._train_sample)
        x, y = self._k.tree.map_structure(take, self._train[0]), self._k.tree.map_structure(take, self._train[1])
        return {f"train_eval_{k}": v for k, v in self._evaluate(x, y).items()}

    def _precise_bn(self, epoch: int) -> dict | None:
        bns = [layer for layer in self._layers if isinstance(layer, self._k.layers.BatchNormalization)]
        if not bns or self._train is None or self._val is None:
            return None
        # every non-trainable variable comes back afterwards: the BN statistics, and the dropout seed states the
        # train-mode passes advance (so recording does not change the training's random stream)
        saved = [(v, self._np(v.value)) for v in self.model.non_trainable_variables]
        momenta = [(bn, bn.momentum) for bn in bns]
        try:
            with _no_grad(self._backend):
                for k, start in enumerate(range(0, len(self._bn_order), self._bs)):
                    idx = np.sort(self._bn_order[start:start + self._bs])
                    for bn in bns:
                        bn.momentum = k / (k + 1.0)  # a cumulative average of the batch statistics
                    self.model(self._k.tree.map_structure(functools.partial(_take, idx), self._train[0]),
                               training=True)
            got = self._evaluate(*self._val)
        finally:
            for bn, momentum in momenta:
                bn.momentum = momentum
            for v, value in saved:
                v.assign(value)
        return {f"val_precise_bn_{k}": v for k, v in got.items()}

    def _examples(self, epoch: int) -> None:
        if self._val is None:
            return None
        pred = self.model.predict(self._val[0], batch_size=self._bs, verbose=0)
        correct = _correctness(pred, self._val[1])
        if correct is None:
            self._say("per-example correctness needs class predictions (softmax/sigmoid outputs and class "
                      "labels); this model's outputs are not, so it is not recorded", "no-examples")
            return None
        self.writer.examples(epoch, "val", correct)
        return None

    def _weight_norms(self, epoch: int) -> dict:
        ops = self._ops
        layers = [layer for layer in self.model.layers if layer.trainable_weights][:MAX_LAYER_NORMS]
        weights = list(self.model.trainable_weights)
        if not weights:
            return {}
        squares = [ops.sum(ops.square(ops.cast(w.value, "float32"))) for w in weights]
        per_layer = [ops.sum(ops.stack([ops.sum(ops.square(ops.cast(w.value, "float32")))
                                        for w in layer.trainable_weights])) for layer in layers]
        values = np.asarray(self._np(ops.stack([ops.sum(ops.stack(squares))] + per_layer)), dtype=float)
        row = {"weight_norm": float(np.sqrt(values[0]))}
        row.update({f"weight_norm/{layer.name}": float(np.sqrt(v)) for layer, v in zip(layers, values[1:])})
        return row


# -- helpers (no keras import at module level)


def _fast_ops(backend: str, ops):
    """(stack as float32, copy) for the per-step reads. keras.ops spends ~100 us of Python per call converting its
    inputs; the backend's own functions take a few us, which is what keeps the default tier cheap."""
    if backend == "torch":
        import torch

        return (lambda xs: torch.stack([x.detach().float() for x in xs]), lambda x: x.detach().clone())
    if backend == "jax":
        import jax.numpy as jnp

        return (lambda xs: jnp.stack([jnp.asarray(x, dtype=jnp.float32) for x in xs]), lambda x: jnp.array(x, copy=True))
    if backend == "tensorflow":
        import tensorflow as tf

        return (lambda xs: tf.stack([tf.cast(x, tf.float32) for x in xs]), tf.identity)
    return (lambda xs: ops.stack([ops.cast(x, "float32") for x in xs]), ops.copy)


def _mean_metrics(model, keras) -> list[tuple[str, Any, Any]]:
    """(name, total variable, count variable) of every mean-type metric the model reports, loss first."""
    out, seen, names = [], set(), set()

    def walk(m) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        if isinstance(m, keras.metrics.Mean) and hasattr(m, "total") and hasattr(m, "count"):
            if m.name not in names:
                names.add(m.name)
                out.append((m.name, m.total, m.count))
            return
        for sub in getattr(m, "metrics", None) or []:
            walk(sub)

    for m in model.metrics:
        walk(m)
    out.sort(key=lambda t: t[0] != "loss")
    return out


def _jax_index(model) -> dict[int, tuple[str, int]]:
    index: dict[int, tuple[str, int]] = {}
    groups = (("metrics_variables", model.metrics_variables),
              ("optimizer_variables", model.optimizer.variables if model.optimizer is not None else []),
              ("trainable_variables", model.trainable_variables),
              ("non_trainable_variables", model.non_trainable_variables))
    for key, variables in groups:
        for i, v in enumerate(variables):
            index.setdefault(id(v), (key, i))
    return index


def _all_layers(model) -> list:
    try:
        return list(model._flatten_layers(include_self=False, recursive=True))
    except Exception:
        return list(getattr(model, "layers", []))


def _torch_grad_norm(model):
    """Global L2 norm of the gradients still attached to the weights (torch backend), as a device tensor."""
    import torch

    grads = [g for v in model.trainable_variables if (g := getattr(v.value, "grad", None)) is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


@contextmanager
def _rng_preserved(backend: str):
    """Python's, numpy's and (torch backend) torch's global random states, put back afterwards: the data loaders
    of ``evaluate``/``predict`` draw from them, and the training's shuffling would change."""
    import random

    py, npy = random.getstate(), np.random.get_state()
    torch_states = None
    if backend == "torch":
        import torch

        torch_states = (torch.random.get_rng_state(),
                        torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        if torch_states is not None:
            import torch

            torch.random.set_rng_state(torch_states[0])
            if torch_states[1] is not None:
                torch.cuda.set_rng_state_all(torch_states[1])


def _no_grad(backend: str):
    if backend == "torch":
        import torch

        return torch.no_grad()
    return nullcontext()


def _split_xy(data):
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        x, y = data[0], data[1]
        if _length(x) and _length(y) == _length(x):
            return x, y
    return None


def _length(x) -> int:
    if isinstance(x, dict):
        return _length(next(iter(x.values()))) if x else 0
    if isinstance(x, (tuple, list)) and x and hasattr(x[0], "shape"):
        return _length(x[0])
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape):
        return int(shape[0])
    try:
        return len(x)
    except TypeError:
        return 0


def _take(idx, a):
    return a[idx] if hasattr(a, "shape") else np.asarray(a)[idx]


def _correctness(pred, y) -> np.ndarray | None:
    p = np.asarray(pred)
    t = np.asarray(y)
    if p.ndim == 2 and p.shape[1] > 1:
        guess = p.argmax(axis=1)
        truth = t.argmax(axis=1) if t.ndim == 2 and t.shape[1] == p.shape[1] else t.reshape(-1)
    elif p.ndim in (1, 2):
        guess = (p.reshape(-1) > 0.5).astype(int)
        truth = t.reshape(-1)
    else:
        return None
    if len(truth) != len(guess) or not np.all(np.isfinite(truth)) or np.any(truth != np.round(truth)):
        return None
    return guess == truth.astype(int)


def _f32(v: float | None) -> float | None:
    """A float32-held value as the user typed it (0.05, not 0.05000000074505806)."""
    return None if v is None else float(np.format_float_positional(np.float32(v), unique=True, trim="0"))


def _plain(a) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype.kind in "biufc" else a.astype(np.float32)


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _version(module: str | None) -> str | None:
    if module and module in sys.modules:
        return getattr(sys.modules[module], "__version__", None)
    return None


def _keras_seed():
    try:
        from keras.src.utils.rng_utils import get_random_seed

        return get_random_seed()
    except Exception:
        return None


# -- checkpoints back into a model


def load_checkpoint(path: str | os.PathLike, model, optimizer=None) -> dict:
    """Load a checkpoint written by the callback into ``model`` (and ``optimizer``); returns its manifest.

    Arrays are read with ``allow_pickle=False``: nothing in the file can execute code. The model (and optimizer)
    must have the architecture of the recorded one; the optimizer is built on the model's trainable variables when
    it has not been yet.
    """
    folder = Path(path)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        with np.load(folder / "model.npz", allow_pickle=False) as z:
            weights = [z[f"v{i:05d}"] for i in range(len(manifest["model"]))]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(folder, f"is not a readable whyspike Keras checkpoint ({exc})",
                         "point at a checkpoints/epoch-NNNN directory of a run recorded by WhyspikeCallback") from None
    _assign(folder, model.weights, weights, "model")
    if optimizer is not None:
        if not optimizer.variables or len(optimizer.variables) < len(manifest["optimizer"]):
            optimizer.build(model.trainable_variables)
        with np.load(folder / "optimizer.npz", allow_pickle=False) as z:
            _assign(folder, optimizer.variables, [z[f"v{i:05d}"] for i in range(len(manifest["optimizer"]))],
                    "optimizer")
    return manifest


def _assign(folder: Path, variables, arrays, what: str) -> None:
    variables = list(variables)
    if len(variables) != len(arrays):
        raise InputError(folder, f"holds {len(arrays)} {what} variables but the {what} given has {len(variables)}",
                         f"load it into a {what} built like the recorded one")
    for v, a in zip(variables, arrays):
        if tuple(v.shape) != tuple(a.shape):
            raise InputError(folder, f"{what} variable {v.path} has shape {tuple(v.shape)} but the checkpoint holds "
                             f"{tuple(a.shape)}", f"load it into a {what} built like the recorded one")
    for v, a in zip(variables, arrays):
        v.assign(a)


_CLASS = None


def _callback_class():
    global _CLASS
    if _CLASS is None:
        keras = require("keras", "keras")
        _CLASS = type("WhyspikeCallback", (_Recorder, keras.callbacks.Callback),
                      {"__module__": __name__, "__doc__": _DOC, "__qualname__": "WhyspikeCallback"})
    return _CLASS


_DOC = """Keras 3 callback recording a run directory for ``whyspike diagnose`` (see the module docstring).

    WhyspikeCallback(run_dir=None, tier="default", every=1, checkpoints=3, live=True, validation_data=None,
                     *, train_data=None, batch_size=None, verdict=True, live_budget=None)

``run_dir``: where to write (default ``whyspike-runs/<script-or-model-name>-<timestamp>``); ``tier``:
``"default"`` or ``"detailed"``; ``every``: record every N-th step; ``checkpoints``: keep the last K epoch
checkpoints (0: none); ``live``: one line per new significant jump at epoch end; ``verdict``: print the diagnosis
when training ends; ``validation_data`` / ``train_data``: ``(x, y)`` arrays for the detailed tier;
``batch_size``: the batch size ``fit`` uses (for the detailed tier's evaluations); ``live_budget``: the share of
wall-clock time live explanation may take (LiveExplainer's default when None).
"""


def __getattr__(name: str):
    if name == "WhyspikeCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FLUSH_STEPS", "TIERS", "WhyspikeCallback", "default_run_dir", "load_checkpoint"]

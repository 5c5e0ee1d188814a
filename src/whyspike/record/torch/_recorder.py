"""The :class:`Recorder` of hand-written PyTorch loops (the module doc of :mod:`whyspike.record.torch` has usage and
costs)."""

from __future__ import annotations

import atexit
import sys
import time
import weakref
from typing import Any, TextIO

from ...errors import UsageError
from ._batch import _hits, _logits
from ._checkpoint import save_checkpoint
from ._detail import _DetailMixin
from ._evaluate import _EvaluateMixin
from ._facts import _json_safe, _loader_facts, _model_facts, _optimizer_facts, _scheduler_facts, _unwrap_optimizer
from ._gradnorm import _clip_listen, _clip_unlisten, _GradNormMixin
from ._hyper import OptimizerView
from ._stepbuffer import Count, StepBuffer, _add_loss, summed
from ._support import _guarded, _t, _writer_for

TIERS = ("default", "detailed")
# the default tier's sampling of the gradient norm and the batch accuracy in hand-written loops: every SAMPLE_FIRST
# steps until the step time is known (the first drain), then every step when steps take SAMPLE_FULL seconds or more,
# and every (SAMPLE_FULL / step time)^2 steps below that, at most SAMPLE_MAX apart (see _adapt_sampling)
SAMPLE_FIRST, SAMPLE_FULL, SAMPLE_MAX = 16, 0.0015, 256


def _has_closure(optimizer, args, kwargs) -> bool:
    """Whether ``optimizer.step`` was given a closure. Step hooks receive the call's positional arguments, the
    optimizer itself first."""
    if args and args[0] is optimizer:
        args = args[1:]
    return bool(args and args[0] is not None) or (bool(kwargs) and kwargs.get("closure") is not None)


class Recorder(_GradNormMixin, _DetailMixin, _EvaluateMixin):
    """Records a PyTorch training loop into a whyspike run directory (see the module doc for usage and costs).

    ``run_dir``: a path, an open :class:`~whyspike.record.store.RunWriter`, or None for ``whyspike-runs/<script>-<time>``.
    ``every``: record every N-th step only. ``sample_every``: in the default tier, the gradient norm and the batch
    accuracy are taken on every ``sample_every``-th recorded step only (the other rows have no value there). None:
    for hand-written loops, every step when steps take 1.5 ms or more, ``(1.5 ms / step time)²`` steps apart below
    (~127 on a 0.13 ms micro-step, where taking both costs ~20% of the step), re-measured at each drain; 1 for the Lightning
    and Hugging Face callbacks (whose own per-step work dwarfs it). The detailed tier takes both at every
    recorded step; a pre-clip norm returned by ``clip_grad_norm_`` is free and recorded at every recorded step.
    ``flush_every``: steps kept on the device between host copies; None: about 0.5 s of training's worth (16 to
    2048 steps, re-measured at each copy).
    ``first_epoch`` / ``first_step``: where a resumed training's numbering continues (e.g. ``state["epoch"] + 1`` and
    ``state["step"]`` of the checkpoint it resumes from), so that its rows follow the first run's instead of
    overwriting them. ``checkpoints``: how many epoch checkpoints to keep (0: none). ``live``: one line per new jump at epoch end and
    the diagnosis at :meth:`close`. ``hooks``: register the optimizer step hooks (the framework callbacks pass
    False and feed the same signals from their own hooks).
    """

    def __init__(self, optimizer=None, model=None, run_dir=None, *, tier: str = "default", every: int = 1,
                 sample_every: int | None = None, flush_every: int | None = None, checkpoints: int = 3, live: bool = True, scheduler=None, loss_fn=None,
                 train_loader=None, val_loader=None, batch_size: int | None = None,
                 steps_per_epoch: int | None = None, train_size: int | None = None, eval_size: int | None = None,
                 epochs: int | None = None, first_epoch: int = 0, first_step: int = 0, detail_every: int = 50,
                 bn_batches: int = 50,
                 train_eval_batches: int = 20, hooks: bool = True, out: TextIO | None = None,
                 framework: str = "torch"):
        if tier not in TIERS:
            raise UsageError(f"Recorder(tier={tier!r}): the tier must be one of {', '.join(TIERS)}")
        # None: adaptive for hand-written loops (see _adapt_sampling), every step for Lightning / HF (whose own
        # per-step work dwarfs it)
        self._adaptive = sample_every is None and framework in ("torch", "torch-global")
        if sample_every is None:
            sample_every = SAMPLE_FIRST if self._adaptive else 1
        for name, v in (("every", every), ("sample_every", sample_every), ("flush_every", 1 if flush_every is None else flush_every),
                        ("detail_every", detail_every)):
            if not isinstance(v, int) or v < 1:
                raise UsageError(f"Recorder({name}={v!r}): must be a whole number >= 1")
        for name, v in (("first_epoch", first_epoch), ("first_step", first_step)):
            if not isinstance(v, int) or v < 0:
                raise UsageError(f"Recorder({name}={v!r}): must be a whole number >= 0")
        torch = _t()
        self.tier, self.every, self.flush_every = tier, every, flush_every
        self.detail_every, self.bn_batches, self.train_eval_batches = detail_every, bn_batches, train_eval_batches
        self.detailed = tier == "detailed"
        self.sample_every = 1 if self.detailed else sample_every
        self._adaptive = self._adaptive and not self.detailed
        self._sample = every * self.sample_every  # steps whose gradient norm and accuracy are taken
        self.checkpoints = int(checkpoints)
        self.optimizer = _unwrap_optimizer(optimizer) if optimizer is not None else None
        self.model, self.scheduler, self.loss_fn = model, scheduler, loss_fn
        self.train_loader, self.val_loader = train_loader, val_loader
        self.out = out
        self._said: set[str] = set()
        self.writer = _writer_for(run_dir, checkpoints)
        self.live = None
        if live:
            from ..live import LiveExplainer

            self.live = LiveExplainer(self.writer, out=out, sync=self._sync)
        self.closed = False
        self._buf = StepBuffer(self.writer, flush_every, epoch=int(first_epoch), first_step=first_step)
        self._row = self._buf.row
        self._marks = self._buf.marks
        self._hot: OptimizerView | None = None  # the view of the hooked optimizer (the pre-hook's common case)
        self._tensor_t = torch.Tensor
        self._batch_size_known = False  # meta.json has batch_size (checked per step until it has)
        self._epoch_extra: dict[str, float] = {}
        self._epoch_start_update = first_step
        self._epoch_start_call = first_step
        self._first_step = first_step
        self._n_updates = first_step  # optimizer steps taken (the step axis; a resumed run continues its count)
        self._n_calls = first_step  # rec.step() calls
        self._order: str | None = None  # rec.step() called "before" or "after" optimizer.step()
        self._back = 0  # 1 when rec.step() follows optimizer.step() (its values are the step just taken's)
        self._lane: dict | None = None  # the buffer's loss lane, once step()'s common case may use it
        self._pending_clip: dict[int, Any] = {}
        self._views: dict[int, OptimizerView] = {}
        self._layer_of: dict[int, str] = {}
        self._snap = None
        self._deferred = False
        self._hook_handles: list = []
        self._clip_hooked = False
        self._bn_warned = False
        self.meta_written = False
        self._meta_done = False  # meta.json has what the first epochs tell (steps per epoch, seeds)
        facts: dict[str, Any] = {
            "recorder": framework, "tier": tier, "record_every": every,
            "sample_every": "auto" if self._adaptive else self.sample_every,
            "flush_every": "auto" if flush_every is None else flush_every,
            "framework_versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
            "seeds": {"torch_initial_seed": torch.initial_seed()},
        }
        if self.detailed:
            facts["detail_every"] = detail_every
        for k, v in (("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch), ("train_size", train_size),
                     ("eval_size", eval_size), ("epochs", epochs)):
            if v is not None:
                facts[k] = v
        if train_loader is not None:
            facts.update(_loader_facts(train_loader, facts))
        if val_loader is not None and eval_size is None:
            try:
                facts["eval_size"] = len(val_loader.dataset)
            except (AttributeError, TypeError):
                pass
        if self.optimizer is not None:
            facts.update(_optimizer_facts(self.optimizer))
        if scheduler is not None:
            facts["lr_schedule"] = _scheduler_facts(scheduler)
        if model is not None:
            facts.update(_model_facts(model))
        self.writer.write_meta(**facts)
        if self.optimizer is not None and hooks:
            self._hook_handles.append(self.optimizer.register_step_pre_hook(self._pre_hook))
            self._hook_handles.append(self.optimizer.register_step_post_hook(self._post_hook))
            _clip_listen(self._on_clip)
            self._clip_hooked = True
            self._view(self.optimizer)
        self._atexit = _register_atexit(self)

    @property
    def _epoch(self) -> int:
        return self._buf.epoch

    # -- reporting problems: once per place, on stderr, never raising
    def _problem(self, where: str, exc: BaseException | str) -> None:
        if where in self._said:
            return
        self._said.add(where)
        what = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        print(f"whyspike: recorder problem in {where} ({what}); training continues without that signal",
              file=sys.stderr, flush=True)

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            print(f"whyspike: {message}", file=sys.stderr, flush=True)

    # -- optimizer side: called by the step hooks (or by a framework callback). These run at every step, so they
    # are written for speed: plain Python on cached state, no helper calls on the common path, one foreach_norm,
    # and nothing that waits for the device.
    def _pre_hook(self, optimizer, args, kwargs):
        step = self._n_updates
        if step % self.every:
            return
        if (kwargs or len(args) > 1) and _has_closure(optimizer, args, kwargs):
            # step(closure): the gradients (and the loss) are computed inside step(), so read them after it
            self._deferred = True
            if self._snapshot_due(step):
                self._snapshot(optimizer, step)
            return
        if self.detailed or self._pending_clip:
            self._before_update(optimizer, step)
            return
        # the common case, :meth:`_before_update` written out (this runs at every step: each statement saved counts)
        try:
            marks = self._marks
            marks.append(step)  # the step's row is built at the drain (StepBuffer's lanes)
            if len(marks) > self._buf.flush_every:
                self._drained()
            view = self._hot
            groups = optimizer.param_groups
            if view is None or groups[0] is not view.group0 or len(groups) != view.n_groups:
                view = self._hot = self._view(optimizer)
            if view.values(view.group0) != view.seen:  # a hyper-parameter changed (or is a tensor)
                changed = view.changed_hyper("", self._buf.hyper)
                if changed:
                    self._buf.row(step).update(changed)
            if not step % self._sample:
                norm = self._grad_norm(view)
                if norm is not None:
                    self._buf.row(step)["grad_norm"] = norm
        except Exception as exc:  # noqa: BLE001 - the training loop must survive any recorder bug
            self._problem("_pre_hook", exc)

    def _drained(self) -> None:
        """The buffer is full: drain it (which re-measures the step time), and adapt the sampling to it."""
        self._buf.drain()
        if self._adaptive:
            self._adapt_sampling()

    def _post_hook(self, optimizer, args, kwargs):
        if self._deferred:
            self._deferred = False
            self._before_update(optimizer, self._n_updates, snapshot=False)
        if self._snap is not None or self._pending_clip:
            self._after_update(optimizer, self._n_updates)
        self._n_updates += 1

    def _adapt_sampling(self) -> None:
        """Take the gradient norm and the batch accuracy at every step when steps take ``SAMPLE_FULL`` (1.5 ms) or
        more, and ever more sparsely below: ``(SAMPLE_FULL / step time)²`` steps apart, ~127 on a 0.13 ms micro-step.
        A sample costs about the same on any small model (~30 µs in the loop: a ``foreach_norm``, an ``argmax``,
        their share of the drain), so its share of a step grows as the step shrinks; the square keeps the sampling
        dense where it is cheap and makes it negligible (≈ 0.2%) on micro-steps."""
        per_step = self._buf.step_time  # measured by the drain
        if per_step is not None:
            self.sample_every = max(1, min(SAMPLE_MAX, round((SAMPLE_FULL / max(per_step, 1e-9)) ** 2)))
            self._sample = self.every * self.sample_every

    def _before_update(self, optimizer, step: int, suffix: str = "", grad_norm=None, snapshot: bool = True) -> None:
        """Record what the coming optimizer step applies: LR, momentum/betas, weight decay, gradient norm."""
        try:  # the guard of @_guarded, written out
            if step % self.every or self.writer.broken:
                return
            buf = self._buf
            row = buf.rows.get(step)
            if row is None:
                row = buf.row(step)
            view = self._views.get(id(optimizer))
            groups = optimizer.param_groups
            if view is None or len(groups) != view.n_groups or groups[0] is not view.group0:
                view = self._view(optimizer)
            view.read_hyper(row, suffix, buf.hyper)
            norm = grad_norm
            if norm is None and self._pending_clip:  # clip_grad_norm_ returned it: free, recorded every step
                norm = self._take_clip(view)
            if norm is None and step % self._sample == 0:
                norm = self._grad_norm(view)
            if norm is not None:
                row["grad_norm" + suffix if suffix else "grad_norm"] = norm
            if snapshot and self.detailed and not suffix and step % self.detail_every == 0:
                self._snapshot(optimizer, step)
        except Exception as exc:  # noqa: BLE001 - the training loop must survive any recorder bug
            self._problem("_before_update", exc)

    # -- the loop side
    def step(self, loss=None, output=None, target=None, *, step: int | None = None, **values) -> None:
        """Record one batch: its loss, and accuracy from ``output`` logits vs integer ``target``; extra scalars too.

        Tensors stay on their device until the next flush: this call never synchronises.
        """
        lane = self._lane
        if lane is not None and step is None and not values:
            # the common case first (a plain loop, hooks on, the call order known, one loss per step, not a sampled
            # step): the loss into the buffer's lane, nothing else. On the CPU the value is read now (no device to
            # wait for, and a float kept costs less than a tensor); elsewhere the tensor waits for the drain.
            s = self._n_updates - self._back  # called after optimizer.step(): the step just taken
            if loss.__class__ is self._tensor_t and s not in lane and (output is None or s % self._sample):
                if s % self.every:  # not a recorded step
                    self._n_calls += 1
                    return
                if loss.is_cpu:
                    try:
                        lane[s] = loss.item()
                        self._n_calls += 1
                        return
                    except RuntimeError:  # a loss of several values: the general path below takes their mean
                        pass
                elif not loss.dim():
                    lane[s] = loss.detach()
                    self._n_calls += 1
                    return
        try:
            if step is None:
                if not self._hook_handles:
                    step = self._n_calls
                else:
                    n = self._n_updates
                    if self._order is None:
                        self._order = "after" if n > self._first_step else "before"
                        self._back = int(self._order == "after")
                        if not self.detailed:  # the call order is known: the common case may take its lane
                            self._lane = self._buf.losses
                    step = n - 1 if n > self._first_step and self._order == "after" else n
            self._n_calls += 1
            if step % self.every or self.writer.broken:
                return
        except Exception as exc:  # noqa: BLE001 - a strange ``step=`` must not break the loop either
            self._problem("step", exc)
            return
        self._add(step, loss, output, target, values)

    def _add(self, step: int, loss, output, target, values: dict, loss_parts: bool = False) -> None:
        """Values of one (micro-)batch for ``step``. Losses of several micro-batches are averaged, or summed when
        ``loss_parts`` says each is already a share of the step's mean (normalized by the whole step's count)."""
        try:  # the guard of @_guarded, written out
            row = self._buf.row(step)
            tensor_t = self._tensor_t
            if loss is not None:
                if isinstance(loss, tensor_t):
                    loss = loss.detach()
                    if loss.dim():
                        loss = loss.reshape(-1)[0] if loss.numel() == 1 else loss.mean()
                else:
                    loss = float(loss)
                if loss_parts and "loss" in row:  # shares of the step's mean: summed, not averaged
                    row["loss"] = row["loss"] + loss
                else:
                    _add_loss(row, loss)
            if output is not None and isinstance(target, tensor_t):
                if self._batch_size_known and not self.detailed:
                    if step % self._sample == 0:  # a sampled step (the others take no accuracy)
                        # the common case first: class logits (batch, classes) against labels (batch,)
                        if output.__class__ is tensor_t and target.dim() == 1 and output.dim() == 2 \
                                and "accuracy" not in row:
                            n = target.shape[0]
                            if output.shape[0] == n and not target.is_floating_point():
                                row["accuracy"] = Count(output.argmax(-1) == target)  # no autograd node
                                row["_accuracy_n"] = n
                        else:
                            self._add_accuracy(row, step, output, target)
                else:
                    self._add_accuracy(row, step, output, target, step % self._sample == 0)
            if values:
                for k, v in values.items():
                    if isinstance(v, tensor_t):
                        row[k] = v.detach().reshape(-1)[0] if v.numel() == 1 and v.dim() else v.detach()
                    elif v is not None:
                        row[k] = v
        except Exception as exc:  # noqa: BLE001 - the training loop must survive any recorder bug
            self._problem("_add", exc)

    def _add_accuracy(self, row: dict, step: int, output, target, sampled: bool = True) -> None:
        """Accuracy of any model output (a tensor, ``.logits``, a dict, a tuple) against labels of any shape."""
        logits = _logits(output)
        if logits is None:
            return
        hits = _hits(logits, target) if sampled else None
        if hits is not None:  # counted and divided at the drain: the accuracy over every example of the step
            prev = row.get("accuracy")
            if prev is None:
                row["accuracy"], row["_accuracy_n"] = hits
            else:  # several micro-batches in one step
                row["accuracy"] = summed(prev) + summed(hits[0])
                row["_accuracy_n"] = row["_accuracy_n"] + hits[1]
        if not self._batch_size_known:
            if "batch_size" not in self.writer.meta and logits.dim() >= 1:
                self.writer.write_meta(batch_size=int(logits.shape[0]))
            self._batch_size_known = "batch_size" in self.writer.meta
        if self._snapshot_due(step):
            self._label_histogram(row, logits.detach(), target)

    # -- epochs
    @_guarded()
    def epoch_end(self, epoch: int | None = None, **values) -> None:
        """Close an epoch: its row (mean batch loss/accuracy, LR, ``values`` such as val_accuracy), a checkpoint,
        the detailed-tier evaluations when loaders were given, and one line per new significant jump."""
        if self.closed:
            return
        e = self._epoch if epoch is None else int(epoch)
        # the row is handed to the writer with the drain of the epoch's last steps (every ``flush_every`` steps, at
        # close, before a live diagnosis, and here when the writer's timed flush is due, so that a crash loses at
        # most ``flush_seconds`` of rows). With epochs of a few milliseconds every statement here counts: what can
        # wait (the means, the hand-over) waits for that drain.
        row: dict[str, Any] = self._detailed_epoch() if self.detailed else {}
        row["wall_time"] = time.time()  # the epoch's end, not the later drain that hands the row over
        if self._epoch_extra:
            row.update(self._epoch_extra)
            self._epoch_extra = {}
        if values:
            row.update({k: v for k, v in values.items() if v is not None})
        fallback = {}
        if self.optimizer is not None:
            lr = self.optimizer.param_groups[0]["lr"]
            fallback["lr"] = lr if lr.__class__ is float else _json_safe(lr)  # a tensor LR: its value now
        buf = self._buf
        buf.close_epoch(self._epoch, row, fallback, label=e)
        if self.writer.flush_due():
            buf.drain(everything=True)
        if not self._meta_done:
            self._epoch_meta()
        if self.checkpoints > 0 and self.writer.checkpoint_budget.allows():
            self._checkpoint(e)
        buf.start_epoch(e + 1, self._n_updates if self._hook_handles else self._n_calls)
        self._epoch_start_update, self._epoch_start_call = self._n_updates, self._n_calls
        if self.live is not None and self.live.budget.allows():
            self.live.epoch_end()

    def _sync(self) -> None:
        """Every buffered step and ended epoch to the writer (before a live diagnosis reads the epoch rows)."""
        self._buf.drain(everything=True)

    def _epoch_meta(self) -> None:
        facts: dict[str, Any] = {}
        if "steps_per_epoch" not in self.writer.meta:
            n = self._n_updates - self._epoch_start_update if self._n_updates > self._first_step \
                else self._n_calls - self._epoch_start_call
            if n > 0:
                facts["steps_per_epoch"] = n
        if not self.meta_written:
            self.meta_written = True
            facts["seeds"] = {**self.writer.meta.get("seeds", {}), "torch_initial_seed": _t().initial_seed()}
        if facts:
            self.writer.write_meta(**facts)
        self._meta_done = "steps_per_epoch" in self.writer.meta

    def _checkpoint(self, epoch: int) -> None:
        if self.checkpoints <= 0 or (self.model is None and self.optimizer is None):
            return
        save_checkpoint(self.writer, epoch, self._n_updates, self.model, self.optimizer, self.scheduler)

    # -- the end
    def flush(self) -> None:
        """Copy pending values to the host and write them (also done every ``flush_every`` steps)."""
        try:
            self._buf.drain(everything=True)
            self.writer.flush()
        except Exception as exc:  # noqa: BLE001
            self._problem("flush", exc)

    def _unhook(self) -> None:
        for h in self._hook_handles:
            h.remove()
        self._hook_handles = []
        if self._clip_hooked:
            _clip_unlisten(self._on_clip)
            self._clip_hooked = False

    def close(self, verdict: bool | None = None):
        """Flush, remove the hooks and (when ``live``) print the diagnosis; returns it (or None)."""
        if self.closed:
            return None
        self.closed = True
        self._lane = None  # later step() calls take the general path (no drain is triggered by the hooks any more)
        try:
            self._unhook()
        except Exception as exc:  # noqa: BLE001
            self._problem("close", exc)
        self.flush()
        _unregister_atexit(self._atexit)
        show = self.live is not None if verdict is None else verdict
        if show and self.writer.broken is None and (self.writer.epoch_rows or (self.writer.path / "steps").exists()):
            try:
                from ..live import LiveExplainer

                return (self.live or LiveExplainer(self.writer, out=self.out)).final()
            except Exception as exc:  # noqa: BLE001
                self._problem("the final diagnosis", exc)
        self.writer.close()
        return None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# at interpreter exit, recorders left open are flushed (not diagnosed): a script without close() keeps its data
_OPEN: "weakref.WeakSet[Recorder]" = weakref.WeakSet()
_ATEXIT = []


def _register_atexit(rec: Recorder):
    if not _ATEXIT:
        _ATEXIT.append(atexit.register(_flush_open))
    _OPEN.add(rec)
    return rec


def _unregister_atexit(rec) -> None:
    _OPEN.discard(rec)


def _flush_open() -> None:
    for rec in list(_OPEN):
        if not rec.closed:
            rec.flush()

"""Recorder for hand-written PyTorch loops, and the global hooks behind ``whyspike run``.

One call per step and one per epoch::

    from whyspike.record.torch import Recorder

    rec = Recorder(optimizer, model, run_dir="runs/exp1", scheduler=scheduler)
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            rec.step(loss=loss, output=logits, target=y)     # before or after optimizer.step(): both work
        scheduler.step()
        rec.epoch_end(val_loss=val_loss, val_accuracy=val_acc)
    rec.close()                                               # prints the diagnosis

``Recorder(optimizer, model)`` alone, with no ``rec.step`` call, still records through the optimizer's step hooks:
the learning rate, momentum / betas and weight decay actually applied (parameter group 0; meta.json notes when the
groups differ) and the global gradient norm before clipping. ``torch.nn.utils.clip_grad_norm_`` is wrapped while a
recorder is open, so the recorded norm is the one it returns (the pre-clip total norm); without clipping the norm is
computed in the optimizer's step pre-hook. Call it as ``torch.nn.utils.clip_grad_norm_`` (or ``nn.utils.…``): a
reference taken with ``from torch.nn.utils import clip_grad_norm_`` *before* the recorder was created is not seen,
and the norm recorded is then the clipped one.

Step numbering: the step axis counts the optimizer's steps (from 0). ``rec.step()`` attaches its values to the step
the optimizer is on: to the coming step when called before ``optimizer.step()`` (as detected at the first call),
to the step just taken when called after it; several calls per optimizer step (gradient accumulation) are averaged.
Epochs are numbered from 0 (``first_epoch``) in the order of ``rec.epoch_end()`` calls, which matches the
``last_epoch`` counter of a scheduler stepped once per epoch.

What each tier costs:

- ``default``: per step, a handful of float reads from the parameter group, one gradient-norm reduction
  (one read of every gradient, done by ``foreach`` kernels), the loss detached and, when ``output``/``target`` are
  given, an argmax for the accuracy. Nothing is synchronised with the device per step: values stay tensors on the
  device and are copied to the host every ``flush_every`` steps in one transfer per column type. Per epoch: one
  checkpoint of model + optimizer state (``checkpoints`` newest kept, plus those around detected jumps).
- ``detailed`` (opt-in): additionally, every ``detail_every`` steps a copy of all parameters (one model's worth of
  memory, briefly) to measure the update-to-weight ratio per layer, and the batch's label histogram; per epoch the
  weight norm per layer, and when ``train_loader`` / ``val_loader`` are given: eval-mode metrics on
  ``train_eval_batches`` training batches (exposes the running-average artifact), validation metrics plus
  per-example correctness (one byte per eval example per epoch on disk) and, when the model has BatchNorm, a
  validation with BatchNorm statistics recomputed on ``bn_batches`` training batches (PreciseBN: a deep copy of the
  model and ``bn_batches`` extra forward passes per epoch).

The recorder never raises into training: a problem is reported once on stderr and recording goes on without the
signal concerned. NaN losses are recorded as NaN.
"""

from __future__ import annotations

import atexit
import functools
import gc
import math
import os
import re
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Callable, TextIO

from ..errors import InputError, UsageError, require
from .store import RunWriter

TIERS = ("default", "detailed")
CHECKPOINT_FILE = "state.pt"
CHECKPOINT_FORMAT = "whyspike/torch-checkpoint-v1"
_MAX_HIST_CLASSES = 100
_LABEL_KEYS = ("labels", "label", "target", "targets", "y")

_torch_mod = None


def _t():
    """torch, imported on first use (whyspike itself never needs it)."""
    global _torch_mod
    if _torch_mod is None:
        _torch_mod = require("torch", "torch")
    return _torch_mod


def new_run_dir(base: str | os.PathLike = "whyspike-runs", name: str = "torch") -> Path:
    """A fresh ``base/<script-or-name>-YYYYmmdd-HHMMSS[-n]`` path (the layout the Keras recorder uses)."""
    arg0 = sys.argv[0] if sys.argv else ""
    stem = Path(arg0).stem if arg0.endswith(".py") else name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or name
    base_path = Path(base) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base_path, 2
    while path.exists():
        path, n = base_path.with_name(f"{base_path.name}-{n}"), n + 1
    return path


def _writer_for(run_dir, checkpoints: int) -> RunWriter:
    if isinstance(run_dir, RunWriter):
        return run_dir
    return RunWriter(run_dir if run_dir is not None else new_run_dir(), keep_checkpoints=max(int(checkpoints), 1))


def _guarded(default=None):
    """Never let a recorder method raise into training: report once per method, return ``default``."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the training loop must survive any recorder bug
                self._problem(fn.__name__, exc)
                return default() if callable(default) else default

        return wrapper

    return deco


# ---------------------------------------------------------------------------------------------- small helpers


def _json_safe(value: Any, depth: int = 0) -> Any:
    """Numbers, strings, bools, None and lists/dicts of them (a Counter becomes its sorted keys); else None."""
    torch = _t()
    if depth > 4:
        return None
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value if not isinstance(value, float) or math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [_json_safe(v, depth + 1) for v in value]
        return items if all(i is not None or v is None for i, v in zip(items, value)) else None
    if isinstance(value, dict):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()) and \
                all(isinstance(k, (int, float)) for k in value):
            return sorted(value)  # MultiStepLR's milestones are a Counter {epoch: count}
        out = {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None or value.get(k) is None}
    return None


_DROP = object()


def _weights_only_safe(value: Any, depth: int = 0) -> Any:
    """What ``torch.load(weights_only=True)`` accepts: tensors, numbers, strings, containers of them. Anything else
    (a function a scheduler keeps, say) is left out, with the dict key or list item holding it."""
    torch = _t()
    if depth > 8:
        return _DROP
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, (list, tuple)):
        items = [v for v in (_weights_only_safe(v, depth + 1) for v in value) if v is not _DROP]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            safe = _weights_only_safe(v, depth + 1)
            if isinstance(k, (str, int, float, bool)) and safe is not _DROP:
                out[k] = safe
        return out
    return _DROP


def _unwrap_optimizer(opt):
    """The torch optimizer inside a Lightning / accelerate wrapper."""
    torch = _t()
    for _ in range(4):
        inner = getattr(opt, "optimizer", None) or getattr(opt, "_optimizer", None)
        if isinstance(inner, torch.optim.Optimizer) and inner is not opt:
            opt = inner
        else:
            break
    return opt


def _model_facts(model) -> dict:
    torch = _t()
    bn = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
          and m.track_running_stats]
    dropout = any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())
    params = list(model.parameters())
    return {"has_batchnorm": bool(bn), "batchnorm_layers": len(bn), "has_dropout": dropout,
            "n_params": int(sum(p.numel() for p in params)),
            "n_trainable_params": int(sum(p.numel() for p in params if p.requires_grad)),
            "model_class": type(model).__name__}


def _optimizer_facts(opt) -> dict:
    g = opt.param_groups[0]
    facts: dict[str, Any] = {"optimizer": type(opt).__name__,
                             "optimizer_defaults": _json_safe({k: v for k, v in opt.defaults.items()
                                                               if k != "params"})}
    lr = g.get("initial_lr", g.get("lr"))
    facts["learning_rate"] = _json_safe(lr)
    if "momentum" in g:
        facts["momentum"] = _json_safe(g["momentum"])
    elif "betas" in g:
        facts["momentum"] = _json_safe(g["betas"][0])
    if "weight_decay" in g:
        facts["weight_decay"] = _json_safe(g["weight_decay"])
    groups = [{k: _json_safe(v) for k, v in grp.items() if k != "params" and isinstance(v, (int, float, tuple))}
              for grp in opt.param_groups]
    if len(groups) > 1 and any(gr != groups[0] for gr in groups[1:]):
        facts["param_groups"] = groups
        facts["param_groups_note"] = ("the parameter groups differ; lr/momentum/weight_decay columns follow group 0 "
                                      f"of {len(groups)}")
    return facts


def _scheduler_facts(sched) -> dict:
    state = sched.state_dict() if hasattr(sched, "state_dict") else {}
    conf = {"class": type(sched).__name__}
    for k, v in state.items():
        if k.startswith("_") and k not in ("_step_count",):
            continue
        safe = _json_safe(v)
        if safe is not None:
            conf[k] = safe
    return conf


def _logits(output):
    """The prediction tensor of a model output: a tensor, ``.logits``, ``["logits"]`` or the first element."""
    torch = _t()
    if isinstance(output, torch.Tensor):
        return output
    lg = getattr(output, "logits", None)
    if isinstance(lg, torch.Tensor):
        return lg
    if isinstance(output, dict):
        for k in ("logits", "output", "outputs", "preds", "y_hat"):
            if isinstance(output.get(k), torch.Tensor):
                return output[k]
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _hits(output, target):
    """(correct, counted) of class logits against integer labels (negatives such as -100 not counted): a tensor
    and an int (a tensor for sequences, whose padding is only known on the device); None when not applicable."""
    if target.is_floating_point() or output.dim() != target.dim() + 1 or output.shape[:-1] != target.shape:
        return None
    hit = output.argmax(-1) == target
    if target.dim() > 1:
        valid = target >= 0
        return (hit & valid).sum(), valid.sum()
    return hit.sum(), target.numel()


def _split_batch(batch):
    """(inputs, target, call-with-kwargs) from a batch: ``(x, y, ...)``, a dict with a label key, or ``x``."""
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1], False
    if isinstance(batch, dict):
        target = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
        return batch, target, True
    return batch, None, False


def _to(obj, device):
    torch = _t()
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


def _device_of(model):
    for p in model.parameters():
        return p.device
    return None


def _to_floats(tensors: list) -> list[float]:
    """Host floats for a list of 0-d tensors: one stack and one copy per (device, dtype)."""
    torch = _t()
    out: list[float] = [math.nan] * len(tensors)
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    for (device, dtype), idx in groups.items():
        stacked = torch.stack([tensors[i] for i in idx])
        if not stacked.is_floating_point():
            stacked = stacked.float()
        if device.type in ("cpu", "cuda"):
            stacked = stacked.double()
        elif dtype in (torch.float16, torch.bfloat16):
            stacked = stacked.float()
        for i, v in zip(idx, stacked.cpu().tolist()):
            out[i] = v
    return out


def _has_closure(args, kwargs) -> bool:
    return bool(args and args[0] is not None) or kwargs.get("closure") is not None


def _frozen(v):
    """A hyper-parameter value as it is now (a tensor LR is updated in place by schedulers: copy it)."""
    if isinstance(v, (int, float)):
        return v
    return v.detach().clone()


def _total_norm(grads):
    torch = _t()
    get = getattr(torch.nn.utils, "get_total_norm", None)
    if get is not None:
        try:
            return get(grads, 2.0, False, None)
        except (RuntimeError, NotImplementedError):  # sparse or unusual gradients: the plain way
            pass
    norms = [torch.linalg.vector_norm(g.coalesce().values() if g.is_sparse else g) for g in grads]
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


# ------------------------------------------------------------------------- clip_grad_norm_ (shared wrapper)

_CLIP: dict[str, Any] = {"orig": None, "wrapper": None, "listeners": []}


def _clip_listen(listener: Callable) -> None:
    torch = _t()
    if _CLIP["orig"] is None:
        orig = torch.nn.utils.clip_grad_norm_

        @functools.wraps(orig)
        def clip_grad_norm_(parameters, max_norm, *args, **kwargs):
            if isinstance(parameters, torch.Tensor):
                parameters = [parameters]
            else:
                parameters = list(parameters)
            norm_type = kwargs.get("norm_type", args[0] if args else 2.0)
            pre = None
            if _CLIP["listeners"] and float(norm_type) != 2.0:  # the recorded norm is always the 2-norm
                try:
                    grads = [p.grad for p in parameters if p.grad is not None]
                    pre = _total_norm(grads) if grads else None
                except Exception:  # noqa: BLE001
                    pre = None
            total = orig(parameters, max_norm, *args, **kwargs)
            norm = total if float(norm_type) == 2.0 else pre
            for ref in list(_CLIP["listeners"]):
                fn = ref()
                if fn is not None and norm is not None:
                    fn(parameters, norm, max_norm)
            return total

        _CLIP["orig"], _CLIP["wrapper"] = orig, clip_grad_norm_
        torch.nn.utils.clip_grad_norm_ = clip_grad_norm_
        torch.nn.utils.clip_grad.clip_grad_norm_ = clip_grad_norm_
    _CLIP["listeners"].append(weakref.WeakMethod(listener))


def _clip_unlisten(listener: Callable) -> None:
    torch = _t()
    _CLIP["listeners"] = [r for r in _CLIP["listeners"] if r() is not None and r() != listener]
    if not _CLIP["listeners"] and _CLIP["orig"] is not None:
        for mod in (torch.nn.utils, torch.nn.utils.clip_grad):
            if getattr(mod, "clip_grad_norm_", None) is _CLIP["wrapper"]:
                mod.clip_grad_norm_ = _CLIP["orig"]
        _CLIP["orig"] = _CLIP["wrapper"] = None


# -------------------------------------------------------------------------------------------------- Recorder


class Recorder:
    """Records a PyTorch training loop into a whyspike run directory (see the module doc for usage and costs).

    ``run_dir``: a path, an open :class:`~whyspike.record.store.RunWriter`, or None for ``whyspike-runs/<script>-<time>``.
    ``every``: record every N-th step only. ``flush_every``: steps kept on the device between host copies.
    ``checkpoints``: how many epoch checkpoints to keep (0: none). ``live``: one line per new jump at epoch end and
    the diagnosis at :meth:`close`. ``hooks``: register the optimizer step hooks (the framework callbacks pass
    False and feed the same signals from their own hooks).
    """

    def __init__(self, optimizer=None, model=None, run_dir=None, *, tier: str = "default", every: int = 1,
                 flush_every: int = 200, checkpoints: int = 3, live: bool = True, scheduler=None, loss_fn=None,
                 train_loader=None, val_loader=None, batch_size: int | None = None,
                 steps_per_epoch: int | None = None, train_size: int | None = None, eval_size: int | None = None,
                 epochs: int | None = None, first_epoch: int = 0, detail_every: int = 50, bn_batches: int = 50,
                 train_eval_batches: int = 20, hooks: bool = True, out: TextIO | None = None,
                 framework: str = "torch"):
        if tier not in TIERS:
            raise UsageError(f"Recorder(tier={tier!r}): the tier must be one of {', '.join(TIERS)}")
        for name, v in (("every", every), ("flush_every", flush_every), ("detail_every", detail_every)):
            if not isinstance(v, int) or v < 1:
                raise UsageError(f"Recorder({name}={v!r}): must be a whole number >= 1")
        torch = _t()
        self.tier, self.every, self.flush_every = tier, every, flush_every
        self.detail_every, self.bn_batches, self.train_eval_batches = detail_every, bn_batches, train_eval_batches
        self.detailed = tier == "detailed"
        self.checkpoints = int(checkpoints)
        self.optimizer = _unwrap_optimizer(optimizer) if optimizer is not None else None
        self.model, self.scheduler, self.loss_fn = model, scheduler, loss_fn
        self.train_loader, self.val_loader = train_loader, val_loader
        self.out = out
        self._said: set[str] = set()
        self.writer = _writer_for(run_dir, checkpoints)
        self.live = None
        if live:
            from .live import LiveExplainer

            self.live = LiveExplainer(self.writer, out=out)
        self.closed = False
        self._rows: dict[int, dict[str, Any]] = {}
        self._agg: dict[int, dict[str, float]] = {}
        self._epoch_extra: dict[str, float] = {}
        self._epoch = int(first_epoch)
        self._epoch_start_update = 0
        self._epoch_start_call = 0
        self._n_updates = 0  # optimizer steps taken (the step axis)
        self._n_calls = 0  # rec.step() calls
        self._order: str | None = None  # rec.step() called "before" or "after" optimizer.step()
        self._pending_clip: dict[int, Any] = {}
        self._params: dict[int, tuple[int, list]] = {}
        self._param_ids: dict[int, set[int]] = {}
        self._fast_norm: dict[int, bool] = {}
        self._layer_of: dict[int, str] = {}
        self._snap = None
        self._deferred = False
        self._hook_handles: list = []
        self._clip_hooked = False
        self._bn_warned = False
        self.meta_written = False
        facts: dict[str, Any] = {
            "recorder": framework, "tier": tier, "record_every": every, "flush_every": flush_every,
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
            facts.update(self._loader_facts(train_loader, facts))
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
            self._params_of(self.optimizer)
        self._atexit = _register_atexit(self)

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

    @staticmethod
    def _loader_facts(loader, known: dict) -> dict:
        facts = {}
        bs = getattr(loader, "batch_size", None)
        if isinstance(bs, int) and "batch_size" not in known:
            facts["batch_size"] = bs
        try:
            if "steps_per_epoch" not in known:
                facts["steps_per_epoch"] = len(loader)
            if "train_size" not in known:
                facts["train_size"] = len(loader.dataset)
        except (TypeError, AttributeError):
            pass
        return facts

    # -- rows: values per step, tensors until the next drain
    def _row(self, step: int) -> dict[str, Any]:
        row = self._rows.get(step)
        if row is None:
            row = self._rows[step] = {"epoch": self._epoch}
            if len(self._rows) > self.flush_every:
                self._drain()
        return row

    def _params_of(self, opt) -> list:
        key = id(opt)
        n = len(opt.param_groups)
        cached = self._params.get(key)
        if cached is None or cached[0] != n:
            params = [p for g in opt.param_groups for p in g["params"]]
            self._params[key] = (n, params)
            self._param_ids[key] = {id(p) for p in params}
            # one device and dtype: the gradient norm can skip torch's grouping (a third of a micro-step's cost)
            self._fast_norm[key] = len({(p.device, p.dtype) for p in params}) <= 1
            return params
        return cached[1]

    def _grad_norm(self, optimizer, params):
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return None
        if self._fast_norm.get(id(optimizer)):
            torch = _t()
            try:
                return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            except (RuntimeError, AttributeError, NotImplementedError):  # sparse gradients, an old torch
                self._fast_norm[id(optimizer)] = False
        return _total_norm(grads)

    # -- optimizer side: called by the step hooks (or by a framework callback)
    def _pre_hook(self, optimizer, args, kwargs):
        step = self._n_updates
        if step % self.every:
            return
        if _has_closure(args, kwargs):
            # step(closure): the gradients (and the loss) are computed inside step(), so read them after it
            self._deferred = True
            if self.detailed and step % self.detail_every == 0:
                self._snapshot(optimizer, step)
            return
        self._before_update(optimizer, step)

    def _post_hook(self, optimizer, args, kwargs):
        if self._deferred:
            self._deferred = False
            self._before_update(optimizer, self._n_updates, snapshot=False)
        if self._snap is not None or self._pending_clip:
            self._after_update(optimizer, self._n_updates)
        self._n_updates += 1

    @_guarded()
    def _on_clip(self, parameters, norm, max_norm) -> None:
        """``clip_grad_norm_`` ran: its pre-clip norm is the one the coming step of the optimizer owning these
        parameters should record (matched by the first parameter)."""
        if not parameters:
            return
        self._pending_clip[id(parameters[0])] = norm
        if "grad_clip_max_norm" not in self.writer.meta:
            self.writer.write_meta(grad_clip_max_norm=_json_safe(max_norm))

    def _take_clip(self, optimizer):
        ids = self._param_ids.get(id(optimizer), ())
        for pid in list(self._pending_clip):
            if pid in ids:
                return self._pending_clip.pop(pid)
        return None

    @_guarded()
    def _snapshot(self, optimizer, step: int) -> None:
        """The weights before the update of ``step``, for the update-to-weight ratio (detailed tier)."""
        params = [p for p in self._params_of(optimizer) if p.requires_grad]
        self._snap = (step, params, [p.detach().clone() for p in params])

    @_guarded()
    def _before_update(self, optimizer, step: int, suffix: str = "", grad_norm=None, snapshot: bool = True) -> None:
        """Record what the coming optimizer step applies: LR, momentum/betas, weight decay, gradient norm."""
        if step % self.every or self.writer.broken:
            return
        row = self._row(step)
        g = optimizer.param_groups[0]
        row["lr" + suffix] = _frozen(g["lr"])
        if "momentum" in g:
            row["momentum" + suffix] = _frozen(g["momentum"])
        elif "betas" in g:
            b1, b2 = g["betas"]
            row["beta1" + suffix], row["beta2" + suffix] = _frozen(b1), _frozen(b2)
        if "weight_decay" in g:
            row["weight_decay" + suffix] = _frozen(g["weight_decay"])
        params = self._params_of(optimizer)
        norm = grad_norm
        if norm is None and self._pending_clip:
            norm = self._take_clip(optimizer)
        if norm is None:
            norm = self._grad_norm(optimizer, params)
        if norm is not None:
            row["grad_norm" + suffix] = norm
        if snapshot and self.detailed and not suffix and step % self.detail_every == 0:
            self._snapshot(optimizer, step)

    @_guarded()
    def _after_update(self, optimizer, step: int) -> None:
        if self._pending_clip:  # a clip whose step was skipped (GradScaler found inf) must not leak into the next
            self._take_clip(optimizer)
        snap, self._snap = self._snap, None
        if snap is None or snap[0] != step:
            return
        torch = _t()
        _, params, before = snap
        deltas = torch._foreach_sub([p.detach() for p in params], before)
        dn, wn = torch._foreach_norm(deltas), torch._foreach_norm(before)
        layers: dict[str, list[int]] = {}
        for i, p in enumerate(params):
            layers.setdefault(self._layer_name(p, i), []).append(i)
        row = self._row(step)

        def ratio(idx):
            d = torch.stack([dn[i] for i in idx]).square().sum().sqrt()
            w = torch.stack([wn[i] for i in idx]).square().sum().sqrt()
            return d / w.clamp_min(1e-12)

        for name, idx in layers.items():
            row[f"update_ratio/{name}"] = ratio(idx)
        row["update_ratio"] = ratio(range(len(params)))

    def _layer_name(self, p, i: int) -> str:
        if not self._layer_of and self.model is not None:
            for name, q in self.model.named_parameters():
                self._layer_of[id(q)] = name.rsplit(".", 1)[0] if "." in name else name
        return self._layer_of.get(id(p), f"param{i}")

    # -- the loop side
    def step(self, loss=None, output=None, target=None, *, step: int | None = None, **values) -> None:
        """Record one batch: its loss, and accuracy from ``output`` logits vs integer ``target``; extra scalars too.

        Tensors stay on their device until the next flush: this call never synchronises.
        """
        try:
            if step is None:
                if not self._hook_handles:
                    step = self._n_calls
                else:
                    if self._order is None:
                        self._order = "after" if self._n_updates > 0 else "before"
                    step = self._n_updates - (self._order == "after" and self._n_updates > 0)
            self._n_calls += 1
            if step % self.every or self.writer.broken:
                return
        except Exception as exc:  # noqa: BLE001 - a strange ``step=`` must not break the loop either
            self._problem("step", exc)
            return
        self._add(step, loss, output, target, values)

    @_guarded()
    def _add(self, step: int, loss, output, target, values: dict, loss_parts: bool = False) -> None:
        """Values of one (micro-)batch for ``step``. Losses of several micro-batches are averaged, or summed when
        ``loss_parts`` says each is already a share of the step's mean (normalized by the whole step's count)."""
        torch = _t()
        row = self._row(step)
        if loss is not None:
            if isinstance(loss, torch.Tensor):
                loss = loss.detach()
                if loss.dim():
                    loss = loss.reshape(-1)[0] if loss.numel() == 1 else loss.mean()
            else:
                loss = float(loss)
            if "loss" in row:
                row["loss"] = row["loss"] + loss
                if not loss_parts:
                    row["_n_loss"] = row.get("_n_loss", 1) + 1
            else:
                row["loss"] = loss
        logits = _logits(output) if output is not None else None
        if logits is not None and isinstance(target, torch.Tensor):
            logits = logits.detach()
            hits = _hits(logits, target)
            if hits is not None:  # divided at the drain: the accuracy over every example of the step
                if "accuracy" in row:
                    row["accuracy"] = row["accuracy"] + hits[0]
                    row["_accuracy_n"] = row["_accuracy_n"] + hits[1]
                else:
                    row["accuracy"], row["_accuracy_n"] = hits
            if "batch_size" not in self.writer.meta and logits.dim() >= 1:
                self.writer.write_meta(batch_size=int(logits.shape[0]))
            if self.detailed and step % self.detail_every == 0:
                self._label_histogram(row, logits, target)
        for k, v in values.items():
            if isinstance(v, torch.Tensor):
                row[k] = v.detach().reshape(-1)[0] if v.numel() == 1 and v.dim() else v.detach()
            elif v is not None:
                row[k] = v

    def _label_histogram(self, row: dict, logits, target) -> None:
        torch = _t()
        if target.is_floating_point() or logits.dim() != target.dim() + 1:
            return
        c = int(logits.shape[-1])
        if c > _MAX_HIST_CLASSES:
            self._say_once("hist", f"label histogram skipped: {c} classes (the histogram is kept for <= "
                                   f"{_MAX_HIST_CLASSES})")
            return
        t = target.reshape(-1)
        valid = ((t >= 0) & (t < c)).to(torch.float32)
        hist = torch.zeros(c, device=t.device).scatter_add_(0, t.clamp(0, c - 1), valid)
        for k, v in enumerate(hist.unbind()):
            row[f"labels/{k}"] = v

    # -- draining: tensors -> floats -> writer rows
    def _drain(self, everything: bool = False) -> None:
        if not self._rows:
            return
        if self.writer.broken:
            self._rows.clear()  # nothing can be written any more: do not grow in memory
            return
        keys = sorted(self._rows)
        if not everything:
            keys = keys[:-1]  # the newest step may still receive values
        rows = [(k, self._rows.pop(k)) for k in keys]
        torch = _t()
        slots, tensors = [], []
        for _, r in rows:
            for c, v in r.items():
                if isinstance(v, torch.Tensor):
                    slots.append((r, c))
                    tensors.append(v if v.dim() == 0 else v.reshape(-1)[0])
        if tensors:
            for (r, c), f in zip(slots, _to_floats(tensors)):
                r[c] = f
        for k, r in rows:
            n = r.pop("_n_loss", 1)
            if n > 1 and "loss" in r:
                r["loss"] = r["loss"] / n
            n = r.pop("_accuracy_n", None)
            if n is not None and "accuracy" in r:
                r["accuracy"] = r["accuracy"] / n if n else math.nan
            agg = self._agg.setdefault(r["epoch"], {"loss": 0.0, "n_loss": 0, "accuracy": 0.0, "n_accuracy": 0})
            for col in ("loss", "accuracy"):
                if col in r:
                    agg[col] += r[col]
                    agg["n_" + col] += 1
            if "lr" in r and k >= agg.get("lr_step", -1):
                agg["lr"], agg["lr_step"] = r["lr"], k
            self.writer.step(k, **r)

    # -- epochs
    @_guarded()
    def epoch_end(self, epoch: int | None = None, **values) -> None:
        """Close an epoch: its row (mean batch loss/accuracy, LR, ``values`` such as val_accuracy), a checkpoint,
        the detailed-tier evaluations when loaders were given, and one line per new significant jump."""
        if self.closed:
            return
        self._drain(everything=True)
        e = self._epoch if epoch is None else int(epoch)
        agg = self._agg.pop(self._epoch, None) or {}
        row: dict[str, Any] = {}
        for col in ("loss", "accuracy"):
            if agg.get("n_" + col):
                row[col] = agg[col] / agg["n_" + col]
        if "lr" in agg:
            row["lr"] = agg["lr"]
        elif self.optimizer is not None:
            row["lr"] = _json_safe(self.optimizer.param_groups[0]["lr"])
        if self.detailed:
            row.update(self._detailed_epoch())
        row.update(self._epoch_extra)
        self._epoch_extra = {}
        row.update({k: v for k, v in values.items() if v is not None})
        self.writer.epoch(e, **row)
        self._epoch_meta()
        self._checkpoint(e)
        self._epoch = e + 1
        self._epoch_start_update, self._epoch_start_call = self._n_updates, self._n_calls
        if self.live is not None:
            self.live.epoch_end()

    def _epoch_meta(self) -> None:
        facts: dict[str, Any] = {}
        if "steps_per_epoch" not in self.writer.meta:
            n = self._n_updates - self._epoch_start_update if self._n_updates else self._n_calls - self._epoch_start_call
            if n > 0:
                facts["steps_per_epoch"] = n
        if not self.meta_written:
            self.meta_written = True
            facts["seeds"] = {**self.writer.meta.get("seeds", {}), "torch_initial_seed": _t().initial_seed()}
        if facts:
            self.writer.write_meta(**facts)

    def _detailed_epoch(self) -> dict[str, float]:
        row: dict[str, float] = {}
        if self.model is not None:
            row.update(self.weight_norms() or {})
        if self.train_loader is not None:
            row.update(self.evaluate_train(self.train_loader, queue=False) or {})
        if self.val_loader is not None:
            row.update(self.evaluate(self.val_loader, queue=False) or {})
            if self.train_loader is not None:
                row.update(self.evaluate_precise_bn(self.train_loader, self.val_loader, queue=False) or {})
        return row

    # -- evaluations (detailed tier, or called by hand before epoch_end)
    @_guarded(default=dict)
    def weight_norms(self) -> dict[str, float]:
        """The global weight norm and one per layer (``weight_norm``, ``weight_norm/<layer>``)."""
        torch = _t()
        named = list(self.model.named_parameters())
        if not named:
            return {}
        norms = torch._foreach_norm([p.detach() for _, p in named])
        layers: dict[str, list] = {}
        for (name, _), n in zip(named, norms):
            layers.setdefault(name.rsplit(".", 1)[0] if "." in name else name, []).append(n)
        keys = ["weight_norm"] + [f"weight_norm/{k}" for k in layers]
        vals = [torch.stack(list(norms)).square().sum().sqrt()] + \
               [torch.stack(v).square().sum().sqrt() for v in layers.values()]
        return dict(zip(keys, _to_floats(vals)))

    def _run_eval(self, model, loader, *, loss_fn=None, max_batches=None, per_example=False):
        """(mean loss or None, accuracy or None, n examples, correctness vector or None) in eval mode."""
        torch = _t()
        loss_fn = loss_fn or self.loss_fn
        device = _device_of(model)
        was_training = model.training
        model.eval()
        loss_sum = correct = None
        n = n_loss = 0
        hits = []
        try:
            with torch.no_grad():
                for i, batch in enumerate(loader):
                    if max_batches is not None and i >= max_batches:
                        break
                    x, y, kw = _split_batch(_to(batch, device))
                    out = model(**x) if kw else model(x)
                    logits = _logits(out)
                    if logits is None:
                        continue
                    bs = int(logits.shape[0])
                    loss = None
                    if loss_fn is not None and y is not None:
                        loss = loss_fn(out if kw else logits, y)
                    elif getattr(out, "loss", None) is not None or (isinstance(out, dict) and "loss" in out):
                        loss = out["loss"] if isinstance(out, dict) else out.loss
                    elif y is not None and not y.is_floating_point() and logits.dim() == y.dim() + 1:
                        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                                 y.reshape(-1), ignore_index=-100)
                    if loss is not None:
                        loss_sum = loss.detach().float() * bs if loss_sum is None else loss_sum + loss.detach() * bs
                        n_loss += bs
                    if y is not None and not y.is_floating_point() and logits.dim() == y.dim() + 1:
                        hit = logits.argmax(-1) == y
                        if hit.dim() > 1:
                            hit = hit.all(dim=tuple(range(1, hit.dim())))
                        correct = hit.sum() if correct is None else correct + hit.sum()
                        if per_example:
                            hits.append(hit.cpu())
                    n += bs
        finally:
            model.train(was_training)
        mean_loss = float(loss_sum) / n_loss if loss_sum is not None and n_loss else None
        acc = float(correct) / n if correct is not None and n else None
        vec = torch.cat(hits).numpy() if per_example and hits else None
        return mean_loss, acc, n, vec

    def _queue(self, values: dict, queue: bool) -> dict:
        if queue:
            self._epoch_extra.update(values)
        return values

    @_guarded(default=dict)
    def evaluate_train(self, loader, *, max_batches: int | None = None, loss_fn=None, queue: bool = True) -> dict:
        """Training-set loss/accuracy in eval mode on the first ``max_batches`` batches (``train_eval_*``).

        Unlike the mean of batch losses over the epoch, this measures the model as it is at the epoch's end.
        """
        mb = self.train_eval_batches if max_batches is None else max_batches
        loss, acc, _, _ = self._run_eval(self.model, loader, loss_fn=loss_fn, max_batches=mb)
        out = {k: v for k, v in (("train_eval_loss", loss), ("train_eval_accuracy", acc)) if v is not None}
        return self._queue(out, queue)

    @_guarded(default=dict)
    def evaluate(self, loader, *, name: str = "val", loss_fn=None, per_example: bool | None = None,
                 max_batches: int | None = None, queue: bool = True) -> dict:
        """Eval-mode ``<name>_loss`` / ``<name>_accuracy`` on ``loader``; per-example correctness (detailed tier
        by default) goes to ``examples/<name>-eNNNN.npy`` for McNemar tests between epochs (keep the loader
        unshuffled so the examples line up)."""
        per_example = self.detailed if per_example is None else per_example
        loss, acc, n, vec = self._run_eval(self.model, loader, loss_fn=loss_fn, max_batches=max_batches,
                                           per_example=per_example)
        if n and self.writer.meta.get("eval_size") is None and name == "val":
            self.writer.write_meta(eval_size=n)
        if vec is not None:
            self.writer.examples(self._epoch, name, vec)
        out = {k: v for k, v in ((f"{name}_loss", loss), (f"{name}_accuracy", acc)) if v is not None}
        return self._queue(out, queue)

    @_guarded(default=dict)
    def evaluate_precise_bn(self, train_loader, loader, *, name: str = "val", bn_batches: int | None = None,
                            loss_fn=None, queue: bool = True) -> dict:
        """Eval-mode metrics after recomputing BatchNorm statistics on ``bn_batches`` training batches (PreciseBN)
        on a copy of the model (``<name>_precise_bn_loss``, ``<name>_precise_bn_accuracy``).

        If these stay steady while the plain eval-mode metrics swing, the swings came from running statistics
        that lag the weights. A model without BatchNorm is said so once and gives nothing.
        """
        import copy

        torch = _t()
        bns = [m for m in self.model.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not bns:
            if not self._bn_warned:
                self._bn_warned = True
                self._say_once("precise_bn", "the model has no BatchNorm layers with running statistics: "
                                             "validation with recomputed BatchNorm statistics is skipped (nothing "
                                             "to recompute)")
            return {}
        model = copy.deepcopy(self.model)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the batches below
        device = _device_of(model)
        model.train()
        nb = self.bn_batches if bn_batches is None else bn_batches
        with torch.no_grad():
            for i, batch in enumerate(train_loader):
                if i >= nb:
                    break
                x, _, kw = _split_batch(_to(batch, device))
                model(**x) if kw else model(x)
        loss, acc, _, _ = self._run_eval(model, loader, loss_fn=loss_fn)
        del model
        out = {k: v for k, v in ((f"{name}_precise_bn_loss", loss), (f"{name}_precise_bn_accuracy", acc))
               if v is not None}
        return self._queue(out, queue)

    # -- checkpoints
    def _checkpoint(self, epoch: int) -> None:
        if self.checkpoints <= 0 or (self.model is None and self.optimizer is None):
            return
        d = self.writer.checkpoint_dir(epoch)
        if d is None:
            return
        torch = _t()
        state: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "epoch": int(epoch), "step": int(self._n_updates)}
        if self.model is not None:
            state["model"] = self.model.state_dict()
        if self.optimizer is not None:
            state["optimizer"] = _weights_only_safe(self.optimizer.state_dict())
        if self.scheduler is not None and hasattr(self.scheduler, "state_dict"):
            state["scheduler"] = _weights_only_safe(self.scheduler.state_dict())
        try:
            torch.save(state, d / CHECKPOINT_FILE)
        except OSError as exc:
            self.writer.fail(f"{exc.strerror or exc} while writing a checkpoint")
            return
        self.writer.commit_checkpoint(epoch)

    # -- the end
    def flush(self) -> None:
        """Copy pending values to the host and write them (also done every ``flush_every`` steps)."""
        try:
            self._drain(everything=True)
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
        try:
            self._unhook()
        except Exception as exc:  # noqa: BLE001
            self._problem("close", exc)
        self.flush()
        _unregister_atexit(self._atexit)
        show = self.live is not None if verdict is None else verdict
        if show and self.writer.broken is None and (self.writer.epoch_rows or (self.writer.path / "steps").exists()):
            try:
                from .live import LiveExplainer

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


# ------------------------------------------------------------------------------------------- checkpoints


def load_checkpoint(path: str | os.PathLike, model=None, optimizer=None, *, scheduler=None, map_location="cpu"):
    """Load a recorder checkpoint (a ``checkpoints/epoch-NNNN`` directory or its ``state.pt``) into ``model`` /
    ``optimizer`` / ``scheduler``; returns the whole state dict. Never unpickles objects (``weights_only=True``)."""
    torch = _t()
    p = Path(path)
    if p.is_dir():
        if (p / "checkpoints").is_dir():
            have = ", ".join(sorted(c.name for c in (p / "checkpoints").iterdir() if c.is_dir())[-5:])
            raise UsageError(f"{p} is a run directory: pass one of its checkpoints, e.g. {p}/checkpoints/<epoch> "
                             f"(latest: {have or 'none'})")
        p = p / CHECKPOINT_FILE
    if not p.is_file():
        raise InputError(p, "is not a whyspike checkpoint (no such file)",
                         "pass a checkpoints/epoch-NNNN directory of a run recorded with checkpoints > 0")
    state = torch.load(p, map_location=map_location, weights_only=True)
    if model is not None and "model" in state:
        model.load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    return state


# ------------------------------------------------------------------------ global hooks (``whyspike run``)


class GlobalHooks:
    """What :func:`install_global_hooks` installed. ``close()`` undoes it all and flushes; ``final()`` also prints
    the diagnosis (and returns it).

    How a script is read without any change to it:

    - every optimizer's ``step()`` (``torch.optim.optimizer.register_optimizer_step_pre_hook``/``post_hook``) gives
      the LR, momentum/betas, weight decay and gradient norm before the update; the step axis counts the steps of
      the first optimizer that steps (the *primary*). Another optimizer's values are recorded at the primary's
      current step with a ``/opt<k>`` suffix (a GAN's generator, say). When another optimizer steps
      ``SWITCH_AFTER`` (3) times in a row without the primary stepping in between, it becomes the primary (a
      script that trains a second model; its first two steps stay under the suffix), the step numbering goes on,
      the model and checkpoints follow it, and meta.json lists the switch under ``optimizer_switches``.
    - ``torch.Tensor.backward`` on a one-element tensor records it as the loss of the next optimizer step, whichever
      optimizer takes it (``loss``, or ``loss/opt<k>``); the mean when several are back-propagated between two
      steps. A loss scaled by ``GradScaler.scale`` is recorded unscaled. ``torch.autograd.backward(loss)`` called
      directly is not seen.
    - ``torch.nn.utils.clip_grad_norm_`` gives the pre-clip norm.
    - epochs: a ``DataLoader`` whose iterator runs out after at least one step of the primary optimizer was taken
      while it was iterated ends an epoch (evaluation loaders, iterated without steps, do not). Loops that break
      out of the loader early, or that do not use a ``DataLoader``, get no epoch rows; the step rows stay.
    - the model: at the primary's first step the smallest ``nn.Module`` holding all its parameters (the outermost
      of equals) is taken as the model, for its facts (BatchNorm, dropout, size) and the epoch checkpoints.
    """

    SWITCH_AFTER = 3

    def __init__(self, writer: RunWriter, *, live: bool = True, tier: str = "default", flush_every: int = 200,
                 checkpoints: int = 3, out: TextIO | None = None):
        torch = _t()
        self.recorder = Recorder(None, None, writer, tier=tier, flush_every=flush_every, checkpoints=checkpoints,
                                 live=live, hooks=False, out=out, framework="torch-global")
        self._opts: dict[int, int] = {}  # id(optimizer) -> index
        self._refs: dict[int, Any] = {}
        self._primary: int | None = None
        self._idle = 0  # steps of one other optimizer in a row since the primary's last step
        self._idle_opt: int | None = None
        self._deferred: set[int] = set()
        self._losses: list = []
        self._scaled: set[int] = set()
        self._closed = False
        self._saved = {
            "backward": torch.Tensor.backward,
            "dl_iter": torch.utils.data.DataLoader.__iter__,
            "scale": getattr(torch.amp, "GradScaler", None) and torch.amp.GradScaler.scale,
        }
        import importlib

        optim_mod = importlib.import_module("torch.optim.optimizer")
        self._handles = [optim_mod.register_optimizer_step_pre_hook(self._pre),
                         optim_mod.register_optimizer_step_post_hook(self._post)]
        _clip_listen(self.recorder._on_clip)
        hooks = self
        orig_backward, orig_iter, orig_scale = self._saved["backward"], self._saved["dl_iter"], self._saved["scale"]

        @functools.wraps(orig_backward)
        def backward(tensor, *args, **kwargs):
            hooks._on_backward(tensor)
            return orig_backward(tensor, *args, **kwargs)

        @functools.wraps(orig_iter)
        def __iter__(loader):
            return _EpochIter(orig_iter(loader), hooks)

        torch.Tensor.backward = backward
        torch.utils.data.DataLoader.__iter__ = __iter__
        if orig_scale is not None:
            @functools.wraps(orig_scale)
            def scale(scaler, outputs):
                scaled = orig_scale(scaler, outputs)
                hooks._on_scale(outputs, scaled)
                return scaled

            torch.amp.GradScaler.scale = scale
        self._patched = {"backward": backward, "dl_iter": __iter__, "scale": orig_scale and scale}

    @property
    def writer(self) -> RunWriter:
        return self.recorder.writer

    def updates(self) -> int:
        return self.recorder._n_updates

    def _guard(self, where: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001
            self.recorder._problem(where, exc)

    # -- hooks
    def _on_scale(self, outputs, scaled) -> None:
        torch = _t()
        if isinstance(outputs, torch.Tensor) and outputs.numel() == 1 and outputs.requires_grad \
                and len(self._losses) < 64:
            self._losses.append(outputs.detach().reshape(()))
            if len(self._scaled) > 64:
                self._scaled.clear()
            self._scaled.add(id(scaled))

    def _on_backward(self, tensor) -> None:
        try:
            if self._closed or tensor.numel() != 1 or not tensor.requires_grad:
                return
            if self._scaled and id(tensor) in self._scaled:
                self._scaled.discard(id(tensor))
                return
            if len(self._losses) < 64:  # bounded when nothing steps (a hand-written update without torch.optim)
                self._losses.append(tensor.detach().reshape(()))
        except Exception as exc:  # noqa: BLE001
            self.recorder._problem("backward", exc)

    def _index(self, opt) -> int:
        k = self._opts.get(id(opt))
        if k is None or self._refs.get(id(opt)) is None or self._refs[id(opt)]() is not opt:
            k = len(self._opts)
            self._opts[id(opt)] = k
            self._refs[id(opt)] = weakref.ref(opt)
        return k

    def _pre(self, opt, args, kwargs) -> None:
        if self._closed:
            return
        if _has_closure(args, kwargs):
            self._deferred.add(id(opt))  # the closure computes gradients and loss inside step(): read them after
            return
        self._guard("optimizer step", self._pre_step, opt, True)

    def _pre_step(self, opt, snapshot: bool) -> None:
        rec = self.recorder
        k = self._index(opt)
        if self._primary is None:
            self._make_primary(opt, first=True)
        elif id(opt) != self._primary:
            self._idle = self._idle + 1 if id(opt) == self._idle_opt else 1
            self._idle_opt = id(opt)
            if self._idle >= self.SWITCH_AFTER:
                self._make_primary(opt, first=False)
        primary = id(opt) == self._primary
        if primary:
            self._idle = 0
        losses, self._losses = self._losses, []  # back-propagated for this step, whichever optimizer takes it
        step = rec._n_updates
        if step % rec.every:
            return
        rec._before_update(opt, step, "" if primary else f"/opt{k}", snapshot=snapshot)
        if losses:
            torch = _t()
            loss = losses[0] if len(losses) == 1 else torch.stack([x.to(losses[0].device) for x in losses]).mean()
            if primary:
                rec._add(step, loss, None, None, {})
            else:
                rec._add(step, None, None, None, {f"loss/opt{k}": loss})

    def _make_primary(self, opt, first: bool) -> None:
        rec = self.recorder
        self._primary = id(opt)
        self._idle = 0
        rec.optimizer = opt
        facts = _optimizer_facts(opt)
        model = _find_model(opt)
        if model is not None:
            rec.model = model
            rec._layer_of = {}
            facts.update(_model_facts(model))
        if not first:
            switches = list(rec.writer.meta.get("optimizer_switches", []))
            switches.append({"step": rec._n_updates, "optimizer": type(opt).__name__})
            facts["optimizer_switches"] = switches
        rec.writer.write_meta(**facts)

    def _post(self, opt, args, kwargs) -> None:
        if self._closed:
            return
        if id(opt) in self._deferred:
            self._deferred.discard(id(opt))
            self._guard("optimizer step", self._pre_step, opt, False)
        if id(opt) != self._primary:
            return
        rec = self.recorder
        self._guard("optimizer step", rec._after_update, opt, rec._n_updates)
        rec._n_updates += 1

    def _loader_exhausted(self, start: int) -> None:
        if self._closed or self.updates() <= start:
            return  # no training step while it was iterated: an evaluation loader
        self._guard("epoch end", self.recorder.epoch_end)

    # -- the end
    def close(self) -> None:
        """Undo every patch and hook, and flush what was recorded."""
        if self._closed:
            return
        self._closed = True
        torch = _t()
        for h in self._handles:
            h.remove()
        if torch.Tensor.backward is self._patched["backward"]:
            torch.Tensor.backward = self._saved["backward"]
        if torch.utils.data.DataLoader.__iter__ is self._patched["dl_iter"]:
            torch.utils.data.DataLoader.__iter__ = self._saved["dl_iter"]
        if self._patched["scale"] is not None and torch.amp.GradScaler.scale is self._patched["scale"]:
            torch.amp.GradScaler.scale = self._saved["scale"]
        _clip_unlisten(self.recorder._on_clip)
        _ACTIVE.pop("hooks", None)
        self.recorder.close(verdict=False)

    def final(self):
        """``close()``, then the diagnosis printed (when live) and returned."""
        self.close()
        from .live import LiveExplainer

        rec = self.recorder
        if rec.writer.broken is not None:
            return None
        if rec.live is None:
            from ..diagnosis import diagnose
            from ..errors import WhyspikeError
            from ..importers import load_run

            try:
                return diagnose(load_run(rec.writer.path))
            except WhyspikeError:
                return None
        return (rec.live or LiveExplainer(rec.writer)).final()

    def __enter__(self) -> GlobalHooks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _EpochIter:
    """A DataLoader iterator that tells the global hooks when it runs out (an epoch boundary)."""

    def __init__(self, it, hooks: GlobalHooks):
        self._it = it
        self._hooks = hooks
        self._start = hooks.updates()
        self._done = False

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._it)
        except StopIteration:
            if not self._done:
                self._done = True
                self._hooks._loader_exhausted(self._start)
            raise

    def __len__(self) -> int:
        return len(self._it)

    def __getattr__(self, name):
        if name in ("_it", "_hooks", "_start", "_done"):
            raise AttributeError(name)
        return getattr(self._it, name)


def _find_model(opt):
    """The smallest module holding all of ``opt``'s parameters (outermost among equals), or None."""
    torch = _t()
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    module_type = torch.nn.Module
    best, best_key = None, None
    for obj in gc.get_objects():
        if not issubclass(type(obj), module_type):  # type(): no __getattr__ side effects on odd objects
            continue
        try:
            own = [p for p in obj.parameters()]
        except Exception:  # noqa: BLE001
            continue
        cover = sum(1 for p in own if id(p) in ids)
        if not cover:
            continue
        key = (-cover, len(own) - cover, -sum(1 for _ in obj.modules()))
        if best_key is None or key < best_key:
            best, best_key = obj, key
    return best


_ACTIVE: dict[str, GlobalHooks] = {}


def install_global_hooks(writer: RunWriter, live: bool = True, *, tier: str = "default", flush_every: int = 200,
                         checkpoints: int = 3, out: TextIO | None = None) -> GlobalHooks:
    """Hook every PyTorch optimizer, ``Tensor.backward``, ``clip_grad_norm_`` and ``DataLoader`` iteration so an
    unchanged script is recorded into ``writer`` (see :class:`GlobalHooks` for what is read and how). Returns the
    handle; ``handle.close()`` restores torch exactly as it was, ``handle.final()`` also prints the diagnosis."""
    if "hooks" in _ACTIVE:
        raise UsageError("whyspike's global PyTorch hooks are already installed: close() the first handle before "
                         "installing them again")
    handle = GlobalHooks(writer, live=live, tier=tier, flush_every=flush_every, checkpoints=checkpoints, out=out)
    _ACTIVE["hooks"] = handle
    return handle


__all__ = ["GlobalHooks", "Recorder", "install_global_hooks", "load_checkpoint", "new_run_dir"]

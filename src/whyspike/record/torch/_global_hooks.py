"""The global hooks behind ``whyspike run``: every optimizer, ``Tensor.backward``, ``clip_grad_norm_`` and
``DataLoader`` iteration, recorded without any change to the script."""

from __future__ import annotations

import functools
import gc
import weakref
from typing import Any, TextIO

from ...errors import UsageError
from ..store import RunWriter
from ._facts import _model_facts, _optimizer_facts
from ._gradnorm import _clip_listen, _clip_unlisten
from ._recorder import Recorder, _has_closure
from ._support import _t


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
    - ``intervene`` (a :class:`~whyspike.record.torch._intervene_torch.TorchIntervention`, from ``WHYSPIKE_INTERVENE``)
      writes its values into every optimizer's groups before the step is recorded and taken, and puts the user's
      back after it; its :class:`InterventionError` stops the script (the rest of these hooks never raise).
    """

    SWITCH_AFTER = 3

    def __init__(self, writer: RunWriter, *, live: bool = True, tier: str = "default", flush_every: int | None = None,
                 checkpoints: int = 3, out: TextIO | None = None, intervene=None):
        torch = _t()
        self._intervene = intervene if intervene is not None and intervene.active else None
        self._loaders = 0  # DataLoader iterations begun (lr.shift / lr.hold need epochs)
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
            hooks._loaders += 1
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
        if self._intervene is not None:  # before the recorder reads the group: it records the applied values
            self._intervene.before_step(opt, self._loaders > 0)
        if _has_closure(opt, args, kwargs):
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
        if id(opt) == self._primary:
            rec = self.recorder
            self._guard("optimizer step", rec._after_update, opt, rec._n_updates)
            rec._n_updates += 1
        if self._intervene is not None:
            self._guard("intervention", self._intervene.after_step, opt)

    def _loader_exhausted(self, start: int) -> None:
        if self._closed or self.updates() <= start:
            return  # no training step while it was iterated: an evaluation loader
        if self._intervene is not None:
            self._guard("intervention", self._intervene.epoch_end)
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
        if self._intervene is not None:  # what was done, as the Keras path notes it
            self._guard("intervention", lambda: self.writer.write_meta(probe=self._intervene.note()))
        self.recorder.close(verdict=False)

    def final(self):
        """``close()``, then the diagnosis printed (when live) and returned."""
        self.close()
        from ..live import LiveExplainer

        rec = self.recorder
        if rec.writer.broken is not None:
            return None
        if rec.live is None:
            from ...diagnosis import diagnose
            from ...errors import WhyspikeError
            from ...importers import load_run

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


def install_global_hooks(writer: RunWriter, live: bool = True, *, tier: str = "default", flush_every: int | None = None,
                         checkpoints: int = 3, out: TextIO | None = None, intervene=None) -> GlobalHooks:
    """Hook every PyTorch optimizer, ``Tensor.backward``, ``clip_grad_norm_`` and ``DataLoader`` iteration so an
    unchanged script is recorded into ``writer`` (see :class:`GlobalHooks` for what is read and how). Returns the
    handle; ``handle.close()`` restores torch exactly as it was, ``handle.final()`` also prints the diagnosis.
    ``intervene``: a :class:`~whyspike.record.torch._intervene_torch.TorchIntervention` applied around each step."""
    if "hooks" in _ACTIVE:
        raise UsageError("whyspike's global PyTorch hooks are already installed: close() the first handle before "
                         "installing them again")
    handle = GlobalHooks(writer, live=live, tier=tier, flush_every=flush_every, checkpoints=checkpoints, out=out,
                         intervene=intervene)
    _ACTIVE["hooks"] = handle
    return handle

"""The global gradient norm before clipping: read in the optimizer's step pre-hook, or taken from the
``clip_grad_norm_`` call that preceded the step (the wrapper below, shared by every open recorder)."""

from __future__ import annotations

import functools
import operator
import weakref
from typing import Any, Callable

from ._facts import _json_safe
from ._hyper import OptimizerView
from ._stepbuffer import NormParts
from ._support import _guarded, _t


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


# ---------------------------------------------------------------------------------- the recorder's side

# more parameter tensors than this: their norms are stacked at once into one vector per step (one op), rather than
# kept as separate 0-d tensors until the drain (bounds the number of small device buffers held between flushes)
_STACK_ABOVE = 64
_GRAD = operator.attrgetter("grad")


class _GradNormMixin:
    """Per optimizer (an :class:`OptimizerView`, cached): the norm of its gradients, the pre-clip norm pending."""

    _views: dict[int, OptimizerView]
    _pending_clip: dict[int, Any]

    def _view(self, opt) -> OptimizerView:
        view = self._views.get(id(opt))
        if view is None or not view.current(opt):
            view = self._views[id(opt)] = OptimizerView(opt)
        return view

    def _params_of(self, opt) -> list:
        return self._view(opt).params

    @staticmethod
    def _grad_norm(view: OptimizerView):
        """The global gradient norm, left for the drain to combine when it can (:class:`NormParts`): one
        ``torch._foreach_norm`` per step and nothing else, no synchronisation."""
        grads = [g for g in map(_GRAD, view.params) if g is not None]  # .grad read once per parameter
        if not grads:
            return None
        if view.fast_norm:
            torch = _t()
            try:
                norms = torch._foreach_norm(grads)
                return NormParts(norms if len(norms) <= _STACK_ABOVE else torch.stack(norms))
            except (RuntimeError, AttributeError, NotImplementedError):  # sparse gradients, an old torch
                view.fast_norm = False
        return _total_norm(grads)

    @_guarded()
    def _on_clip(self, parameters, norm, max_norm) -> None:
        """``clip_grad_norm_`` ran: its pre-clip norm is the one the coming step of the optimizer owning these
        parameters should record (matched by the first parameter)."""
        if not parameters:
            return
        self._pending_clip[id(parameters[0])] = norm
        if "grad_clip_max_norm" not in self.writer.meta:
            self.writer.write_meta(grad_clip_max_norm=_json_safe(max_norm))

    def _take_clip(self, view: OptimizerView):
        ids = view.ids
        for pid in list(self._pending_clip):
            if pid in ids:
                return self._pending_clip.pop(pid)
        return None

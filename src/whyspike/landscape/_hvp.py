"""The model as a function of its trainable parameters: loss, gradient and Hessian-vector products, evaluated in place.

Every landscape measurement moves one model through parameter space. Re-creating a module per point would cost a
constructor and a state-dict copy each time; instead :class:`ModelLoss` writes flat parameter vectors into the
model's own tensors under ``torch.no_grad`` (the torch ``nn.Parameter`` objects, or for a Keras 3 model on the torch
backend the ``torch.nn.Parameter`` behind each ``keras.Variable``: Keras layers read ``variable.value``, so
``torch.func.functional_call`` would not reach them, but an in-place copy does).

Two modes, stated in every result:

- **curvature** (gradients, Hessian-vector products, noise scale): BatchNorm in train mode, i.e. normalised with
  the batch's own statistics as during training, so the Hessian is that of the loss the optimizer descended. The
  running statistics are *not* updated: every buffer (and Keras non-trainable variable) is saved on entry and
  written back on exit (and PyTorch ``BatchNorm1d/2d/3d`` run a composite form of the same function, whose double
  backward is cheaper: see ``_batch_stat_norm``). Dropout is switched off (a random mask would make ``H v`` a different matrix at every
  product, which Lanczos cannot use).
- **evaluation** (interpolation, surfaces): ``model.eval()`` / ``training=False``, the mode the logged validation
  metrics were measured in.

The loss convention is PyTorch's: ``loss_fn(output, target)`` returns the mean over the batch (``F.cross_entropy``,
``nn.MSELoss()``); a ``keras.losses.Loss`` is called as Keras wants it, ``loss(y_true, y_pred)``. The loss over
several batches is the size-weighted mean of the batch losses, i.e. the mean over all their examples.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, UsageError, require

torch = require("torch", "torch")

CURVATURE_MODE = ("BatchNorm in train mode (batch statistics) with running statistics saved and restored around "
                  "every product (never updated); dropout off")
EVAL_MODE = "evaluation mode (model.eval() / training=False): BatchNorm uses its running statistics"


def is_keras_model(model) -> bool:
    keras = sys.modules.get("keras")
    if keras is None:
        return False
    try:
        return isinstance(model, keras.Model) or isinstance(model, keras.layers.Layer)
    except AttributeError:  # pragma: no cover - a half-imported keras
        return False


def _check_module(model) -> None:
    if isinstance(model, torch.nn.Module):
        return
    if is_keras_model(model):
        keras = sys.modules["keras"]
        raise InputError(None, f"the Keras model runs on the {keras.backend.backend()} backend, which is not PyTorch: "
                         "the landscape is measured with torch autograd",
                         "set KERAS_BACKEND=torch before importing keras (Keras 3 models on the torch backend are "
                         "torch modules)")
    raise InputError(None, f"the model is a {type(model).__name__}, not a torch.nn.Module",
                     "pass a PyTorch module, or a Keras 3 model built with KERAS_BACKEND=torch")


def _to_tensor(a):
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, (tuple, list)):
        return type(a)(_to_tensor(v) for v in a)
    if isinstance(a, dict):
        return {k: _to_tensor(v) for k, v in a.items()}
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        return torch.as_tensor(arr.astype(np.float32, copy=False))
    if arr.dtype.kind in "iub":
        return torch.as_tensor(arr.astype(np.int64, copy=False))
    return torch.as_tensor(arr)


def _n_examples(x) -> int:
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.dim() else 1
    if isinstance(x, (tuple, list)) and x:
        return _n_examples(x[0])
    if isinstance(x, dict) and x:
        return _n_examples(next(iter(x.values())))
    return 1


Batch = tuple  # (inputs, targets)


def as_batches(batches, what: str = "train_batches") -> list[Batch]:
    """A list of ``(inputs, targets)`` pairs of tensors from a list/iterable of pairs (a DataLoader is read once),
    or from one ``(x, y)`` pair of whole arrays."""
    if batches is None:
        return []
    if isinstance(batches, tuple) and len(batches) == 2 and not isinstance(batches[0], (tuple, list)):
        batches = [batches]
    out = []
    for i, b in enumerate(batches):
        if not isinstance(b, (tuple, list)) or len(b) < 2:
            raise InputError(None, f"{what}[{i}] is a {type(b).__name__}, not an (inputs, targets) pair",
                             "give a list of (x, y) batches (a DataLoader works)")
        out.append((_to_tensor(b[0]), _to_tensor(b[1])))
    return out


def _adapt_loss(loss_fn):
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(loss_fn, keras.losses.Loss):
        return lambda output, target: loss_fn(target, output)
    if not callable(loss_fn):
        raise InputError(None, f"the loss is a {type(loss_fn).__name__}, not a function",
                         "pass loss_fn(output, target) returning the batch-mean loss, e.g. F.cross_entropy")
    return loss_fn


def accuracy_hits(output, target) -> int | None:
    """Correct predictions in a classification batch (argmax over the last axis), None when it is not one."""
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor) or output.dim() < 2 \
            or output.shape[-1] < 2:
        return None
    pred = output.argmax(-1)
    if target.shape == output.shape and target.is_floating_point():  # one-hot / soft labels
        target = target.argmax(-1)
    if target.shape != pred.shape or target.is_floating_point():
        return None
    return int((pred == target).sum())


@dataclass
class Evaluation:
    loss: float
    accuracy: float | None
    examples: int


class ModelLoss:
    """``model`` + ``loss_fn`` + ``batches`` as a function of the flat vector of trainable parameters.

        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> model = torch.nn.Linear(3, 1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> ml = ModelLoss(model, torch.nn.functional.mse_loss, [(x, y)])
        >>> ml.n                                       # 3 weights + 1 bias
        4
        >>> hv = ml.hvp(torch.tensor([1.0, 0, 0, 0]))  # H e_0 of a least-squares loss: 2/8 * X^T x_0 (+ bias row)
        >>> bool(torch.allclose(hv[:3], 2 * (x.T @ x[:, 0]) / 8, atol=1e-5))
        True
    """

    def __init__(self, model, loss_fn: Callable, batches=None, val_batches=None):
        _check_module(model)
        self.model = model
        self.framework = "keras" if is_keras_model(model) else "torch"
        self.loss_fn = _adapt_loss(loss_fn)
        self.batches = as_batches(batches)
        self.val_batches = as_batches(val_batches, "val_batches")
        if self.framework == "keras":
            self.names = [w.path for w in model.trainable_weights]
            self.params = [w.value for w in model.trainable_weights]
            self.state_names = [w.path for w in model.non_trainable_weights]
            self._state = [w.value for w in model.non_trainable_weights]
            self.has_batchnorm = any(type(layer).__name__ == "BatchNormalization" for layer in _keras_layers(model))
        else:
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            self.names = [n for n, _ in named]
            self.params = [p for _, p in named]
            state = list(model.named_buffers()) + [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
            self.state_names = [n for n, _ in state]
            self._state = [t for _, t in state]
            self.has_batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if not self.params:
            raise InputError(None, f"the model ({type(model).__name__}) has no trainable parameters",
                             "pass the model whose training is being explained")
        self.shapes = [tuple(p.shape) for p in self.params]
        self.sizes = [int(p.numel()) for p in self.params]
        self.n = int(sum(self.sizes))
        self.dtype = self.params[0].dtype
        self.forward_passes = 0  # batches pushed through the model, for cost accounting

    # -- parameters -------------------------------------------------------------------------------------------
    def get_flat(self):
        """A copy of the trainable parameters as one flat vector."""
        with torch.no_grad():
            return torch.cat([p.detach().reshape(-1) for p in self.params])

    def set_flat(self, vec) -> None:
        """Write a flat vector into the model's parameters, in place."""
        if vec.numel() != self.n:
            raise UsageError(f"a parameter vector of {vec.numel()} values was given to a model of {self.n}")
        with torch.no_grad():
            for p, chunk in zip(self.params, torch.split(vec, self.sizes)):
                p.copy_(chunk.view(p.shape))

    def split(self, vec) -> list:
        return [c.view(s) for c, s in zip(torch.split(vec, self.sizes), self.shapes)]

    def get_state(self) -> list:
        """Copies of the non-trainable state (BatchNorm running statistics, ...)."""
        with torch.no_grad():
            return [s.detach().clone() for s in self._state]

    def set_state(self, values) -> None:
        """Write the non-trainable state back; tensors already equal are left alone (an in-place write would bump
        their version counter and break autograd graphs that saved them, e.g. an eval-mode graph of the caller)."""
        with torch.no_grad():
            for s, v in zip(self._state, values):
                if not torch.equal(s, v):
                    s.copy_(v)

    # -- modes ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def curvature_mode(self):
        """Train-mode BatchNorm, dropout off, running statistics restored on exit (see the module docstring)."""
        saved = self.get_state()
        if self.framework == "keras":
            undo = _keras_dropout_off(self.model)
            self._training = True
            try:
                yield self
            finally:
                self._training = None
                undo()
                self.set_state(saved)
            return
        flags = [(m, m.training) for m in self.model.modules()]
        self.model.train()
        swapped = []
        for m in self.model.modules():
            if isinstance(m, (torch.nn.modules.dropout._DropoutNd, torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout)):
                m.eval()
            elif type(m) in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d):
                swapped.append((m, m.__dict__.get("forward")))
                m.forward = types.MethodType(_batch_stat_norm, m)
        try:
            yield self
        finally:
            for m, f in flags:
                m.training = f
            for m, fwd in swapped:
                if fwd is None:
                    del m.forward
                else:
                    m.forward = fwd
            self.set_state(saved)

    @contextlib.contextmanager
    def eval_mode(self):
        if self.framework == "keras":
            self._training = False
            try:
                yield self
            finally:
                self._training = None
            return
        flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            yield self
        finally:
            for m, f in flags:
                m.training = f

    _training: bool | None = None

    def forward(self, x):
        self.forward_passes += 1
        if self.framework == "keras":
            return self.model(x, training=bool(self._training))
        if isinstance(x, dict):
            return self.model(**x)
        if isinstance(x, (tuple, list)):
            return self.model(*x)
        return self.model(x)

    def batch_loss(self, batch):
        x, y = batch
        out = self.forward(x)
        loss = self.loss_fn(out, y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise InputError(None, f"the loss function returned {type(loss).__name__} "
                             f"{tuple(getattr(loss, 'shape', ()))}, not one number",
                             "the loss must reduce to the batch mean (reduction='mean')")
        return loss.reshape(()), out

    # -- values -----------------------------------------------------------------------------------------------
    def _weights(self, batches):
        sizes = np.array([_n_examples(b[1]) for b in batches], dtype=float)
        return sizes / sizes.sum()

    def evaluate(self, batches: Sequence[Batch] | None = None) -> Evaluation:
        """Loss and accuracy at the current parameters, in evaluation mode, over ``batches`` (default: train)."""
        batches = self.batches if batches is None else batches
        if not batches:
            return Evaluation(float("nan"), None, 0)
        total, hits, n, acc_ok = 0.0, 0, 0, True
        with torch.no_grad(), self.eval_mode():
            for b in batches:
                loss, out = self.batch_loss(b)
                m = _n_examples(b[1])
                total += float(loss) * m
                n += m
                h = accuracy_hits(out, b[1])
                if h is None:
                    acc_ok = False
                else:
                    hits += h
        return Evaluation(total / n, hits / n if acc_ok else None, n)

    def loss_and_grad(self, batches: Sequence[Batch] | None = None):
        """(loss, flat gradient) in curvature mode over ``batches`` (default: train)."""
        batches = self.batches if batches is None else batches
        self._need(batches)
        g = torch.zeros(self.n, dtype=self.dtype)
        total = 0.0
        with self.curvature_mode():
            for w, b in zip(self._weights(batches), batches):
                loss, _ = self.batch_loss(b)
                grads = torch.autograd.grad(loss, self.params, allow_unused=True)
                g += float(w) * _flat(grads, self.params)
                total += float(w) * float(loss.detach())
        return total, g

    def batch_gradients(self, batches: Sequence[Batch] | None = None) -> Iterable:
        """(examples, loss, flat gradient) per batch, in curvature mode."""
        batches = self.batches if batches is None else batches
        self._need(batches)
        with self.curvature_mode():
            for b in batches:
                loss, _ = self.batch_loss(b)
                grads = torch.autograd.grad(loss, self.params, allow_unused=True)
                yield _n_examples(b[1]), float(loss.detach()), _flat(grads, self.params)

    def hessian(self, batches: Sequence[Batch] | None = None, reuse_graph: bool | None = None) -> "HessianOperator":
        """The Hessian of the loss over ``batches`` as an operator ``H(v)`` on flat vectors (a context manager)."""
        batches = self.batches if batches is None else batches
        self._need(batches)
        return HessianOperator(self, batches, reuse_graph)

    def hvp(self, v, batches=None):
        with self.hessian(batches) as h:
            return h(v)

    def _need(self, batches) -> None:
        if not batches:
            raise InputError(None, "no training batches were given: the loss, its gradient and its curvature need data",
                             "pass train_batches (a list of (x, y) pairs)")


def _flat(grads, params):
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


class HessianOperator:
    """``H v`` for flat ``v`` by double backward (Pearlmutter's trick through autograd), in curvature mode.

    With ``reuse_graph`` (the default for up to 4 batches) the gradient graph of each batch is built once with
    ``create_graph=True`` and every product is one backward pass through it; otherwise every product recomputes the
    forward and backward pass (memory of one batch at a time). ``count`` is the number of products taken.
    """

    def __init__(self, ml: ModelLoss, batches, reuse_graph: bool | None):
        self.ml, self.batches = ml, list(batches)
        self.weights = ml._weights(self.batches)
        self.reuse = len(self.batches) <= 4 if reuse_graph is None else bool(reuse_graph)
        self.count = 0
        self._mode = None
        self._grads: list | None = None
        self.n = ml.n

    def __enter__(self):
        self._mode = self.ml.curvature_mode()
        self._mode.__enter__()
        if self.reuse:
            self._grads = []
            for b in self.batches:
                loss, _ = self.ml.batch_loss(b)
                self._grads.append(torch.autograd.grad(loss, self.ml.params, create_graph=True, allow_unused=True))
        return self

    def __exit__(self, *exc):
        self._grads = None
        mode, self._mode = self._mode, None
        if mode is not None:
            mode.__exit__(*exc)
        return False

    def __call__(self, v):
        ml = self.ml
        vs = ml.split(v.to(ml.dtype))
        out = torch.zeros(ml.n, dtype=ml.dtype)
        for i, (w, b) in enumerate(zip(self.weights, self.batches)):
            if self.reuse:
                grads = self._grads[i]
            else:
                loss, _ = ml.batch_loss(b)
                grads = torch.autograd.grad(loss, ml.params, create_graph=True, allow_unused=True)
            used = [(g, p, u) for g, p, u in zip(grads, ml.params, vs) if g is not None and g.requires_grad]
            if not used:
                continue  # a loss linear in every parameter: H = 0
            hv = torch.autograd.grad([g for g, _, _ in used], ml.params, grad_outputs=[u for _, _, u in used],
                                     retain_graph=self.reuse, allow_unused=True)
            out += float(w) * _flat(hv, ml.params)
        self.count += 1
        return out.detach()


def _batch_stat_norm(self, x):
    """BatchNorm's train-mode output from the batch's own statistics, written with plain tensor ops.

    The same function as ``F.batch_norm(training=True)`` (biased variance, ``eps`` inside the square root) without
    the running-statistics update; PyTorch's fused batch-norm backward has a double backward made of many
    full-size products, and this composite form's double backward was measured 1.5-2x cheaper on a conv+BN
    network, bringing a Hessian-vector product from ~3x to ~1.5x the cost of a gradient."""
    if not self.training and self.track_running_stats:  # a layer the model itself puts in eval mode (frozen BN)
        return type(self).forward(self, x)
    dims = [0] + list(range(2, x.dim()))
    var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
    scale = torch.rsqrt(var + self.eps)
    shape = [1, -1] + [1] * (x.dim() - 2)
    if self.weight is not None:
        scale = scale * self.weight.view(shape)
    out = (x - mean) * scale
    return out + self.bias.view(shape) if self.bias is not None else out


def _keras_layers(model) -> list:
    try:
        return list(model._flatten_layers(include_self=False, recursive=True))
    except (AttributeError, TypeError):  # pragma: no cover - older Keras
        return list(getattr(model, "layers", []))


def _keras_dropout_off(model) -> Callable[[], None]:
    """Set every Keras dropout/noise layer's rate to 0; returns the function that puts them back."""
    changed = []
    for layer in _keras_layers(model):
        for attr in ("rate", "stddev"):
            if ("Dropout" in type(layer).__name__ or "Noise" in type(layer).__name__) and \
                    isinstance(getattr(layer, attr, None), (int, float)) and getattr(layer, attr) > 0:
                changed.append((layer, attr, getattr(layer, attr)))
                setattr(layer, attr, 0.0)

    def undo() -> None:
        for layer, attr, v in changed:
            setattr(layer, attr, v)

    return undo

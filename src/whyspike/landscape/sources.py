"""Where the landscape's points come from: a run directory's checkpoints, and the model and data to evaluate them.

A run directory written by a whyspike recorder holds ``checkpoints/epoch-NNNN/`` with either ``state.pt``
(PyTorch, loaded with ``weights_only=True``) or ``model.npz`` + ``optimizer.npz`` + ``manifest.json`` (Keras).
It does not hold the architecture nor the data, except where the recorder stored them:

- ``model.json`` (Keras: ``model.to_json()``) rebuilds a Keras model;
- ``probe_data/x.npy`` and ``probe_data/y.npy``: a sample of the training data.

Anything missing comes from a *factory*: ``FILE.py:FUNC`` where ``FUNC()`` returns ``(model, loss_fn)``,
``(model, loss_fn, train_batches)`` or ``(model, loss_fn, train_batches, val_batches)``; batches are lists of
``(x, y)`` pairs (a DataLoader works). The checkpoint parameters are matched to the model's by name (PyTorch) or by
order (Keras, as ``whyspike.record.keras.load_checkpoint`` does); the first mismatch is a one-line
:class:`~whyspike.errors.InputError` naming the checkpoint and the parameter.

Optimizer state read from each checkpoint (:class:`OptimizerInfo`) gives the learning rate in force when the
checkpoint was written (for the steps that follow it), momentum, and Adam's second moments for the preconditioned
sharpness. PyTorch optimizer state is matched to the model's trainable parameters in order, which holds for an
optimizer built on ``model.parameters()``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UsageError, require
from ._hvp import ModelLoss, as_batches

torch = require("torch", "torch")

_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


@dataclass
class Checkpoint:
    epoch: int
    path: Path
    format: str  # "torch" | "keras"
    step: int | None = None

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "path": str(self.path)}


@dataclass
class OptimizerInfo:
    """What the optimizer state of a checkpoint says about the next steps' stability.

    ``threshold()`` is the largest curvature the update is stable for on a quadratic: 2/η for gradient descent,
    (2+2β)/((1−d)η) for heavy-ball momentum β with dampening d, (2+2β)/((1+2β)η) for Nesterov (Cohen et al. 2021);
    for Adam it applies to the *preconditioned* Hessian P⁻¹H with P = (1−β₁ᵗ)(√v̂ + ε): (2+2β₁)/((1−β₁)η), i.e.
    38/η for β₁ = 0.9 (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge of Stability"); RMSprop is the
    β₁ = 0 case, 2/η on P⁻¹H with P = √v + ε.
    """

    kind: str  # "sgd" | "adam" | "rmsprop" | "other"
    name: str
    lr: float | None
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    beta1: float = 0.0
    beta2: float = 0.0
    eps: float = 0.0
    step: int = 0
    second_moment: object = None  # flat tensor v (model parameter order) or None
    eps_scale: float = 1.0  # Keras Adam adds eps to sqrt(v) before the bias correction: eps / sqrt(1 - beta2^t)
    notes: list[str] = field(default_factory=list)

    @property
    def preconditioned(self) -> bool:
        return self.kind in ("adam", "rmsprop")

    def threshold(self) -> tuple[float | None, str]:
        lr = self.lr
        if lr is None or not lr > 0:
            return None, "unknown learning rate"
        if self.kind == "adam":
            b = self.beta1
            return (2 + 2 * b) / ((1 - b) * lr), f"(2+2*beta1)/((1-beta1)*lr) on P^-1 H (= {(2 + 2 * b) / (1 - b):.4g}/lr)"
        if self.kind == "rmsprop":
            return 2 / lr, "2/lr on P^-1 H"
        b = self.momentum
        if b and self.nesterov:
            return (2 + 2 * b) / ((1 + 2 * b) * lr), f"(2+2*m)/((1+2*m)*lr), Nesterov momentum m={b:g}"
        if b:
            return (2 + 2 * b) / ((1 - self.dampening) * lr), f"(2+2*m)/lr, heavy-ball momentum m={b:g}"
        return 2 / lr, "2/lr"

    def preconditioner(self):
        """The diagonal P of the update η P⁻¹ m (flat, model parameter order), or None."""
        v = self.second_moment
        if v is None or not self.preconditioned:
            return None
        if self.kind == "rmsprop":
            return v.sqrt() + self.eps
        t = max(int(self.step), 1)
        vhat = v / (1 - self.beta2**t)
        return (1 - self.beta1**t) * (vhat.sqrt() + self.eps * self.eps_scale)

    def to_dict(self) -> dict:
        thr, rule = self.threshold()
        return {"name": self.name, "kind": self.kind, "lr": self.lr, "momentum": self.momentum or None,
                "beta1": self.beta1 if self.kind == "adam" else None, "step": self.step, "threshold": thr,
                "threshold_rule": rule}


@dataclass
class CheckpointState:
    checkpoint: Checkpoint
    params: object  # flat tensor
    state: list | None
    optimizer: OptimizerInfo | None


def list_checkpoints(run_dir: str | os.PathLike) -> list[Checkpoint]:
    """The complete checkpoints of a run directory, oldest first (``*.tmp`` folders being written are skipped)."""
    root = Path(run_dir) / "checkpoints"
    out = []
    if not root.is_dir():
        return out
    for d in root.iterdir():
        m = _EPOCH_DIR.match(d.name)
        if not m or not d.is_dir():
            continue
        if (d / "state.pt").is_file():
            out.append(Checkpoint(int(m.group(1)), d, "torch"))
        elif (d / "model.npz").is_file() and (d / "manifest.json").is_file():
            step = None
            try:
                step = json.loads((d / "manifest.json").read_text()).get("step")
            except (OSError, ValueError):
                pass
            out.append(Checkpoint(int(m.group(1)), d, "keras", step))
    return sorted(out, key=lambda c: c.epoch)


def _mismatch(ckpt: Checkpoint, problem: str) -> InputError:
    return InputError(ckpt.path, f"{problem}: the checkpoint comes from a different architecture than the model given",
                      "build the recorded model (the factory must return the architecture that was trained)")


def load_state(ckpt: Checkpoint, ml: ModelLoss) -> CheckpointState:
    """The checkpoint's parameters (flat, in ``ml``'s order), non-trainable state and optimizer facts."""
    if ckpt.format == "torch":
        return _load_torch(ckpt, ml)
    return _load_keras(ckpt, ml)


def _load_torch(ckpt: Checkpoint, ml: ModelLoss) -> CheckpointState:
    if ml.framework != "torch":
        raise InputError(ckpt.path, "is a PyTorch checkpoint but the model given is a Keras model",
                         "pass the PyTorch module that was recorded")
    try:
        st = torch.load(ckpt.path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file: any unpickling error
        raise InputError(ckpt.path / "state.pt", f"cannot be read ({type(exc).__name__}: {exc})",
                         "the checkpoint is damaged; use another epoch") from None
    ckpt.step = st.get("step", ckpt.step)
    sd = st.get("model")
    if not isinstance(sd, dict):
        raise InputError(ckpt.path, "holds no model state", "record with a model: Recorder(optimizer, model, ...)")
    flat = []
    for name, shape in zip(ml.names, ml.shapes):
        if name not in sd:
            raise _mismatch(ckpt, f"parameter {name!r} of the model is not in the checkpoint")
        if tuple(sd[name].shape) != shape:
            raise _mismatch(ckpt, f"parameter {name!r} has shape {tuple(sd[name].shape)} in the checkpoint but "
                            f"{shape} in the model")
        flat.append(sd[name].reshape(-1).to(ml.dtype))
    extra = [k for k in sd if k not in set(ml.names) | set(ml.state_names)]
    if extra:
        raise _mismatch(ckpt, f"the checkpoint holds {extra[0]!r}, which the model does not have")
    state = []
    for name, t in zip(ml.state_names, ml._state):
        v = sd.get(name)
        if v is None or tuple(v.shape) != tuple(t.shape):
            state = None
            break
        state.append(v)
    return CheckpointState(ckpt, torch.cat(flat), state, _torch_optimizer(st.get("optimizer"), ml))


def _torch_optimizer(osd, ml: ModelLoss) -> OptimizerInfo | None:
    if not isinstance(osd, dict) or not osd.get("param_groups"):
        return None
    groups = osd["param_groups"]
    g = groups[0]
    lr = g.get("lr")
    lr = float(lr) if isinstance(lr, (int, float, torch.Tensor)) else None
    notes = []
    if len({float(x.get("lr", 0) if not isinstance(x.get("lr"), torch.Tensor) else x["lr"]) for x in groups}) > 1:
        notes.append("parameter groups have different learning rates: group 0's is used")
    if "betas" in g:
        b1, b2 = (float(b) for b in g["betas"])
        info = OptimizerInfo("adam", "Adam" if not g.get("decoupled_weight_decay") else "AdamW", lr,
                             beta1=b1, beta2=b2, eps=float(g.get("eps", 1e-8)), notes=notes)
        key = "max_exp_avg_sq" if g.get("amsgrad") else "exp_avg_sq"
    elif "alpha" in g and "centered" in g:
        info = OptimizerInfo("rmsprop", "RMSprop", lr, momentum=float(g.get("momentum", 0.0)),
                             eps=float(g.get("eps", 1e-8)), notes=notes)
        key = "square_avg"
        if g.get("centered") or g.get("momentum"):
            notes.append("centered RMSprop / RMSprop with momentum: the preconditioned threshold ignores them")
    elif "momentum" in g and "dampening" in g:
        return OptimizerInfo("sgd", "SGD", lr, momentum=float(g.get("momentum") or 0.0),
                             dampening=float(g.get("dampening") or 0.0), nesterov=bool(g.get("nesterov")), notes=notes)
    else:
        return OptimizerInfo("other", "optimizer", lr, notes=notes + ["unknown optimizer: 2/lr used as threshold"])
    order = [i for grp in groups for i in grp.get("params", [])]
    states = osd.get("state", {})
    if len(order) != len(ml.params):
        info.notes.append(f"the optimizer holds {len(order)} parameters, the model {len(ml.params)} trainable ones: "
                          "no preconditioned sharpness")
        return info
    vs, step = [], 0
    for idx, p in zip(order, ml.params):
        s = states.get(idx, {})
        v = s.get(key)
        if v is None or tuple(v.shape) != tuple(p.shape):
            info.notes.append("optimizer state missing or shaped unlike the model: no preconditioned sharpness")
            return info
        vs.append(v.reshape(-1).to(torch.float64))
        st = s.get("step", 0)
        step = max(step, int(st.item() if isinstance(st, torch.Tensor) else st))
    info.second_moment, info.step = torch.cat(vs), step
    return info


def _load_keras(ckpt: Checkpoint, ml: ModelLoss) -> CheckpointState:
    if ml.framework != "keras":
        raise InputError(ckpt.path, "is a Keras checkpoint but the model given is a PyTorch module",
                         "pass the Keras model that was recorded (KERAS_BACKEND=torch)")
    try:
        manifest = json.loads((ckpt.path / "manifest.json").read_text())
        with np.load(ckpt.path / "model.npz", allow_pickle=False) as z:
            arrays = [z[f"v{i:05d}"] for i in range(len(manifest["model"]))]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(ckpt.path, f"is not a readable whyspike Keras checkpoint ({exc})",
                         "use another epoch's checkpoint") from None
    ckpt.step = manifest.get("step", ckpt.step)
    weights = list(ml.model.weights)
    if len(weights) != len(arrays):
        raise _mismatch(ckpt, f"the checkpoint holds {len(arrays)} variables, the model {len(weights)}")
    for w, a, entry in zip(weights, arrays, manifest["model"]):
        if tuple(w.shape) != tuple(a.shape):
            raise _mismatch(ckpt, f"variable {entry.get('path', w.path)!r} has shape {tuple(a.shape)} in the checkpoint "
                            f"but {tuple(w.shape)} in the model ({w.path})")
    index = {id(w): i for i, w in enumerate(weights)}
    flat = torch.cat([torch.as_tensor(arrays[index[id(w)]]).reshape(-1).to(ml.dtype) for w in ml.model.trainable_weights])
    state = [torch.as_tensor(arrays[index[id(w)]]) for w in ml.model.non_trainable_weights]
    return CheckpointState(ckpt, flat, state, _keras_optimizer(ckpt, manifest, ml))


def _keras_optimizer(ckpt: Checkpoint, manifest: dict, ml: ModelLoss) -> OptimizerInfo | None:
    entries = manifest.get("optimizer") or []
    if not entries:
        return None
    try:
        with np.load(ckpt.path / "optimizer.npz", allow_pickle=False) as z:
            arrays = {e["path"]: z[f"v{i:05d}"] for i, e in enumerate(entries)}
    except (OSError, ValueError, KeyError):
        return None
    meta = _read_meta(ckpt.path.parent.parent)
    name = str(meta.get("optimizer") or entries[0]["path"].split("/")[0])
    cfg = meta.get("optimizer_config") or {}
    lr = next((float(a) for p, a in arrays.items() if p.endswith("/learning_rate") and a.size == 1), None)
    if lr is None and isinstance(cfg.get("learning_rate"), (int, float)):
        lr = float(cfg["learning_rate"])
    step = next((int(a) for p, a in arrays.items() if p.endswith("/iteration") or p.endswith("/iterations")), 0)
    low = name.lower()
    if low.startswith("adam"):
        info = OptimizerInfo("adam", name, lr, beta1=float(cfg.get("beta_1", 0.9)), beta2=float(cfg.get("beta_2", 0.999)),
                             eps=float(cfg.get("epsilon", 1e-7)), step=step)
        t = max(step, 1)
        info.eps_scale = 1.0 / math.sqrt(1 - info.beta2**t)
        suffix = "_velocity"
    elif low.startswith("rmsprop"):
        info = OptimizerInfo("rmsprop", name, lr, momentum=float(cfg.get("momentum", 0.0)),
                             eps=float(cfg.get("epsilon", 1e-7)), step=step)
        suffix = "_velocity"
    elif low.startswith("sgd"):
        return OptimizerInfo("sgd", name, lr, momentum=float(cfg.get("momentum", 0.0)),
                             nesterov=bool(cfg.get("nesterov", False)), step=step)
    else:
        return OptimizerInfo("other", name, lr, step=step, notes=["unknown optimizer: 2/lr used as threshold"])
    vel = [a for p, a in arrays.items() if p.endswith(suffix)]
    if len(vel) != len(ml.params) or any(tuple(a.shape) != s for a, s in zip(vel, ml.shapes)):
        info.notes.append("optimizer second moments do not match the model's trainable variables: "
                          "no preconditioned sharpness")
        return info
    info.second_moment = torch.cat([torch.as_tensor(a, dtype=torch.float64).reshape(-1) for a in vel])
    return info


def _read_meta(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def apply_state(ml: ModelLoss, cs: CheckpointState) -> None:
    """Put the checkpoint's parameters (and BatchNorm statistics) into the model, in place."""
    ml.set_flat(cs.params)
    if cs.state is not None:
        ml.set_state(cs.state)


# -- model + data ----------------------------------------------------------------------------------------------


@dataclass
class ProbeSetup:
    """The model, loss and data the landscape is measured with, and where each came from."""

    model: object
    loss_fn: object
    train_batches: list
    val_batches: list
    notes: list[str] = field(default_factory=list)


def load_factory(spec: str) -> tuple:
    """Call ``FILE.py:FUNC`` and return what it returned (2 to 4 items)."""
    path, sep, func = spec.rpartition(":")
    if not sep or not path or not func:
        raise UsageError(f"--factory {spec!r}: expected FILE.py:FUNC, e.g. --factory train.py:make")
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--factory {spec!r}: no file {p}")
    name = f"_whyspike_factory_{abs(hash(str(p.resolve())))}"
    mod_spec = importlib.util.spec_from_file_location(name, p)
    if mod_spec is None or mod_spec.loader is None:
        raise UsageError(f"--factory {spec!r}: {p} cannot be imported as Python")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    sys.path.insert(0, str(p.resolve().parent))
    try:
        mod_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: report, never a traceback
        raise InputError(p, f"failed while being imported ({type(exc).__name__}: {exc})", "fix the factory file") from None
    finally:
        sys.path.pop(0)
    fn = getattr(module, func, None)
    if not callable(fn):
        have = ", ".join(n for n in vars(module) if callable(getattr(module, n)) and not n.startswith("_"))
        raise UsageError(f"--factory {spec!r}: {p} has no function {func!r} (functions there: {have or 'none'})")
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001
        raise InputError(p, f"{func}() raised {type(exc).__name__}: {exc}", "fix the factory function") from None
    if not isinstance(out, (tuple, list)) or not 2 <= len(out) <= 4:
        raise InputError(p, f"{func}() returned {type(out).__name__}, not (model, loss_fn[, train_batches"
                         "[, val_batches]])", "return a tuple of 2 to 4 items")
    return tuple(out)


def probe_data(run_dir: Path):
    """The data sample a recorder stored (``probe_data/x.npy``, ``y.npy``), or None."""
    d = Path(run_dir) / "probe_data"
    if not ((d / "x.npy").is_file() and (d / "y.npy").is_file()):
        return None
    try:
        return np.load(d / "x.npy", allow_pickle=False), np.load(d / "y.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(d, f"cannot be read ({exc})", "pass the data through --factory instead") from None


def batches_of(x, y, batch_size: int) -> list:
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def build_setup(run_dir: str | os.PathLike, factory: str | None = None, batch_size: int | None = None) -> ProbeSetup:
    """Model, loss and data for ``run_dir``'s checkpoints: from ``factory`` where given, else from what the recorder
    stored; says exactly what is missing otherwise."""
    run_dir = Path(run_dir)
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise InputError(run_dir, "holds no checkpoints (checkpoints/epoch-NNNN/)",
                         "record the run with checkpoints (Recorder(..., checkpoints=K) / WhyspikeCallback(checkpoints=K))")
    meta = _read_meta(run_dir)
    bs = batch_size or int(meta.get("batch_size") or 128)
    notes: list[str] = []
    model = loss_fn = None
    train = val = None
    if factory:
        out = load_factory(factory)
        model, loss_fn = out[0], out[1]
        train = out[2] if len(out) > 2 else None
        val = out[3] if len(out) > 3 else None
        notes.append(f"model and loss from --factory {factory}")
    fmt = ckpts[-1].format
    if model is None:
        if fmt == "torch":
            raise InputError(run_dir, "holds PyTorch checkpoints but not the model's architecture (PyTorch runs never "
                             "store it)", "pass --factory FILE.py:FUNC where FUNC() returns (model, loss_fn"
                             "[, train_batches[, val_batches]])")
        model, loss_fn = _keras_from_json(run_dir, meta)
        notes.append(f"model rebuilt from {run_dir / 'model.json'}")
    if train is None:
        data = probe_data(run_dir)
        if data is None:
            raise InputError(run_dir, "holds no data sample (probe_data/x.npy and probe_data/y.npy are missing) and the "
                             "factory returned no batches", "pass --factory FILE.py:FUNC returning (model, loss_fn, "
                             "train_batches[, val_batches]), or record with a recorder that stores probe_data")
        train = batches_of(data[0], data[1], bs)
        notes.append(f"training data: the stored sample probe_data/ ({len(data[0])} examples, batches of {bs})")
    return ProbeSetup(model, loss_fn, as_batches(train), as_batches(val, "val_batches"), notes)


def _keras_from_json(run_dir: Path, meta: dict):
    f = run_dir / "model.json"
    if not f.is_file():
        raise InputError(run_dir, "holds Keras checkpoints but no model.json (the architecture)",
                         "pass --factory FILE.py:FUNC where FUNC() returns (model, loss_fn[, train_batches"
                         "[, val_batches]]), or record with a recorder that stores model.json")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = require("keras", "keras")
    if keras.backend.backend() != "torch":
        raise InputError(f, f"Keras runs on the {keras.backend.backend()} backend in this process",
                         "set KERAS_BACKEND=torch")
    try:
        model = keras.models.model_from_json(f.read_text())
    except Exception as exc:  # noqa: BLE001 - user data
        raise InputError(f, f"cannot be rebuilt ({type(exc).__name__}: {exc})", "pass --factory instead") from None
    return model, _keras_loss_guess(model, meta)


def _keras_loss_guess(model, meta: dict):
    """The training loss of a Keras model rebuilt from JSON: meta.json's ``loss`` when recorded, else inferred from
    the last layer (softmax → cross-entropy on probabilities, linear → mean squared error)."""
    keras = sys.modules["keras"]
    name = meta.get("loss")
    if isinstance(name, str):
        try:
            return keras.losses.get(name)
        except (ValueError, TypeError):
            pass
    act = getattr(getattr(model.layers[-1], "activation", None), "__name__", "linear")

    def loss(output, target):
        import torch.nn.functional as F

        if act == "softmax":
            logp = torch.log(output.clamp_min(1e-7))
            return F.nll_loss(logp, target) if not target.is_floating_point() else -(target * logp).sum(-1).mean()
        if act == "sigmoid":
            return F.binary_cross_entropy(output.clamp(1e-7, 1 - 1e-7), target.to(output.dtype).reshape(output.shape))
        return F.mse_loss(output, target.to(output.dtype).reshape(output.shape))

    loss.__doc__ = f"inferred from the last layer's activation ({act})"
    return loss

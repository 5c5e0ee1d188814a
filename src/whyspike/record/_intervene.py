"""Interventions injected into an unchanged Keras script: one factor of the training changed, nothing else.

``whyspike run`` (and the black-box probe engine, which runs each replica through it) reads ``WHYSPIKE_INTERVENE``,
a JSON object of ``NAME: VALUE`` strings — the same ``NAME=VALUE`` vocabulary as ``whyspike probe --intervene`` and
the in-process engine — and applies it when the script seeds its generators and when it calls ``Model.fit``::

    WHYSPIKE_INTERVENE='{"lr.shift": "3", "seed": "0"}' whyspike run train.py

What each name does to a Keras script (Keras 3; the seeds and data order need the torch backend):

- ``seed=N``: every global seed the script sets (``keras.utils.set_random_seed``, ``tf.random.set_seed``,
  ``np.random.seed``, ``random.seed``, ``torch.manual_seed``, called from the script's own code) becomes N, and
  Python's, NumPy's and torch's generators start from N before the script runs (Keras' import does not move them);
  a ``np.random.default_rng(s)`` the script makes is seeded from ``(N, s)`` (unseeded: from N and its rank), so its
  generators stay distinct. Generators seeded elsewhere (``torch.Generator().manual_seed``, an initializer's own
  ``seed=``) are left alone.
- ``seed.data=N``: the order in which ``fit`` visits the samples in epoch ``e`` is drawn from a generator seeded
  with ``(N, e)`` and nothing else (torch backend); with ``shuffle=fixed``, the one fixed order is drawn from N.
- ``seed.noise=N``: the noise of random layers in epoch ``e`` (unseeded Dropout draws from torch's generator
  after the epoch's order was drawn; layers with their own seed generators, GaussianNoise say, and Keras' global
  one) comes from ``(N, e)``; the data order is untouched.
- ``seed.init=N``: the weights are re-drawn from the model's own initializers with seeds derived from N, at the
  first ``fit`` — only after checking that every weight still equals its initializer's output (else: an error).
  Each ``seed.*`` changes one stream and leaves the script's other seeds as they are; since the streams are keyed
  by epoch, a branch replica with the same ``seed.*`` values replays an unbranched one exactly.
- ``lr.shift=K`` (epochs): LR(t) = LR_orig(max(0, t - K*steps_per_epoch)) (K < 0 advances the schedule);
  ``lr.decay=off``: the LR held at its initial value; ``lr.hold=E``: the LR constant from epoch E on, at its value
  then; ``lr.scale=F``: every LR times F. A ``LearningRateSchedule`` is wrapped; a ``LearningRateScheduler``
  callback gets its epochs shifted / held / scaled; ``ReduceLROnPlateau`` is switched off (decay=off, hold) or
  scaled; a constant LR cannot be shifted, held or un-decayed (an error says so).
- ``momentum=off`` (momentum 0, LR x 1/(1-beta): the same effective step) / ``momentum=V``; ``adam.eps=V``,
  ``adam.beta2=V``; ``wd=off`` / ``wd.scale=F`` (the optimizer's ``weight_decay`` and the layers' L2
  regularizers); ``batch.scale=F`` (fit's batch size x F, LR x F); ``shuffle=fixed|reshuffle``;
  ``bn.momentum=V`` (PyTorch's convention, the weight of the new batch: Keras' momentum becomes 1 - V).
- ``branch=RUN/checkpoints/epoch-NNNN``: the checkpoint loaded into the model and its optimizer before the first
  ``fit``, which then starts at epoch NNNN + 1.
- ``lr.warmup=F``: the ``warmup_steps`` of a Keras schedule that has them (CosineDecay) times F.
- ``skip=K``, ``bn.norm=group``, ``bn.train_mode`` cannot be done from outside ``Model.fit`` (an error says so);
  ``bn.recompute`` is the detailed tier's PreciseBN, read by the probe engine's ``bn_share``.

An intervention the target cannot take (momentum on Adam, no BatchNorm layer, a constant LR to shift) raises
:class:`InterventionError` from ``fit``: the script stops there, and a probe reports that replica's error.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import random as _random
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import InputError, UsageError

ENV_INTERVENE = "WHYSPIKE_INTERVENE"

NAMES = ("seed", "seed.init", "seed.data", "seed.noise", "lr.shift", "lr.decay", "lr.hold", "lr.scale", "lr.warmup",
         "momentum", "adam.eps", "adam.beta2", "wd", "wd.scale", "batch.scale", "shuffle", "bn.momentum", "branch")
# the rest of the probe vocabulary (whyspike.probe.interventions): known, but not possible from outside Model.fit
NOT_BLACK_BOX = {
    "skip": "Model.fit takes whole epochs from its data and cannot leave out single batches — use the in-process "
            "engine (a model / data / optimizer factory) to skip batches",
    "bn.norm": "replacing BatchNorm by GroupNorm means rebuilding the script's model — use the in-process engine",
    "bn.recompute": "it is an evaluation, not a retraining: record the baseline with the detailed tier (detailed=True, "
                    "whyspike run --detailed), whose PreciseBN columns bn_share() reads",
    "bn.train_mode": "the Keras recorder does not evaluate in train mode; the detailed tier's PreciseBN columns "
                     "(bn.recompute) answer the same question",
}
SEED_ONLY = ("seed",)  # works for any script (PyTorch loops too); every other name needs a Keras Model.fit


class InterventionError(UsageError):
    """The training cannot take this intervention (raised from ``Model.fit``; a probe reports it per replica)."""


# ------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Plan:
    """The interventions of one replica, parsed; ``raw`` keeps them as given (``NAME: VALUE`` strings)."""

    raw: dict = field(default_factory=dict)
    seed: int | None = None
    seed_init: int | None = None
    seed_data: int | None = None
    seed_noise: int | None = None
    lr_shift: int = 0
    lr_decay_off: bool = False
    lr_hold: int | None = None
    lr_scale: float = 1.0
    lr_warmup: float | None = None
    momentum: float | str | None = None  # "off" or a value
    adam_eps: float | None = None
    adam_beta2: float | None = None
    wd_off: bool = False
    wd_scale: float | None = None
    batch_scale: float | None = None
    shuffle: str | None = None
    bn_momentum: float | None = None
    branch: Path | None = None

    @property
    def touches_lr_schedule(self) -> bool:
        return bool(self.lr_shift) or self.lr_decay_off or self.lr_hold is not None or self.lr_warmup is not None

    @property
    def needs_fit(self) -> bool:
        return any(k not in SEED_ONLY for k in self.raw)


def parse_interventions(items: Mapping[str, Any]) -> Plan:
    """``{"lr.shift": "+3", "seed": "0"}`` -> :class:`Plan`; a name or value that makes no sense raises
    :class:`UsageError` naming it.

        >>> parse_interventions({"lr.shift": "+3", "momentum": "off"}).lr_shift
        3
    """
    if not isinstance(items, Mapping):
        raise UsageError(f"interventions must be NAME=VALUE pairs (a JSON object), got {type(items).__name__}")
    raw = {str(k).strip(): str(v).strip() for k, v in items.items()}
    unknown = [k for k in raw if k not in NAMES and k not in NOT_BLACK_BOX]
    if unknown:
        raise UsageError(f"unknown intervention {', '.join(map(repr, unknown))} — known: "
                         f"{', '.join(NAMES + tuple(NOT_BLACK_BOX))}")
    for name, why in NOT_BLACK_BOX.items():
        if name in raw:
            given = f"{name}={raw[name]}" if raw[name] else name
            raise UsageError(f"{given} is not possible in a black-box Keras script: {why}")
    kw: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "seed" or name.startswith("seed."):
            kw[name.replace(".", "_")] = _int(name, value, lo=0)
        elif name == "lr.shift":
            kw["lr_shift"] = _int(name, value)
        elif name == "lr.decay":
            _choice(name, value, ("off",))
            kw["lr_decay_off"] = True
        elif name == "lr.hold":
            kw["lr_hold"] = _int(name, value, lo=0)
        elif name == "lr.scale":
            kw["lr_scale"] = _float(name, value, lo=0.0, lo_open=True)
        elif name == "lr.warmup":
            kw["lr_warmup"] = _float(name, value, lo=0.0, lo_open=True)
        elif name == "momentum":
            kw["momentum"] = "off" if value == "off" else _float(name, value, lo=0.0, hi=1.0, hi_open=True)
        elif name == "adam.eps":
            kw["adam_eps"] = _float(name, value, lo=0.0, lo_open=True)
        elif name == "adam.beta2":
            kw["adam_beta2"] = _float(name, value, lo=0.0, hi=1.0, hi_open=True)
        elif name == "wd":
            _choice(name, value, ("off",))
            kw["wd_off"] = True
        elif name == "wd.scale":
            kw["wd_scale"] = _float(name, value, lo=0.0)
        elif name == "batch.scale":
            kw["batch_scale"] = _float(name, value, lo=0.0, lo_open=True)
        elif name == "shuffle":
            kw["shuffle"] = _choice(name, value, ("fixed", "reshuffle"))
        elif name == "bn.momentum":
            kw["bn_momentum"] = _float(name, value, lo=0.0, hi=1.0, lo_open=True)
        elif name == "branch":
            if not value:
                raise UsageError("branch= needs a checkpoint directory: RUN_DIR/checkpoints/epoch-NNNN")
            kw["branch"] = Path(value)
    if "wd" in raw and "wd.scale" in raw:
        raise UsageError("wd=off and wd.scale=F contradict each other: give one")
    if "lr.decay" in raw and ("lr.shift" in raw or "lr.hold" in raw):
        raise UsageError("lr.decay=off leaves no schedule to shift or hold: give lr.decay=off alone")
    return Plan(raw=raw, **kw)


def _int(name: str, value: str, lo: int | None = None) -> int:
    try:
        v = int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a whole number") from None
    if lo is not None and v < lo:
        raise UsageError(f"{name}={value} must be >= {lo}")
    return v


def _float(name: str, value: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> float:
    try:
        v = float(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(v) or (lo is not None and (v < lo or (lo_open and v == lo))) or \
            (hi is not None and (v > hi or (hi_open and v == hi))):
        lo_s = "" if lo is None else f"{lo:g} {'<' if lo_open else '<='} "
        hi_s = "" if hi is None else f" {'<' if hi_open else '<='} {hi:g}"
        raise UsageError(f"{name}={value} is out of range: it needs {lo_s}{name}{hi_s}")
    return v


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UsageError(f"{name}={value!r}: use {' or '.join(f'{name}={a}' for a in allowed)}")
    return value


def plan_from_env(environ: Mapping[str, str] = os.environ) -> Plan | None:
    """The plan in ``WHYSPIKE_INTERVENE`` (None when unset or empty)."""
    text = environ.get(ENV_INTERVENE, "").strip()
    if not text:
        return None
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{ENV_INTERVENE} is not JSON ({exc}) — give an object such as "
                         '{"lr.shift": "3"}') from None
    return parse_interventions(items)


def interventions_env(items: Mapping[str, Any]) -> str:
    """The value of ``WHYSPIKE_INTERVENE`` for these interventions (checked first)."""
    plan = parse_interventions(items)
    return json.dumps(plan.raw, sort_keys=True)


# ------------------------------------------------------------------------------------------ helpers


def derived_seed(*parts: Any) -> int:
    """A 31-bit seed from several values (the seed, a tag, an epoch, ...); stable across runs and machines."""
    digest = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def data_fingerprint(*arrays: Any) -> str | None:
    """A cheap fingerprint of fit's arrays (shape, dtype and up to 256 evenly spaced rows of each): equal data give
    equal fingerprints; None when the data are not arrays (a dataset, a generator)."""
    import numpy as np

    h = hashlib.blake2b(digest_size=12)
    leaves: list[Any] = []

    def walk(a):
        if isinstance(a, dict):
            for k in sorted(a):
                walk(a[k])
        elif isinstance(a, (list, tuple)):
            for v in a:
                walk(v)
        else:
            leaves.append(a)

    for a in arrays:
        walk(a)
    if not leaves:
        return None
    for a in leaves:
        if a is None:
            h.update(b"none")
            continue
        if not hasattr(a, "shape") or not len(getattr(a, "shape", ())):
            return None
        n = int(a.shape[0])
        idx = np.unique(np.linspace(0, n - 1, num=min(n, 256)).astype(np.int64)) if n else np.zeros(0, np.int64)
        rows = _take(a, idx)  # the sampled rows only: a tensor on a GPU is not copied whole
        if hasattr(rows, "detach"):
            rows = rows.detach().cpu().numpy()
        rows = np.ascontiguousarray(np.asarray(rows))
        h.update(repr((tuple(a.shape), str(rows.dtype))).encode())
        h.update(rows.tobytes())
    return h.hexdigest()


def _user_frame(depth: int, roots: tuple[str, ...]) -> bool:
    """Whether the code ``depth`` frames up is the user's own (not an installed library, not whyspike)."""
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:
        return False
    name = frame.f_code.co_filename
    if name.startswith("<"):
        return True  # code typed at a prompt or exec'd from a string: the user's
    try:
        return not str(Path(name).resolve()).startswith(roots)
    except OSError:
        return True


class _ImportDraws:
    """A finder that finds nothing: it notes Python's and NumPy's random states when ``name`` starts to be imported,
    and :meth:`restore` (run once the import is done) puts them back."""

    def __init__(self, name: str, seed: int):
        self.name, self.seed = name, seed
        self.saved: tuple | None = None

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name and self.saved is None:
            np = sys.modules.get("numpy")
            self.saved = (_random.getstate(), np.random.get_state() if np is not None else None)
        return None

    def restore(self, module) -> None:
        if self.saved is None:
            return
        py, npy = self.saved
        _random.setstate(py)
        np = sys.modules.get("numpy")
        if np is not None:
            if npy is not None:
                np.random.set_state(npy)
            else:  # NumPy came in with Keras: as seeded on arrival, before Keras drew from it
                np.random.seed(self.seed)
        if self in sys.meta_path:
            sys.meta_path.remove(self)


# ------------------------------------------------------------------------------------------ the intervener


class Intervener:
    """Applies one :class:`Plan` to the script ``Injection`` runs: seeds at import time, the rest at ``fit``."""

    def __init__(self, plan: Plan, say: Callable[[str], None], library_roots: tuple[str, ...]):
        self.plan = plan
        self._say = say
        self._roots = library_roots
        self._restore: list[Callable[[], None]] = []
        self._fits = 0
        self._optimizers: dict[int, Any] = {}
        self.applied: set[str] = set()
        self.fit_records: list[dict] = []

    # -- seeds, before the script runs
    def install(self, on_import: Callable[[str, Callable[[types.ModuleType], None]], None]) -> None:
        n = self.plan.seed
        if n is None:
            return
        self._patch_seed(_random, "seed", lambda orig: (lambda *a, **k: orig(n)))
        _random.seed(n)
        on_import("numpy", self._seed_numpy)
        on_import("torch", self._seed_torch)
        if "keras" not in sys.modules:
            # importing Keras draws from Python's and NumPy's generators: keep those draws out of the script's
            # stream, so that a replica gets the same numbers whether Keras was imported before it started (a
            # warm probe process) or by the script
            guard = _ImportDraws("keras", n)
            sys.meta_path.insert(0, guard)
            self._restore.append(lambda: sys.meta_path.remove(guard) if guard in sys.meta_path else None)
            on_import("keras", guard.restore)
        on_import("keras", self._seed_keras)
        on_import("tensorflow", self._seed_tensorflow)

    def uninstall(self) -> None:
        while self._restore:
            try:
                self._restore.pop()()
            except Exception:
                pass

    def _patch_seed(self, owner: Any, attr: str, make: Callable[[Callable], Callable]) -> None:
        """Replace ``owner.attr`` by a version that uses the plan's seed when the script itself calls it."""
        orig = getattr(owner, attr, None)
        if orig is None or getattr(orig, "__whyspike_seed__", False):
            return
        replaced = make(orig)
        roots = self._roots

        @functools.wraps(orig)
        def patched(*args, **kwargs):
            if _user_frame(1, roots):
                self.applied.add("seed")
                return replaced(*args, **kwargs)
            return orig(*args, **kwargs)

        patched.__whyspike_seed__ = True
        setattr(owner, attr, patched)
        self._restore.append(lambda: setattr(owner, attr, orig))

    def _seed_numpy(self, np: types.ModuleType) -> None:
        n = self.plan.seed
        if getattr(np, "random", None) is None:
            return
        np.random.seed(n)
        self._patch_seed(np.random, "seed", lambda orig: (lambda *a, **k: orig(n)))

        calls = iter(range(1 << 30))

        def rng(orig):
            # a generator the script makes gets a seed derived from N and its own (or, unseeded, from N and how
            # many it made before): reproducible, and two generators of the script stay two different streams
            def make(seed=None, *a, **k):
                mine = repr(seed) if seed is not None else f"unseeded-{next(calls)}"
                return orig(derived_seed("default_rng", n, mine), *a, **k)
            return make

        self._patch_seed(np.random, "default_rng", rng)

    def _seed_torch(self, torch: types.ModuleType) -> None:
        n = self.plan.seed
        try:
            torch.manual_seed(n)
        except Exception:  # torch still initialising (imported by a library mid-import): it seeds lazily below
            pass
        self._patch_seed(torch, "manual_seed", lambda orig: (lambda *a, **k: orig(n)))
        if hasattr(torch, "random"):
            self._patch_seed(torch.random, "manual_seed", lambda orig: (lambda *a, **k: orig(n)))

    def _seed_keras(self, keras: types.ModuleType) -> None:
        n = self.plan.seed
        for owner in (getattr(keras, "utils", None), _module("keras.src.utils.rng_utils")):
            if owner is not None:
                self._patch_seed(owner, "set_random_seed", lambda orig: (lambda *a, **k: orig(n)))

    def _seed_tensorflow(self, tf: types.ModuleType) -> None:
        if getattr(tf, "__whyspike_standin__", False):
            return  # the stand-in's tf.random.set_seed is keras.utils.set_random_seed, patched already
        n = self.plan.seed
        rnd = getattr(tf, "random", None)
        if rnd is not None:
            self._patch_seed(rnd, "set_seed", lambda orig: (lambda *a, **k: orig(n)))

    # -- fit
    def before_fit(self, model, bound) -> dict:
        """Change ``model`` and the arguments of this ``fit`` call; returns what was done (written to the run's
        meta.json as ``probe``). Raises :class:`InterventionError` when the training cannot take the plan."""
        import keras

        plan = self.plan
        args = bound.arguments
        first = self._fits == 0
        self._fits += 1
        record: dict[str, Any] = {"interventions": dict(plan.raw), "fit_call": self._fits}
        record["data_fingerprint"] = data_fingerprint(args.get("x"), args.get("y"))
        backend = keras.backend.backend()
        needs_torch = [k for k in ("seed.data", "seed.noise") if k in plan.raw and not
                       (k == "seed.data" and plan.shuffle == "fixed")]
        if needs_torch and backend != "torch":
            raise InterventionError(f"{needs_torch[0]} needs Keras' torch backend (this script runs on {backend}): "
                                    "not separable in a black-box Keras script here — use seed=N")
        opt = getattr(model, "optimizer", None)
        callbacks = args.get("callbacks")
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            raise InterventionError("fit(callbacks=...) is not a list: whyspike cannot add the intervention to it")
        callbacks = list(callbacks or [])
        layers = _all_layers(model)

        if first and plan.seed_init is not None:
            if plan.branch is not None:
                raise InterventionError("seed.init with branch=: a branch takes its weights from the checkpoint, "
                                        "so there is no initialisation to change")
            _ensure_built(model, args, "seed.init")
            layers = _all_layers(model)
            self._reinitialise(model, layers, keras)
        if first and plan.branch is not None:
            record["branch"] = self._branch(model, opt, args, bound.signature)
            layers = _all_layers(model)
        fresh_optimizer = opt is None or id(opt) not in self._optimizers
        if opt is not None:
            self._optimizers[id(opt)] = opt  # held: a later fit with the same optimizer is not changed twice
        if fresh_optimizer:
            if plan.momentum is not None:
                self._momentum(opt)
            if plan.adam_eps is not None or plan.adam_beta2 is not None:
                self._adam(opt)
            if plan.wd_off or plan.wd_scale is not None:
                self._weight_decay(opt, layers, keras)
        if plan.bn_momentum is not None:
            bns = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
            if not bns:
                raise InterventionError(f"bn.momentum={plan.raw['bn.momentum']}: the model has no "
                                        "BatchNormalization layer")
            for bn in bns:
                bn.momentum = 1.0 - plan.bn_momentum
            self.applied.add("bn.momentum")
        factor = plan.lr_scale
        if plan.batch_scale is not None:
            factor *= self._batch(args, bound.signature)
        if plan.momentum == "off":
            factor *= self._momentum_off_factor
        if fresh_optimizer:
            schedule = self._learning_rate(opt, callbacks, factor, keras)
        else:
            lr = getattr(opt, "_learning_rate", None)
            schedule = lr if isinstance(lr, _schedule_class(keras)) else None
        if plan.shuffle is not None:
            self._shuffle(args)
        noise = self._noise_generators(layers, keras) if plan.seed_noise is not None else []
        if plan.seed_noise is not None and not noise:
            raise InterventionError(f"seed.noise={plan.seed_noise}: the model has no random layer (Dropout, "
                                    "GaussianNoise, ...): its noise seed changes nothing")
        if plan.seed_data is not None and plan.shuffle != "fixed":
            shuffle = args.get("shuffle", bound.signature.parameters["shuffle"].default
                               if "shuffle" in bound.signature.parameters else True)
            if not shuffle:
                raise InterventionError(f"seed.data={plan.seed_data}: fit(shuffle=False) visits the samples in a "
                                        "fixed order, so the data-order seed changes nothing (add "
                                        "shuffle=reshuffle to draw a new order each epoch)")
        hook = _callback_class(keras)(self, schedule, noise)
        args["callbacks"] = [hook] + callbacks
        for name in plan.raw:
            if name not in ("seed",):
                self.applied.add(name)
        record["applied"] = sorted(self.applied)
        self.fit_records.append(record)
        return record

    def after_fit(self, record: dict, callback) -> None:
        """Note what was done in the run directory's meta.json (under ``probe``)."""
        writer = getattr(callback, "writer", None)
        if writer is None:
            return
        try:
            writer.write_meta(probe=record)
        except Exception as exc:  # the note is a convenience; never break the script for it
            self._say(f"could not note the interventions in {writer.path} ({type(exc).__name__}: {exc})")

    def unapplied(self) -> list[str]:
        """Interventions the script never gave a chance to apply (no Keras fit call, no seed set)."""
        if self._fits:
            return []
        return [k for k in self.plan.raw if k != "seed"]

    # -- the parts
    def _reinitialise(self, model, layers, keras) -> None:
        import numpy as np

        from keras.src.initializers.random_initializers import RandomInitializer

        todo, seen = [], set()
        for li, layer in enumerate(layers):
            for attr, init in list(vars(layer).items()):
                if not attr.endswith("_initializer") or not callable(init):
                    continue
                target = attr[: -len("_initializer")]
                var = getattr(layer, target, None)
                if var is None and target == "recurrent":
                    var = getattr(layer, "recurrent_kernel", None)
                if var is None or not hasattr(var, "assign") or id(var) in seen:
                    continue
                seen.add(id(var))
                now = np.asarray(keras.ops.convert_to_numpy(var.value))
                expected = np.asarray(keras.ops.convert_to_numpy(init(tuple(var.shape), dtype=var.dtype)))
                if now.shape != expected.shape or not np.array_equal(now, expected):
                    raise InterventionError(f"seed.init: weight {var.path} no longer equals its initializer's output "
                                            "at fit time (loaded, or trained by an earlier fit): not separable in a "
                                            "black-box Keras script — use seed=N")
                if isinstance(init, RandomInitializer):
                    todo.append((li, attr, init, var))
        unknown = [v.path for v in model.trainable_weights if id(v) not in seen]
        if unknown:
            raise InterventionError(f"seed.init: cannot tell how {', '.join(unknown[:3])} "
                                    f"{'were' if len(unknown) > 1 else 'was'} initialised (a custom layer's "
                                    "add_weight): not separable in a black-box Keras script — use seed=N")
        if not todo:
            raise InterventionError("seed.init: no weight of the model has a random initializer")
        for li, attr, init, var in todo:
            fresh = copy.copy(init)
            fresh.seed = derived_seed("init", self.plan.seed_init, li, attr)
            var.assign(fresh(tuple(var.shape), dtype=var.dtype))
        self.applied.add("seed.init")

    def _branch(self, model, opt, args: dict, signature) -> dict:  # noqa: C901 - one check after the other
        from .keras import load_checkpoint

        folder = self.plan.branch
        if opt is None:
            raise InterventionError("branch=: the model is not compiled (no optimizer to load the state into)")
        try:
            manifest_path = folder / "manifest.json"
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise InterventionError(f"branch={folder}: not a whyspike Keras checkpoint ({exc}) — point at "
                                    "RUN_DIR/checkpoints/epoch-NNNN of a run recorded with whyspike") from None
        self._check_source_data(folder, args)
        _ensure_built(model, args, f"branch={folder}")
        try:
            load_checkpoint(folder, model, opt)
        except InputError as exc:
            raise InterventionError(f"branch: {exc}") from None
        epoch = int(manifest["epoch"])
        default = signature.parameters["epochs"].default if "epochs" in signature.parameters else 1
        epochs = args.get("epochs", default)
        if isinstance(epochs, int) and epochs <= epoch + 1:
            raise InterventionError(f"branch={folder}: the checkpoint is the end of epoch {epoch}, but the script's "
                                    f"fit(epochs={epochs}) ends there: nothing left to train")
        args["initial_epoch"] = epoch + 1
        self._say(f"branch: weights and optimizer state of epoch {epoch} loaded from {folder}; training resumes at "
                  f"epoch {epoch + 1}", "branch")
        return {"checkpoint": str(folder), "epoch": epoch, "step": manifest.get("step")}

    def _check_source_data(self, folder: Path, args: dict) -> None:
        """The checkpoint's run saw the same data as this fit call, when that run noted its data's fingerprint."""
        meta_path = folder.parent.parent / "meta.json"
        try:
            source = json.loads(meta_path.read_text()).get("probe") or {}
        except (OSError, ValueError):
            source = {}
        theirs = source.get("data_fingerprint")
        ours = data_fingerprint(args.get("x"), args.get("y"))
        if theirs and ours and theirs != ours:
            raise InterventionError(f"branch={folder}: the script's training data differ from those of the run the "
                                    "checkpoint comes from (data drawn without a fixed seed?) — record that run and "
                                    "this replica with the same seed=N")
        if not theirs:
            self._say("branch: the checkpoint's run did not note its data, so whyspike cannot check that this run "
                      "trains on the same data (a script that draws its data unseeded would not)", "branch-data")

    def _momentum(self, opt) -> None:
        plan = self.plan
        name = type(opt).__name__ if opt is not None else "none"
        beta = getattr(opt, "momentum", None)
        if opt is None or isinstance(beta, bool) or not isinstance(beta, (int, float)):
            hint = " (its first-moment decay is beta_1, not a momentum)" if hasattr(opt, "beta_1") else ""
            raise InterventionError(f"momentum={plan.raw['momentum']}: optimizer {name} has no momentum "
                                    f"hyper-parameter{hint}")
        if plan.momentum == "off":
            if beta == 0:
                raise InterventionError(f"momentum=off: optimizer {name} already runs without momentum")
            self._momentum_off_factor = 1.0 / (1.0 - float(beta))
            opt.momentum = 0.0
            return
        if plan.momentum and opt.built and not getattr(opt, "momentums", None) and not getattr(opt, "_momentums", None):
            raise InterventionError(f"momentum={plan.momentum:g}: optimizer {name} was built without momentum "
                                    "buffers before this fit; whyspike cannot add them")
        opt.momentum = float(plan.momentum)

    _momentum_off_factor = 1.0

    def _adam(self, opt) -> None:
        plan = self.plan
        name = type(opt).__name__ if opt is not None else "none"
        for key, attr, value in (("adam.eps", "epsilon", plan.adam_eps), ("adam.beta2", "beta_2", plan.adam_beta2)):
            if value is None:
                continue
            have = getattr(opt, attr, None)
            if opt is None or isinstance(have, bool) or not isinstance(have, (int, float)):
                raise InterventionError(f"{key}={plan.raw[key]}: optimizer {name} has no {attr} hyper-parameter")
            setattr(opt, attr, float(value))

    def _weight_decay(self, opt, layers, keras) -> None:
        plan = self.plan
        scale = 0.0 if plan.wd_off else float(plan.wd_scale)
        found = False
        wd = getattr(opt, "weight_decay", None)
        if isinstance(wd, (int, float)) and not isinstance(wd, bool) and wd > 0:
            opt.weight_decay = None if plan.wd_off else float(wd) * scale
            found = True
        seen: set[int] = set()
        for layer in layers:
            for attr, reg in vars(layer).items():
                if not attr.endswith("_regularizer") or reg is None or id(reg) in seen:
                    continue
                l2 = getattr(reg, "l2", None)
                if isinstance(l2, (int, float)) and l2 > 0:
                    seen.add(id(reg))
                    reg.l2 = float(l2) * scale
                    found = True
        if not found:
            key = "wd" if plan.wd_off else "wd.scale"
            raise InterventionError(f"{key}={plan.raw[key]}: the optimizer "
                                    f"{type(opt).__name__ if opt is not None else '(none)'} has no weight_decay and no "
                                    "layer has an L2 regularizer: there is no weight decay to change")

    def _batch(self, args: dict, signature) -> float:
        plan = self.plan
        x = args.get("x")
        if not _array_data(x):
            raise InterventionError(f"batch.scale={plan.raw['batch.scale']}: fit was given a dataset or generator, "
                                    "whose batches are made where it is built — whyspike can only rescale the "
                                    "batch size of array data")
        size = args.get("batch_size") or 32
        new = max(1, int(round(size * plan.batch_scale)))
        args["batch_size"] = new
        self._say(f"batch.scale: batch size {size} -> {new}, LR x {new / size:g}", "batch")
        return new / size

    def _shuffle(self, args: dict) -> None:
        plan = self.plan
        if plan.shuffle == "reshuffle":
            args["shuffle"] = True
            return
        x = args.get("x")
        if not _array_data(x):
            raise InterventionError("shuffle=fixed: fit was given a dataset or generator; whyspike can only fix the "
                                    "order of array data")
        import numpy as np

        n = _rows(x)
        split = args.get("validation_split") or 0.0
        at = int(math.floor(n * (1.0 - split))) if args.get("validation_data") is None and split else n
        seed = plan.seed_data if plan.seed_data is not None else 0
        order = np.concatenate([np.random.default_rng(derived_seed("order", seed)).permutation(at),
                                np.arange(at, n)])
        for key in ("x", "y", "sample_weight"):
            if args.get(key) is not None:
                args[key] = _take(args[key], order)
        args["shuffle"] = False

    def _learning_rate(self, opt, callbacks: list, factor: float, keras):
        """Wrap the LR schedule (or scale a constant LR) and adapt LR callbacks; returns the wrapper or None."""
        plan = self.plan
        schedules = keras.optimizers.schedules
        scheduler = [c for c in callbacks if isinstance(c, keras.callbacks.LearningRateScheduler)]
        plateau = [c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
        if not plan.touches_lr_schedule and factor == 1.0:
            return None
        if opt is None:
            raise InterventionError("the model is not compiled: there is no optimizer whose learning rate to change")
        lr = getattr(opt, "_learning_rate", None)
        wrapper = None
        if isinstance(lr, schedules.LearningRateSchedule):
            if plan.lr_warmup is not None:
                lr = _stretched_warmup(lr, plan)
            wrapper = _schedule_class(keras)(lr, plan, factor)
            opt._learning_rate = wrapper
        elif isinstance(lr, keras.Variable):
            if plan.touches_lr_schedule and not scheduler and not plateau:
                value = float(keras.ops.convert_to_numpy(lr.value))
                raise InterventionError(f"{_lr_names(plan)}: the learning rate is constant ({value:g}; no "
                                        "LearningRateSchedule, LearningRateScheduler or ReduceLROnPlateau): there is "
                                        "no schedule to change")
            if factor != 1.0:
                lr.assign(float(keras.ops.convert_to_numpy(lr.value)) * factor)
        elif callable(lr):
            if plan.touches_lr_schedule:
                raise InterventionError(f"{_lr_names(plan)}: the learning rate is a plain callable, not a "
                                        "LearningRateSchedule: whyspike cannot tell its steps apart")
            opt._learning_rate = lambda: lr() * factor
        for cb in scheduler:
            if plan.lr_warmup is not None:
                raise InterventionError(f"lr.warmup={plan.raw['lr.warmup']}: a LearningRateScheduler's function "
                                        "has no warmup whyspike can tell apart")
            _adapt_scheduler(cb, plan, factor)
        for cb in plateau:
            if plan.lr_warmup is not None:
                raise InterventionError(f"lr.warmup={plan.raw['lr.warmup']}: ReduceLROnPlateau has no warmup")
            if plan.lr_shift:
                raise InterventionError(f"lr.shift={plan.lr_shift}: ReduceLROnPlateau reacts to the metrics, it has "
                                        "no milestones to shift (lr.hold=E or lr.decay=off switch it off)")
            _adapt_plateau(cb, plan, factor)
        return wrapper

    def _noise_generators(self, layers, keras) -> list:
        gens = []
        for layer in layers:
            for sg in getattr(layer, "_seed_generators", None) or []:
                if all(sg is not g for g in gens):
                    gens.append(sg)
        return gens

    # -- per epoch (from the callback)
    def reseed_noise(self, generators: list, epoch: int) -> None:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator

        import keras

        n = self.plan.seed_noise
        for i, sg in enumerate(generators):
            sg.state.assign(keras.ops.convert_to_tensor([derived_seed("noise", n, i, epoch), 0],
                                                        dtype=sg.state.dtype))
        global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR,
                                          seed_generator.SeedGenerator(seed=derived_seed("noise", n, -1, epoch)))


def _lr_names(plan: Plan) -> str:
    return ", ".join(f"{k}={plan.raw[k]}" for k in ("lr.shift", "lr.decay", "lr.hold", "lr.warmup") if k in plan.raw)


def _stretched_warmup(schedule, plan: Plan):
    """The same schedule with its warmup (``warmup_steps`` in its config, as Keras' CosineDecay has) F times longer;
    what follows the warmup starts that much later."""
    try:
        cfg = dict(schedule.get_config())
    except Exception:
        cfg = {}
    steps = cfg.get("warmup_steps")
    if not isinstance(steps, (int, float)) or steps <= 0:
        raise InterventionError(f"lr.warmup={plan.raw['lr.warmup']}: the schedule {type(schedule).__name__} has no "
                                "warmup (whyspike stretches the warmup_steps of Keras schedules such as CosineDecay)")
    cfg["warmup_steps"] = max(1, int(round(steps * plan.lr_warmup)))
    return type(schedule).from_config(cfg)


def _adapt_scheduler(cb, plan: Plan, factor: float) -> None:
    """A LearningRateScheduler's ``schedule(epoch, lr)`` shifted / held / switched off / scaled."""
    if getattr(cb, "_whyspike_adapted", False):
        return
    cb._whyspike_adapted = True
    orig = cb.schedule

    def call(epoch, lr):
        try:
            return orig(epoch, lr)
        except TypeError:  # the one-argument form Keras accepts too
            return orig(epoch)

    def schedule(epoch, lr=None):
        base = None if lr is None else lr / factor
        if plan.lr_decay_off or (plan.lr_hold is not None and epoch >= plan.lr_hold):
            out = base
        else:
            e = epoch - plan.lr_shift
            out = base if e < 0 else call(e, base)
        if out is None:
            out = call(0, base)
        return float(out) * factor

    cb.schedule = schedule


def _adapt_plateau(cb, plan: Plan, factor: float) -> None:
    if getattr(cb, "_whyspike_adapted", False):
        return
    cb._whyspike_adapted = True
    cb.min_lr = float(cb.min_lr) * factor
    if plan.lr_decay_off or plan.lr_hold is not None:
        orig = cb.on_epoch_end
        hold = 0 if plan.lr_decay_off else plan.lr_hold

        def on_epoch_end(epoch, logs=None):
            if epoch < hold:
                return orig(epoch, logs)
            return None

        cb.on_epoch_end = on_epoch_end


def _array_data(x) -> bool:
    if isinstance(x, dict):
        return bool(x) and all(_array_data(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return bool(x) and all(hasattr(v, "shape") for v in x)
    return hasattr(x, "shape") and len(getattr(x, "shape", ())) > 0


def _rows(x) -> int:
    if isinstance(x, dict):
        return _rows(next(iter(x.values())))
    if isinstance(x, (list, tuple)):
        return _rows(x[0])
    return int(x.shape[0])


def _take(a, order):
    if isinstance(a, dict):
        return {k: _take(v, order) for k, v in a.items()}
    if isinstance(a, (list, tuple)):
        return type(a)(_take(v, order) for v in a)
    if hasattr(a, "detach"):  # a torch tensor
        import torch

        return a[torch.as_tensor(order, device=a.device)]
    if hasattr(a, "iloc"):  # a pandas frame or series: rows by position
        return a.iloc[order]
    return a[order]


def _ensure_built(model, args: dict, what: str) -> None:
    """Create the weights of a model built lazily (no input shape given) by calling it on one row of fit's data."""
    if model.built and model.weights:
        return
    x = args.get("x")
    if not _array_data(x):
        raise InterventionError(f"{what}: the model has no weights before fit and fit was given a dataset, not "
                                "arrays — give the model an Input shape")
    try:
        model(_first_rows(x))
    except Exception as exc:
        raise InterventionError(f"{what}: the model has no weights before fit and calling it on one row failed "
                                f"({type(exc).__name__}: {exc})") from None


def _first_rows(x):
    if isinstance(x, dict):
        return {k: _first_rows(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_first_rows(v) for v in x)
    return x[:1]


def _all_layers(model) -> list:
    from .keras import _all_layers as layers

    return layers(model)


def _module(name: str):
    return sys.modules.get(name)


_SCHEDULE = None
_CALLBACK = None


def _schedule_class(keras):
    """``InterventionSchedule``: a LearningRateSchedule evaluating the wrapped one at a moved step, times a factor."""
    global _SCHEDULE
    if _SCHEDULE is not None:
        return _SCHEDULE

    class InterventionSchedule(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, inner, plan: Plan, factor: float):
            self.inner, self.plan, self.factor = inner, plan, float(factor)
            self.steps_per_epoch: int | None = None
            self._lr0 = None

        def __call__(self, step):
            ops = keras.ops
            plan = self.plan
            t = ops.convert_to_tensor(step)
            if plan.lr_decay_off:
                t = t * 0
            else:
                spe = self.steps_per_epoch
                if (plan.lr_hold is not None or plan.lr_shift) and not spe:
                    raise InterventionError("the steps per epoch are not known yet (fit with a generator and no "
                                            "steps_per_epoch?): the schedule cannot be moved by whole epochs")
                if plan.lr_hold is not None:
                    t = ops.minimum(t, plan.lr_hold * spe)
                if plan.lr_shift > 0:
                    t = ops.maximum(t - plan.lr_shift * spe, 0)
                elif plan.lr_shift < 0:
                    t = t + (-plan.lr_shift) * spe
            value = self.inner(t)
            return value * self.factor if self.factor != 1.0 else value

        def get_config(self):
            try:
                inner = dict(self.inner.get_config())
            except Exception:
                inner = {}
            if isinstance(inner.get("initial_learning_rate"), (int, float)):
                inner["initial_learning_rate"] = float(inner["initial_learning_rate"]) * self.factor
            inner["whyspike_wrapped"] = type(self.inner).__name__
            inner["whyspike_interventions"] = {k: v for k, v in self.plan.raw.items() if k != "branch"}
            inner["whyspike_lr_factor"] = self.factor
            inner["steps_per_epoch"] = self.steps_per_epoch
            return inner

    _SCHEDULE = InterventionSchedule
    return _SCHEDULE


def _callback_class(keras):
    """The callback that does the per-epoch part: steps per epoch to the schedule, data order, noise seeds."""
    global _CALLBACK
    if _CALLBACK is not None:
        return _CALLBACK

    class InterventionCallback(keras.callbacks.Callback):
        def __init__(self, intervener: Intervener, schedule, noise: list):
            super().__init__()
            self._iv, self._schedule, self._noise = intervener, schedule, noise
            self._script = None  # torch's generator state of the script's own stream, while ours is in place
            self._first = False
            self._epoch = 0

        def on_train_begin(self, logs=None):
            steps = (self.params or {}).get("steps")
            if self._schedule is not None:
                self._schedule.steps_per_epoch = int(steps) if steps else None
                plan = self._iv.plan
                if (plan.lr_shift or plan.lr_hold is not None) and not steps:
                    raise InterventionError(f"{_lr_names(plan)}: fit does not know its steps per epoch (a "
                                            "generator without steps_per_epoch): the schedule cannot be moved by "
                                            "whole epochs")

        # torch's global generator, on the torch backend, draws the data order of an epoch (when its first batch is
        # fetched) and then the masks of unseeded Dropout layers (torch's own dropout) step after step: seed.data
        # and seed.noise each replace one of the two, keyed by epoch, and the script's own stream goes on as if
        # neither had drawn from it
        def on_epoch_begin(self, epoch, logs=None):
            plan = self._iv.plan
            self._epoch = int(epoch)
            self._first = True
            data = plan.seed_data is not None and plan.shuffle != "fixed"
            if data or plan.seed_noise is not None:
                import torch

                self._script = torch.random.get_rng_state()
                if data:
                    torch.manual_seed(derived_seed("data", plan.seed_data, self._epoch))
            if self._noise:
                self._iv.reseed_noise(self._noise, self._epoch)  # layers with their own seed generators

        def on_train_batch_begin(self, batch, logs=None):
            if not self._first:
                return
            self._first = False
            plan = self._iv.plan
            data = plan.seed_data is not None and plan.shuffle != "fixed"
            if not (data or plan.seed_noise is not None):
                return
            import torch

            if not data:
                self._script = torch.random.get_rng_state()  # after the order was drawn from the script's stream
            if plan.seed_noise is not None:
                torch.manual_seed(derived_seed("noise", plan.seed_noise, "torch", self._epoch))
            else:
                torch.random.set_rng_state(self._script)

        def on_epoch_end(self, epoch, logs=None):
            plan = self._iv.plan
            if plan.seed_noise is not None and getattr(self, "_script", None) is not None:
                import torch

                torch.random.set_rng_state(self._script)
            self._script = None

    _CALLBACK = InterventionCallback
    return _CALLBACK


__all__ = ["ENV_INTERVENE", "Intervener", "InterventionError", "NAMES", "Plan", "data_fingerprint", "derived_seed",
           "interventions_env", "parse_interventions", "plan_from_env"]

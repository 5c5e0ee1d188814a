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

A hand-written PyTorch loop (recorded by the global optimizer hooks) takes ``seed=N`` as above and the
optimizer-level names at every ``optimizer.step()``: ``lr.scale``, ``lr.decay=off``, ``lr.hold``, ``lr.shift=K``
(K > 0 only: a PyTorch scheduler's future is not known), ``momentum``, ``adam.eps``, ``adam.beta2``, ``wd`` and
``wd.scale``, on every parameter group, with the user's own values put back after each step so that its scheduler
goes on as written (:mod:`whyspike.record.torch._intervene_torch`). ``skip``, ``bn.*``, ``batch.scale``,
``shuffle``, ``seed.data``, ``seed.noise``, ``seed.init``, ``lr.warmup`` and ``branch`` act on ``Model.fit``: in
a PyTorch loop they stay unapplied, and a probe replica reports them so.
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
from ._intervene_plan import (  # noqa: F401 - the plan, parsed before the script runs
    derived_seed, ENV_INTERVENE, InterventionError, interventions_env, NAMES, NOT_BLACK_BOX, parse_interventions,
    Plan, plan_from_env, SEED_ONLY, _choice, _float, _int,
)
from ._intervene_lr import (  # noqa: F401
    _adapt_plateau, _adapt_scheduler, _all_layers, _array_data, _callback_class, _ensure_built, _first_rows,
    _lr_names, _module, _rows, _schedule_class, _stretched_warmup, _take,
)

# ------------------------------------------------------------------------------------------ helpers


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
        """Interventions the script never gave a chance to apply (no Keras fit call, no seed set, nothing a PyTorch
        loop's optimizer steps applied)."""
        if self._fits:
            return []
        return [k for k in self.plan.raw if k != "seed" and k not in self.applied]

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


__all__ = ["ENV_INTERVENE", "Intervener", "InterventionError", "NAMES", "Plan", "data_fingerprint", "derived_seed",
           "interventions_env", "parse_interventions", "plan_from_env"]

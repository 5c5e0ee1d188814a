"""Run an unchanged training script with whyspike's recorders injected — the machinery of ``whyspike run``.

Before the script runs (:class:`Injection`):

- plotting is made non-interactive: ``MPLBACKEND=Agg`` and ``matplotlib.pyplot.show`` a no-op (when matplotlib is
  not installed, a stand-in whose plotting calls do nothing, so a script that plots its curve at the end finishes);
- ``KERAS_BACKEND`` defaults to ``torch`` (a value already set is kept);
- without TensorFlow, ``import tensorflow as tf`` / ``from tensorflow import keras`` give a stand-in module whose
  ``keras`` is Keras 3 (with TensorFlow installed the real one is used);
- every ``keras.Model.fit`` call gets a :class:`~whyspike.record.keras.WhyspikeCallback`, one run directory per
  call; ``WHYSPIKE_MAX_EPOCHS=N`` caps the epochs of each call (CI shortens runs without editing the script);
- when the script imports torch itself (not through Keras) and ``whyspike.record.torch.install_global_hooks``
  exists, hand-written PyTorch loops are recorded too (a run directory that ends up empty is removed);
- ``WHYSPIKE_INTERVENE`` (JSON ``{"NAME": "VALUE"}``) changes one factor of the training — seeds, LR schedule,
  momentum, batch size, a branch from a checkpoint, ...: see :mod:`whyspike.record._intervene` (applied when the
  seeds are set and at each ``fit``; in a PyTorch loop, the optimizer-level ones at each step:
  :mod:`whyspike.record.torch._intervene_torch`). The black-box probe engine runs every replica this way.

The hooks wait for the modules to be imported (a post-import hook on ``sys.meta_path``), so nothing heavy is
imported before the script asks for it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import inspect
import os
import runpy
import shutil
import site
import sys
import sysconfig
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError, UsageError

ENV_MAX_EPOCHS = "WHYSPIKE_MAX_EPOCHS"


def max_epochs_from_env(environ=os.environ) -> int | None:
    """``WHYSPIKE_MAX_EPOCHS`` as a positive int (None when unset or empty).

        >>> max_epochs_from_env({"WHYSPIKE_MAX_EPOCHS": "3"})
        3
    """
    raw = environ.get(ENV_MAX_EPOCHS, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{ENV_MAX_EPOCHS}={raw!r} is not a positive whole number of epochs — set it to e.g. 3, "
                         "or unset it")
    return value


@dataclass
class Options:
    out: Path = Path("whyspike-runs")
    tier: str = "default"
    every: int = 1
    checkpoints: int = 3
    live: bool = True
    threads: int | None = None
    max_epochs: int | None = None
    # detailed tier, fit without validation data: recompute BatchNorm statistics and evaluate on the training arrays
    # (the probe engine's BN re-evaluation compares that with the eval-mode training metrics)
    bn_eval_on_train: bool = False


@dataclass
class RecordedRun:
    path: Path
    framework: str  # "keras" | "torch"
    label: str  # what was trained: the Keras model's name, or "PyTorch"
    explained: bool = False  # the script's own WhyspikeCallback printed the verdict already


@dataclass
class ScriptOutcome:
    exit_code: int
    error: BaseException | None = None  # the script's own exception (never SystemExit)
    runs: list[RecordedRun] = field(default_factory=list)


# -- post-import hooks and stand-in modules on sys.meta_path


class _HookedLoader(importlib.abc.Loader):
    """Delegates to the real loader, then runs the hooks for the freshly executed module."""

    def __init__(self, loader, after: Callable[[types.ModuleType], None]):
        self._loader, self._after = loader, after

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = self._loader  # leave no trace of the wrapper in the module
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._after(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Post-import hooks for named modules, and stand-ins for named modules that are not installed."""

    def __init__(self):
        self.hooks: dict[str, list[Callable[[types.ModuleType], None]]] = {}
        self.standins: dict[str, Callable[[types.ModuleType], None]] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.standins:
            if not _asked_by_user_code():
                return None  # libraries probing for the package (keras, torch._dynamo) must still find none
            return importlib.util.spec_from_loader(fullname, _StandinLoader(self.standins[fullname]),
                                                   is_package=True)
        if fullname not in self.hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(spec.loader, functools.partial(self._fire, fullname))
        return spec

    def _fire(self, name: str, module: types.ModuleType) -> None:
        for hook in self.hooks.get(name, []):
            hook(module)

    def on_import(self, name: str, hook: Callable[[types.ModuleType], None]) -> None:
        """Run ``hook(module)`` once ``name`` is imported (at once if it already is)."""
        self.hooks.setdefault(name, []).append(hook)
        if name in sys.modules:
            hook(sys.modules[name])


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv's old site module
        pass
    roots.add(str(Path(__file__).resolve().parents[1]))  # whyspike itself
    return tuple(str(Path(r).resolve()) + os.sep for r in roots if r)


def _asked_by_user_code() -> bool:
    """True when the import being resolved comes from the user's own code, not from an installed library."""
    roots = _library_roots()
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith("<") and not _same_file(name, __file__):
            return not str(Path(name).resolve()).startswith(roots)
        frame = frame.f_back
    return False


class _StandinLoader(importlib.abc.Loader):
    def __init__(self, fill: Callable[[types.ModuleType], None]):
        self._fill = fill

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        self._fill(module)


class _Nothing:
    """Whatever a plotting call returns when matplotlib is missing: callable, indexable, and does nothing."""

    def __call__(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __getitem__(self, key):
        return self

    def __setitem__(self, key, value):
        pass

    def __iter__(self):
        return iter(())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fill_matplotlib(module: types.ModuleType) -> None:
    nothing = _Nothing()
    module.__path__ = []
    module.__whyspike_standin__ = True
    module.use = nothing
    module.rcParams = {}
    module.get_backend = lambda: "agg"
    pyplot = types.ModuleType("matplotlib.pyplot")
    pyplot.__whyspike_standin__ = True
    pyplot.subplots = lambda *a, **k: (nothing, nothing)
    pyplot.__getattr__ = lambda name: nothing if not name.startswith("__") else _no_attr(name)
    module.pyplot = pyplot
    sys.modules["matplotlib.pyplot"] = pyplot
    module.__getattr__ = lambda name: nothing if not name.startswith("__") else _no_attr(name)
    print("whyspike: matplotlib is not installed; the script's plotting calls do nothing", file=sys.stderr)


def _no_attr(name: str):
    raise AttributeError(name)


def _fill_tensorflow(module: types.ModuleType) -> None:
    keras = importlib.import_module("keras")
    _keras_sees_no_tensorflow()
    module.__path__ = []
    module.__whyspike_standin__ = True
    module.keras = keras
    module.random = types.SimpleNamespace(set_seed=keras.utils.set_random_seed)
    module.executing_eagerly = lambda: True
    backend = keras.backend.backend()

    def missing(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"tensorflow is not installed: whyspike run gives scripts a stand-in 'tensorflow' module "
                             f"whose tf.keras is Keras 3 (backend {backend}), but it has no tf.{name} — install "
                             f"tensorflow, or use keras.{name} / numpy instead")

    module.__getattr__ = missing
    sys.modules["tensorflow.keras"] = keras
    for name, sub in vars(keras).items():  # `from tensorflow.keras.layers import Dense` and the like
        if isinstance(sub, types.ModuleType) and sub.__name__.startswith("keras"):
            sys.modules.setdefault(f"tensorflow.keras.{name}", sub)
            for name2, sub2 in vars(sub).items():
                if isinstance(sub2, types.ModuleType) and sub2.__name__.startswith("keras"):
                    sys.modules.setdefault(f"tensorflow.keras.{name}.{name2}", sub2)


def _keras_sees_no_tensorflow() -> None:
    """Keras probes for TensorFlow lazily; with the stand-in importable it must still see none."""
    try:
        from keras.src.utils import module_utils

        module_utils.tensorflow._available = False
    except Exception:  # a Keras without that probe needs nothing
        pass


def _importing(name: str) -> bool:
    mod = sys.modules.get(name)
    return mod is not None and bool(getattr(getattr(mod, "__spec__", None), "_initializing", False))


# -- the injection


class Injection:
    """Installs the hooks for one ``whyspike run`` (a context manager); collects the run directories."""

    def __init__(self, script: str | os.PathLike, options: Options | None = None, *, out_stream=None):
        self.script = Path(script)
        self.options = options or Options()
        self.out_stream = out_stream
        self.runs: list[RecordedRun] = []
        self._callbacks: list[Any] = []
        self._torch_hooks: list[tuple[Any, Path]] = []
        self._finder = _Finder()
        self._restore: list[Callable[[], None]] = []
        self._stamp = time.strftime("%Y%m%d-%H%M%S")
        self._said: set[str] = set()
        self._in_fit = False
        self.intervener = None  # set by install() when WHYSPIKE_INTERVENE asks for interventions

    # -- setup / teardown
    def __enter__(self) -> Injection:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.finish()
        self.uninstall()

    def install(self) -> None:
        self._set_env("MPLBACKEND", "Agg", force=True)
        self._set_env("KERAS_BACKEND", "torch", force=False)
        if self.options.threads:
            self._set_env("OMP_NUM_THREADS", str(self.options.threads), force=True)
        sys.meta_path.insert(0, self._finder)
        self._restore.append(lambda: sys.meta_path.remove(self._finder) if self._finder in sys.meta_path else None)
        if importlib.util.find_spec("matplotlib") is None:
            self._finder.standins["matplotlib"] = _fill_matplotlib
        else:
            self._finder.on_import("matplotlib.pyplot", self._quiet_pyplot)
        if importlib.util.find_spec("tensorflow") is None and importlib.util.find_spec("keras") is not None:
            self._finder.standins["tensorflow"] = _fill_tensorflow
        self._finder.on_import("keras", self._patch_keras)
        self._install_interventions()
        self._finder.on_import("torch", self._on_torch)  # after the plan: torch may be imported already

    def uninstall(self) -> None:
        while self._restore:
            try:
                self._restore.pop()()
            except Exception:
                pass

    def _set_env(self, key: str, value: str, force: bool) -> None:
        if key in os.environ and not force:
            return
        old = os.environ.get(key)
        os.environ[key] = value
        self._restore.append(lambda: os.environ.pop(key, None) if old is None else os.environ.__setitem__(key, old))

    def _say(self, message: str, key: str | None = None) -> None:
        if (key or message) in self._said:
            return
        self._said.add(key or message)
        print(f"whyspike: {message}", file=sys.stderr, flush=True)

    # -- run directories
    def next_run_dir(self) -> Path:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.script.stem) or "script"
        base = self.options.out / f"{stem}-{self._stamp}"
        path, k = base, 2
        taken = {r.path for r in self.runs} | {p for _, p in self._torch_hooks} | \
            {Path(c.run_dir) for c in self._callbacks if c.run_dir is not None}
        while path.exists() or path in taken:
            path, k = base.with_name(f"{base.name}-{k}"), k + 1
        return path

    # -- plotting
    def _quiet_pyplot(self, pyplot: types.ModuleType) -> None:
        original = pyplot.show
        pyplot.show = lambda *args, **kwargs: None
        self._restore.append(lambda: setattr(pyplot, "show", original))

    # -- Keras
    def _patch_keras(self, keras: types.ModuleType) -> None:
        if "tensorflow" in self._finder.standins:
            _keras_sees_no_tensorflow()
        model_cls = keras.Model
        original = model_cls.fit
        if getattr(original, "__whyspike__", False):
            return
        signature = inspect.signature(original)
        injection = self

        @functools.wraps(original)
        def fit(model, *args, **kwargs):
            if injection._in_fit:  # a fit inside a fit (a custom fit calling super().fit): record the outer one
                return original(model, *args, **kwargs)
            try:
                bound = signature.bind(model, *args, **kwargs)
            except TypeError:
                return original(model, *args, **kwargs)  # Keras says what is wrong with the call
            probe = injection._intervene_fit(model, bound)  # raises InterventionError into the script
            callback, own = injection._attach(model, bound)
            injection._in_fit = True
            try:
                return original(*bound.args, **bound.kwargs)
            finally:
                injection._in_fit = False
                if callback is not None:
                    if not own:
                        callback.close()
                    if probe is not None:
                        injection.intervener.after_fit(probe, callback)
                    if callback.run_dir is not None:
                        injection.runs.append(RecordedRun(Path(callback.run_dir), "keras",
                                                          getattr(model, "name", "model"), explained=own))

        fit.__whyspike__ = True
        model_cls.fit = fit
        self._restore.append(lambda: setattr(model_cls, "fit", original))

    def _attach(self, model, bound: inspect.BoundArguments):
        """(callback, the script's own?) for this fit call; (None, False) when none can be added (the fit then runs
        as written)."""
        try:
            from .keras import WhyspikeCallback

            args = bound.arguments
            callbacks = args.get("callbacks")
            if callbacks is not None and not isinstance(callbacks, (list, tuple)):
                self._say("fit(callbacks=...) is not a list: this fit call is not recorded", "callbacklist")
                return None, False
            callbacks = list(callbacks or [])
            mine = [c for c in callbacks if isinstance(c, WhyspikeCallback)]
            if mine:  # the script records itself: its callback explains the run when training ends
                return mine[0], True
            self._cap_epochs(args, bound.signature)
            train, val, batch_size = _fit_data(args)
            o = self.options
            if val is None and train is not None and o.bn_eval_on_train and o.tier == "detailed":
                val = train
                self._say("detailed tier: fit has no validation data, so BatchNorm statistics are recomputed and "
                          "evaluated on the training arrays (val_precise_bn_* is on the training set)", "bn-on-train")
            callback = WhyspikeCallback(self.next_run_dir(), tier=o.tier, every=o.every, checkpoints=o.checkpoints,
                                        live=o.live, validation_data=val, train_data=train, batch_size=batch_size,
                                        verdict=False, out=self.out_stream)
            args["callbacks"] = callbacks + [callback]
            self._callbacks.append(callback)
            return callback, False
        except Exception as exc:  # never break the user's training
            self._say(f"could not attach the recorder to fit ({type(exc).__name__}: {exc}); training runs unrecorded")
            return None, False

    def _cap_epochs(self, args: dict, signature: inspect.Signature) -> None:
        cap = self.options.max_epochs
        if not cap:
            return
        default = signature.parameters["epochs"].default if "epochs" in signature.parameters else 1
        epochs = args.get("epochs", default)
        initial = args.get("initial_epoch", 0) or 0
        if isinstance(epochs, int) and epochs - initial > cap:
            args["epochs"] = initial + cap
            self._say(f"{ENV_MAX_EPOCHS}={cap}: fit(epochs={epochs}) shortened to {cap} epoch(s)", "cap")

    # -- PyTorch
    def _on_torch(self, torch: types.ModuleType) -> None:
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        if _importing("keras"):
            return  # torch came in as Keras' backend: the Keras callback records this training
        try:
            spec = importlib.util.find_spec("whyspike.record.torch")
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return
        try:
            recorder = importlib.import_module("whyspike.record.torch")
            install = getattr(recorder, "install_global_hooks", None)
            if install is None:
                return
            from .store import RunWriter

            path = self.next_run_dir()
            writer = RunWriter(path, keep_checkpoints=max(1, self.options.checkpoints))
            accepted = inspect.signature(install).parameters
            wanted = {"live": self.options.live, "tier": self.options.tier, "checkpoints": self.options.checkpoints,
                      "out": self.out_stream, "intervene": self._torch_intervention()}
            handle = install(writer, **{k: v for k, v in wanted.items() if k in accepted})
            self._torch_hooks.append((handle, path))
        except Exception as exc:
            self._say(f"PyTorch loops are not recorded ({type(exc).__name__}: {exc})", "torch")

    def _torch_intervention(self):
        """WHYSPIKE_INTERVENE for hand-written PyTorch loops (applied by the global optimizer hooks), or None."""
        if self.intervener is None:
            return None
        from .torch._intervene_torch import TorchIntervention

        iv = TorchIntervention(self.intervener.plan, on_applied=self.intervener.applied.add)
        return iv if iv.active else None

    # -- interventions (WHYSPIKE_INTERVENE): the black-box probe engine's way into the script (code in _intervene)
    def _install_interventions(self) -> None:
        from . import _intervene

        try:
            plan = _intervene.plan_from_env()  # a bad value is the user's UsageError, raised before the script runs
        except Exception:
            self.uninstall()  # __exit__ will not run: leave nothing installed
            raise
        if plan is None:
            return
        self.intervener = _intervene.Intervener(plan, self._say, _library_roots())
        self.intervener.install(self._finder.on_import)
        self._restore.append(self.intervener.uninstall)
        self._say(f"interventions: {', '.join(f'{k}={v}' for k, v in plan.raw.items())}", "interventions")

    def _intervene_fit(self, model, bound: inspect.BoundArguments) -> dict | None:
        return None if self.intervener is None else self.intervener.before_fit(model, bound)

    # -- the end
    def finish(self) -> None:
        """Flush every recorder; drop PyTorch run directories that recorded nothing."""
        for callback in self._callbacks:
            try:
                callback.close()
            except Exception:
                pass
        self._callbacks = []
        for handle, path in self._torch_hooks:
            try:
                if hasattr(handle, "close"):
                    handle.close()
            except Exception as exc:
                self._say(f"closing the PyTorch recorder failed ({type(exc).__name__}: {exc})")
            if _has_rows(path):
                self.runs.append(RecordedRun(path, "torch", "PyTorch"))
            else:
                shutil.rmtree(path, ignore_errors=True)  # created by us a moment ago, and empty of data
        self._torch_hooks = []

    def run(self, argv: list[str]) -> ScriptOutcome:
        """Run the script as ``__main__`` with ``sys.argv = [script, *argv]``; returns the outcome and never raises
        (the script's own exception is in ``outcome.error``; Ctrl-C gives exit code 130)."""
        script = self.script.resolve()
        saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
        sys.argv = [str(self.script), *argv]
        sys.path.insert(0, str(script.parent))
        code, error = 0, None
        try:
            if script.is_file():
                _run_as_main(script)
            else:  # a directory or zip with __main__.py
                runpy.run_path(str(script), run_name="__main__")
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except KeyboardInterrupt:
            code = 130
            error = None
            self._say("interrupted; what was recorded so far is kept", "interrupt")
        except BaseException as exc:  # the script's own bug: shown as the script's traceback, not ours
            code, error = 1, exc
        finally:
            sys.argv = saved_argv
            if sys.path and sys.path[0] == str(script.parent):
                sys.path.pop(0)
            elif saved_path0 is not None and str(script.parent) in sys.path:
                sys.path.remove(str(script.parent))
            self.finish()
        return ScriptOutcome(code, error, list(self.runs))


def _run_as_main(path: Path) -> None:
    """Run a script file as ``python SCRIPT`` does: module ``__main__``, ``__file__`` absolute, ``sys.argv[0]`` as the
    user typed it (``runpy.run_path`` would replace it by the path it was given)."""
    import builtins
    import importlib.machinery

    code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=str(path), __builtins__=builtins, __cached__=None, __package__=None, __spec__=None,
                         __loader__=importlib.machinery.SourceFileLoader("__main__", str(path)))
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _has_rows(path: Path) -> bool:
    return any(path.glob("steps/part-*.parquet")) or any(path.glob("epochs/part-*.parquet"))


def _fit_data(args: dict):
    """(train (x, y) or None, validation (x, y) or None, batch size or None) from a fit call's arguments, when the
    data are arrays (datasets and generators are not sampled: the detailed tier then says what it lacks)."""
    x, y = args.get("x"), args.get("y")
    if not (_array_like(x) and _array_like(y)):
        return None, _val_arrays(args.get("validation_data")), args.get("batch_size")
    split = args.get("validation_split") or 0.0
    val = _val_arrays(args.get("validation_data"))
    train = (x, y)
    if val is None and 0 < split < 1:
        n = _rows(x)
        at = int(n * (1.0 - split))  # Keras' own split: the last fraction, before any shuffling
        train = (_slice(x, 0, at), _slice(y, 0, at))
        val = (_slice(x, at, n), _slice(y, at, n))
    batch = args.get("batch_size") or (32 if args.get("steps_per_epoch") is None else None)
    return train, val, batch


def _array_like(a) -> bool:
    if isinstance(a, dict):
        return bool(a) and all(_array_like(v) for v in a.values())
    if isinstance(a, (list, tuple)):
        return bool(a) and all(hasattr(v, "shape") for v in a)
    return hasattr(a, "shape") and hasattr(a, "__getitem__") and len(getattr(a, "shape", ())) > 0


def _rows(a) -> int:
    if isinstance(a, dict):
        return _rows(next(iter(a.values())))
    if isinstance(a, (list, tuple)):
        return _rows(a[0])
    return int(a.shape[0])


def _slice(a, start: int, stop: int):
    if isinstance(a, dict):
        return {k: _slice(v, start, stop) for k, v in a.items()}
    if isinstance(a, (list, tuple)):
        return type(a)(_slice(v, start, stop) for v in a)
    return a[start:stop]


def _val_arrays(data):
    if isinstance(data, (list, tuple)) and len(data) in (2, 3) and _array_like(data[0]) and _array_like(data[1]):
        return data[0], data[1]
    return None


# -- the script's traceback, without our frames


def format_user_traceback(exc: BaseException, script: str | os.PathLike) -> str:
    """The traceback of the script's exception, starting at the script's first frame and without whyspike's own
    frames in between (they are plumbing, not the user's bug)."""
    te = traceback.TracebackException.from_exception(exc)
    _trim(te, str(Path(script).resolve()), set())
    return "".join(te.format())


def _trim(te: traceback.TracebackException, script: str, seen: set[int]) -> None:
    if id(te) in seen:
        return
    seen.add(id(te))
    frames = list(te.stack)
    start = next((i for i, f in enumerate(frames) if _same_file(f.filename, script)), 0)
    ours = tuple(str(Path(__file__).with_name(f).resolve())
                 for f in ("inject.py", "_intervene.py", "_intervene_plan.py", "_intervene_lr.py"))
    kept = [f for f in frames[start:] if not any(_same_file(f.filename, o) for o in ours)]
    te.stack = traceback.StackSummary.from_list(kept)
    for nxt in (te.__cause__, te.__context__):
        if nxt is not None:
            _trim(nxt, script, seen)


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b)
    except OSError:
        return False


def check_out_dir(out: Path) -> None:
    """Fail before the script runs when run directories cannot be written under ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".whyspike-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(out, f"cannot hold run directories ({exc.strerror or exc})",
                         "choose a writable directory with --out") from None


__all__ = ["ENV_MAX_EPOCHS", "Injection", "Options", "RecordedRun", "ScriptOutcome", "check_out_dir",
           "format_user_traceback", "max_epochs_from_env"]

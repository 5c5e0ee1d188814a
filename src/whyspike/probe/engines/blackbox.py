"""The black-box engine: re-run the user's unchanged script with one factor changed, in a subprocess.

A replica is the script run as ``whyspike run`` runs it (the same :class:`~whyspike.record.inject.Injection`:
Keras ``Model.fit`` recorded, a ``tensorflow`` stand-in when TF is absent, ``WHYSPIKE_MAX_EPOCHS``), with one torch
thread and the replica's interventions in ``WHYSPIKE_INTERVENE`` (see :mod:`whyspike.record._intervene` for what
each does to a Keras training). The child's run directory is read back into a :class:`ScriptReplicaResult`::

    from whyspike.probe.engines.blackbox import run_script_replica
    base = run_script_replica(Path("train.py"), [], interventions={}, seed=0, branch=None, out_dir=Path("p/base"))
    moved = run_script_replica(Path("train.py"), [], interventions={"lr.shift": "3"}, seed=0,
                               branch=Path("p/base/runs/train-.../checkpoints/epoch-0008"), out_dir=Path("p/shift"))

Whatever goes wrong comes back as a result, never as an exception: an intervention the training cannot take
(``error``, from the child), a script that raises or exits non-zero (``error``, with the script's line), a child
killed at ``timeout`` (``error``, with what was recorded until then), a training loss that turns nan / inf
(``diverged``, arrays nan from that epoch on, ``step_loss`` ending at the bad step). ``reason`` says it in one line.

Processes: each replica is a child of its own (its own session, killed with everything it started on a timeout),
forked from a warm process that imported Keras and torch once (``_blackbox_zygote``; ~5 s of CPU saved per replica,
reseeded from the OS after the fork so that unseeded scripts still differ); ``WHYSPIKE_PROBE_FORK=0`` runs each in a
fresh interpreter (``python -m whyspike.probe.engines._blackbox_child``) instead, with the same results.
:func:`warm_up` starts the warm process early. The child's protocol (environment in, ``child.json`` out) is in
``_blackbox_child``.

Reproducibility (CPU, one thread, Keras 3 on torch): two replicas with the same interventions and ``seed=N`` are
bit-identical, forked or fresh. A branch continues from the checkpoint's weights and optimizer state; its data order and dropout
masks are the script's own stream restarted, unless ``seed.data`` / ``seed.noise`` key them by epoch — then a
branch replica replays the unbranched replica with the same seeds exactly, and two branch replicas differ only by
their intervention. Scripts that draw their data without a seed need ``seed=N`` (the same N for the recorded run
and its branches: a replica refuses a checkpoint whose run noted other data).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...errors import UsageError
from ..spec import ReplicaResult, ReplicaSpec

ENGINE = "blackbox"
ACCURACY_NAMES = ("accuracy", "acc", "categorical_accuracy", "sparse_categorical_accuracy", "binary_accuracy")


@dataclass
class ScriptReplicaResult(ReplicaResult):
    """A :class:`ReplicaResult` from a script run, with what only a recorded run has: the run directory, the other
    per-epoch series (``extra``: ``train_eval_accuracy``, ``val_precise_bn_accuracy``, ``weight_norm``, ...),
    where the BatchNorm re-evaluation ran (``bn_eval``: ``"val"``, ``"train"`` when fit had no validation data, or
    None), the child's log, and ``reason``: one line on an error or a divergence."""

    run_dir: str | None = None
    extra: dict = field(default_factory=dict)
    bn_eval: str | None = None
    log: str | None = None
    reason: str | None = None
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(run_dir=self.run_dir, bn_eval=self.bn_eval, log=self.log, reason=self.reason, notes=list(self.notes),
                 extra={k: [None if not math.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]
                        for k, a in self.extra.items()})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ScriptReplicaResult:
        base = ReplicaResult.from_dict(d)
        extra = {k: np.array([np.nan if v is None else v for v in a], dtype=float)
                 for k, a in (d.get("extra") or {}).items()}
        return cls(**{f: getattr(base, f) for f in base.__dataclass_fields__}, run_dir=d.get("run_dir"),
                   extra=extra, bn_eval=d.get("bn_eval"), log=d.get("log"), reason=d.get("reason"),
                   notes=list(d.get("notes") or []))


def run_script_replica(script: Path, argv: list[str], *, interventions: Mapping[str, Any], seed: int | None,
                       branch: Path | None, out_dir: Path, env: Mapping[str, str] | None = None,
                       timeout: float | None = None, detailed: bool = False, checkpoints: int = 0,
                       name: str | None = None, cwd: Path | None = None) -> ScriptReplicaResult:
    """Run ``script argv...`` once with ``interventions`` (``{"lr.shift": "3", ...}``), ``seed`` (= ``seed=N``)
    and ``branch`` (a ``checkpoints/epoch-NNNN`` directory); the child's files go to ``out_dir`` (``runs/``,
    ``child.log``, ``child.json``). ``env`` is added to the child's environment (``WHYSPIKE_MAX_EPOCHS``, say);
    ``detailed`` records the detailed tier (BatchNorm re-evaluation; the ``bn.recompute`` intervention asks for it
    too); ``checkpoints`` keeps that many epoch checkpoints (0: none, as a replica rarely needs them); ``cwd`` is
    the script's working directory (default: this process's); ``name`` labels the result (default: its
    interventions). Never raises for a replica that cannot run: see the module docstring."""
    started = time.monotonic()
    try:
        return _run(script, argv, interventions, seed, branch, out_dir, env, timeout, detailed, checkpoints, name,
                    cwd, started)
    except Exception as exc:  # the engine's own failure (a disk error, say) is this replica's error too
        label = name or "replica"
        return _failed(label, {}, None, f"the black-box engine failed: {type(exc).__name__}: {exc}",
                       time.monotonic() - started)


def _run(script, argv, interventions, seed, branch, out_dir, env, timeout, detailed, checkpoints, name, cwd,
         started) -> ScriptReplicaResult:
    items = {str(k): str(v) for k, v in dict(interventions or {}).items()}
    label = name or _label(items, seed, branch)
    if "bn.recompute" in items:  # an evaluation: the detailed tier's PreciseBN columns, read by bn_share
        items.pop("bn.recompute")
        detailed = True
    try:
        items = _merge(items, seed, branch)
        plan = _parse(items)
    except UsageError as exc:
        return _failed(label, items, None, str(exc), time.monotonic() - started)
    replica = _replica_spec(label, plan)
    script = Path(script)
    if not script.exists():
        return _failed(label, items, replica, f"{script}: no such file — give the path of the training script",
                       time.monotonic() - started)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _failed(label, items, replica, f"{out_dir}: cannot hold the replica's files ({exc.strerror or exc})",
                       time.monotonic() - started)
    report_path, log_path = out_dir / "child.json", out_dir / "child.log"
    report_path.unlink(missing_ok=True)
    child_env = _child_env(items, env, out_dir, report_path, detailed, checkpoints)
    args = [str(script.resolve()), *map(str, argv)]
    returncode, timed_out = _launch(args, child_env, Path(cwd or Path.cwd()), log_path, timeout)
    seconds = time.monotonic() - started
    report = _read_json(report_path)
    runs = [Path(r["path"]) for r in (report or {}).get("runs") or [] if r.get("path")]
    if not runs and (timed_out or report is None):
        runs = sorted(p.parent for p in (out_dir / "runs").glob("*/meta.json"))  # what a killed child left
    result = _from_run(label, replica, runs[0], seconds) if runs else _failed(label, items, replica, None, seconds)
    result.log = str(log_path)
    if len(runs) > 1:
        result.notes.append(f"the script called fit {len(runs)} times; this result is the first call's "
                            f"({runs[0].name}); the others are in {out_dir / 'runs'}")
    if timed_out:
        done = int(np.isfinite(result.train_loss).sum())
        _set_error(result, f"timed out after {timeout:g} s (the child was killed); {done} epoch(s) recorded")
    elif report is None:
        _set_error(result, f"the child died without a report (exit code {returncode}): "
                           f"{_last_line(log_path) or 'no output'}")
    elif report.get("error"):
        _set_error(result, report["error"])
    elif result.run_dir is None:
        _set_error(result, f"{script.name} recorded no training")
    return result


def _set_error(result: ScriptReplicaResult, message: str) -> None:
    result.error = result.reason = " ".join(str(message).split())


def _merge(items: dict, seed: int | None, branch: Path | None) -> dict:
    if seed is not None:
        if "seed" in items and str(items["seed"]) != str(int(seed)):
            raise UsageError(f"seed={seed} and the intervention seed={items['seed']} disagree: give one")
        items["seed"] = str(int(seed))
    if branch is not None:
        if "branch" in items and Path(items["branch"]).resolve() != Path(branch).resolve():
            raise UsageError(f"branch={branch} and the intervention branch={items['branch']} disagree: give one")
        items["branch"] = str(Path(branch).resolve())
    elif "branch" in items:
        items["branch"] = str(Path(items["branch"]).resolve())
    return items


def _parse(items: dict):
    from ...record._intervene import parse_interventions

    return parse_interventions(items)


def _label(items: dict, seed: int | None, branch: Path | None) -> str:
    parts = [f"{k}={v}" for k, v in items.items() if k not in ("seed", "branch")]
    if seed is not None or "seed" in items:
        parts.append(f"seed={seed if seed is not None else items['seed']}")
    if branch is not None or "branch" in items:
        parts.append(f"from {Path(branch or items['branch']).name}")
    return " ".join(parts) or "baseline"


def _replica_spec(label: str, plan) -> ReplicaSpec:
    base = plan.seed if plan.seed is not None else 0
    start = None
    if plan.branch is not None:
        manifest = _read_json(plan.branch / "manifest.json") or {}
        epoch = manifest.get("epoch", _epoch_of(plan.branch))
        start = {"epoch": epoch, "step": manifest.get("step")}
    overrides = {k: v for k, v in plan.raw.items() if k != "branch"}
    return ReplicaSpec(name=label, init_seed=plan.seed_init if plan.seed_init is not None else base,
                       data_seed=plan.seed_data if plan.seed_data is not None else base,
                       noise_seed=plan.seed_noise if plan.seed_noise is not None else base,
                       overrides=overrides, start=start)


def _epoch_of(folder: Path) -> int | None:
    try:
        return int(folder.name.split("-")[-1])
    except ValueError:
        return None


def _child_env(items: dict, env: Mapping[str, str] | None, out_dir: Path, report: Path, detailed: bool,
               checkpoints: int) -> dict:
    from ...record._intervene import ENV_INTERVENE
    from ._blackbox_child import ENV_CHILD

    child = {k: v for k, v in os.environ.items() if k not in (ENV_INTERVENE, ENV_CHILD)}
    child.update({str(k): str(v) for k, v in (env or {}).items()})
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        child[key] = "1"  # one BLAS thread per replica: two per process were measured 25x slower under load
    child.setdefault("KERAS_BACKEND", "torch")
    child["PYTHONUNBUFFERED"] = "1"
    src = str(Path(__file__).resolve().parents[3])  # whyspike importable even from a source checkout
    child["PYTHONPATH"] = os.pathsep.join([src] + [p for p in child.get("PYTHONPATH", "").split(os.pathsep) if p])
    child[ENV_INTERVENE] = json.dumps(items, sort_keys=True)
    child[ENV_CHILD] = json.dumps({"out": str((out_dir / "runs").resolve()), "report": str(report.resolve()),
                                   "tier": "detailed" if detailed else "default", "checkpoints": int(checkpoints)})
    return child


# ------------------------------------------------------------------------------------------ running the child


def _launch(args: list[str], env: dict, cwd: Path, log_path: Path, timeout: float | None) -> tuple[int | None, bool]:
    """Run the child (forked from a warm process when one can serve, else a fresh interpreter); returns (exit
    code, timed out)."""
    zygote = _zygote_for(env)
    if zygote is not None:
        try:
            out = zygote.run(args, env, cwd, log_path, timeout)
            if zygote.broken:
                _drop_zygote(zygote)
            return out
        except _ZygoteBroken:  # it never started the replica: a fresh interpreter runs it
            _drop_zygote(zygote)
        except BaseException:
            _drop_zygote(zygote)
            raise
        finally:
            zygote.lock.release()
    cmd = [sys.executable, "-m", "whyspike.probe.engines._blackbox_child", *args]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            return proc.returncode, True
        except BaseException:  # Ctrl-C in the parent: take the child down with it
            _kill_group(proc.pid)
            proc.wait()
            raise
    return proc.returncode, False


def _kill_group(pid: int) -> None:
    """Kill the child and whatever it started (it leads its own session)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# Environment variables read when Keras / torch are imported: a warm process serves only replicas that agree on them.
_IMPORT_ENV = ("KERAS_BACKEND", "PYTHONPATH", "CUDA_VISIBLE_DEVICES", "KERAS_HOME", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "PYTHONHASHSEED")
ENV_FORK = "WHYSPIKE_PROBE_FORK"  # "0": every replica in a fresh interpreter (no warm process)


class _ZygoteBroken(Exception):
    pass


class _Zygote:
    """The client side of :mod:`._blackbox_zygote`: one warm process, one request at a time."""

    def __init__(self, key: tuple, env: dict):
        import threading

        self.key, self.owner, self.lock = key, os.getpid(), threading.Lock()
        self.broken = False
        base = {k: v for k, v in env.items()}
        self.proc = subprocess.Popen([sys.executable, "-m", "whyspike.probe.engines._blackbox_zygote"],
                                     env=base, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self._buf = b""
        self._ready = False  # it imports Keras and torch now; the first request waits for it

    def _wait_ready(self) -> None:
        if self._ready:
            return
        hello = self._read(300.0)
        if not hello or not hello.get("ready"):
            raise _ZygoteBroken("the warm process did not start")
        self._ready = True

    def _read(self, timeout: float | None) -> dict | None:
        import select

        fd = self.proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                return None  # timed out
            data = os.read(fd, 65536)
            if not data:
                raise _ZygoteBroken("the warm process ended")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise _ZygoteBroken(f"the warm process said {line[:80]!r}") from None

    def run(self, args: list[str], env: dict, cwd: Path, log: Path, timeout: float | None) -> tuple[int | None, bool]:
        self._wait_ready()
        try:
            self.proc.stdin.write((json.dumps({"argv": args, "env": env, "cwd": str(cwd), "log": str(log)}) +
                                   "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise _ZygoteBroken(str(exc)) from None
        started = self._read(60.0)
        if not started or "pid" not in started:
            raise _ZygoteBroken("the warm process did not fork")
        pid = int(started["pid"])
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    _kill_group(pid)
                    ended = self._read(30.0)
                    if not ended:
                        self.broken = True  # out of step with its replies: not used again
                    return (ended or {}).get("exit"), True
                ended = self._read(None if left is None else min(left, 1.0))
                if ended is not None:
                    return ended.get("exit"), False
        except _ZygoteBroken:  # it died with the replica running: the replica's report says what it got done
            self.broken = True
            return None, False
        except BaseException:
            _kill_group(pid)
            raise

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc.pid)


_ZYGOTES: dict[tuple, _Zygote] = {}


def _zygote_for(env: dict) -> _Zygote | None:
    """The warm process for this environment, locked for the caller (None: run a fresh interpreter)."""
    if os.environ.get(ENV_FORK, "1") == "0" or env.get(ENV_FORK) == "0" or not hasattr(os, "fork"):
        return None
    key = (sys.executable,) + tuple((k, env.get(k)) for k in _IMPORT_ENV)
    z = _ZYGOTES.get(key)
    if z is not None and (z.owner != os.getpid() or z.proc.poll() is not None):
        _ZYGOTES.pop(key, None)  # inherited from a parent process, or dead
        z = None
    if z is None:
        try:
            z = _Zygote(key, env)
        except (_ZygoteBroken, OSError):
            return None
        _ZYGOTES[key] = z
        if len(_ZYGOTES) == 1:
            import atexit

            atexit.register(_close_zygotes)
    if not z.lock.acquire(blocking=False):
        return None  # busy with another thread's replica: this one gets a fresh interpreter
    return z


def warm_up(env: Mapping[str, str] | None = None) -> bool:
    """Start the warm process replicas are forked from (Keras and torch imported once) without waiting for it, so
    that its start overlaps other work; True when one runs or is starting. ``env`` as for
    :func:`run_script_replica`."""
    import tempfile

    tmp = Path(tempfile.gettempdir())
    z = _zygote_for(_child_env({}, env, tmp, tmp / "unused.json", False, 0))
    if z is None:
        return False
    z.lock.release()
    return True


def _drop_zygote(z: _Zygote) -> None:
    _ZYGOTES.pop(z.key, None)
    z.close()


def _close_zygotes() -> None:
    for z in list(_ZYGOTES.values()):
        if z.owner == os.getpid():
            z.close()
    _ZYGOTES.clear()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _failed(label: str, items: dict, replica: ReplicaSpec | None, message: str | None,
            seconds: float) -> ScriptReplicaResult:
    empty = np.zeros(0)
    replica = replica or ReplicaSpec(name=label, overrides={k: v for k, v in items.items() if k != "branch"})
    msg = None if message is None else " ".join(message.split())
    return ScriptReplicaResult(name=label, replica=replica, epochs=np.zeros(0, dtype=np.int64), train_loss=empty,
                               train_accuracy=empty, val_loss=empty, val_accuracy=empty, step_loss=empty, lr=empty,
                               error=msg, reason=msg, seconds=float(seconds), steps=np.zeros(0, dtype=np.int64),
                               engine=ENGINE)


# ------------------------------------------------------------------------------------------ reading a run back


def _table(folder: Path, key: str) -> dict[str, np.ndarray]:
    """The parts of ``steps/`` or ``epochs/`` as float columns sorted by ``key``, duplicates dropped (the last
    written wins, as the importer does)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for part in sorted(folder.glob("part-*.parquet")):
        try:
            tables.append(pq.read_table(part))
        except (OSError, pa.ArrowInvalid):
            continue
    if not tables:
        return {}
    table = pa.concat_tables(tables, promote_options="default")
    cols = {name: np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=float)
            for name in table.column_names}
    if key not in cols:
        return {}
    k = cols[key]
    _, last = np.unique(k[::-1], return_index=True)  # first of the reversed = last written
    keep = np.sort(len(k) - 1 - last)
    keep = keep[np.argsort(k[keep], kind="stable")]
    return {name: col[keep] for name, col in cols.items()}


def _pick(cols: dict, names: tuple[str, ...], prefix: str = "") -> np.ndarray | None:
    """The accuracy column: a known name first, else any ``*accuracy`` column (of the validation set with
    ``prefix="val_"``; otherwise not of another evaluation)."""
    for n in names:
        if prefix + n in cols:
            return cols[prefix + n]
    for n, col in cols.items():
        if not n.endswith("accuracy") or n.startswith("val_precise_bn_") or n.startswith("train_eval_"):
            continue
        if (prefix and n.startswith(prefix)) or (not prefix and not n.startswith("val_")):
            return col
    return None


def result_from_run(run_dir: Path, name: str = "original") -> ScriptReplicaResult:
    """A recorded Keras run directory (``whyspike run``, a WhyspikeCallback, or a replica's) as a result: the
    original run of a probe compares with its replicas this way."""
    meta = _read_json(Path(run_dir) / "meta.json")
    if meta is None:
        raise UsageError(f"{run_dir}: not a whyspike run directory (no readable meta.json)")
    probe = meta.get("probe") or {}
    try:
        plan = _parse(dict(probe.get("interventions") or {}))
    except UsageError:
        plan = _parse({})
    return _from_run(name, _replica_spec(name, plan), Path(run_dir), 0.0)


def _from_run(label: str, replica: ReplicaSpec, run: Path, seconds: float) -> ScriptReplicaResult:
    ep = _table(run / "epochs", "epoch")
    st = _table(run / "steps", "step")
    epochs = ep.get("epoch", np.zeros(0)).astype(np.int64)
    n = len(epochs)
    nan = np.full(n, np.nan)

    def col(c, default=None):
        return np.array(c, dtype=float) if c is not None else (nan.copy() if default is None else default)

    train_loss = col(ep.get("loss"))
    train_acc = col(_pick(ep, ACCURACY_NAMES))
    val_loss = col(ep.get("val_loss"))
    val_acc = col(_pick(ep, ACCURACY_NAMES, "val_"))
    steps = st.get("step", np.zeros(0)).astype(np.int64)
    step_loss = st.get("loss", np.full(len(steps), np.nan)).astype(float)
    step_epoch = st.get("epoch")
    lr = col(ep.get("lr"))
    if "lr" in st and step_epoch is not None:  # the LR of each epoch's last step, as the in-process engines give it
        for i, e in enumerate(epochs):
            idx = np.flatnonzero((step_epoch == e) & np.isfinite(st["lr"]))
            if idx.size:
                lr[i] = st["lr"][idx[-1]]
    skip = {"epoch", "wall_time", "loss", "lr", "val_loss"}
    extra = {k: np.array(v, dtype=float) for k, v in ep.items() if k not in skip}
    meta = _read_json(run / "meta.json") or {}
    has_precise = any(k.startswith("val_precise_bn_") for k in extra)
    bn_eval = None if not has_precise else ("val" if "val_loss" in ep else "train")
    diverged, reason = False, None
    bad = np.flatnonzero(~np.isfinite(step_loss)) if len(step_loss) else np.zeros(0, dtype=int)
    bad_epoch = None
    if bad.size:
        cut = int(bad[0])
        bad_epoch = int(step_epoch[cut]) if step_epoch is not None else None
        reason = f"the training loss became {step_loss[cut]} at step {int(steps[cut])}" + \
            (f" (epoch {bad_epoch})" if bad_epoch is not None else "")
        step_loss, steps = step_loss[: cut + 1], steps[: cut + 1]
        diverged = True
    elif n and not np.all(np.isfinite(train_loss)):
        bad_epoch = int(epochs[np.flatnonzero(~np.isfinite(train_loss))[0]])
        reason = f"the training loss became non-finite in epoch {bad_epoch}"
        diverged = True
    if diverged and bad_epoch is not None:
        after = epochs >= bad_epoch
        for a in (train_loss, train_acc, val_loss, val_acc, *extra.values()):
            a[after] = np.nan
    result = ScriptReplicaResult(name=label, replica=replica, epochs=epochs, train_loss=train_loss,
                                 train_accuracy=train_acc, val_loss=val_loss, val_accuracy=val_acc,
                                 step_loss=step_loss, lr=lr, diverged=diverged, seconds=float(seconds), steps=steps,
                                 engine=ENGINE, run_dir=str(run), extra=extra, bn_eval=bn_eval, reason=reason)
    if meta.get("probe", {}).get("branch"):
        result.notes.append(f"branched from {meta['probe']['branch'].get('checkpoint')}")
    return result


# ------------------------------------------------------------------------------------------ BatchNorm share


def bn_series(result: ReplicaResult) -> tuple[np.ndarray, np.ndarray, str]:
    """(accuracy with the running BatchNorm statistics, accuracy with recomputed ones, the data both ran on) per
    epoch: the validation accuracy when fit had validation data, else the eval-mode training accuracy
    (``train_eval_accuracy``) against the training set re-evaluated after PreciseBN."""
    extra = getattr(result, "extra", None) or {}
    recomputed = extra.get("val_precise_bn_accuracy")
    if recomputed is None:
        raise UsageError(f"replica {result.name!r} has no accuracy with recomputed BatchNorm statistics — run it with "
                         "detailed=True, on a model with BatchNormalization layers and array data")
    on = getattr(result, "bn_eval", None) or "val"
    running = extra.get("train_eval_accuracy") if on == "train" else result.val_accuracy
    if running is None:
        raise UsageError(f"replica {result.name!r} has no eval-mode accuracy to compare the recomputed one with")
    return np.asarray(running, dtype=float), np.asarray(recomputed, dtype=float), on


def bn_share(result: ReplicaResult) -> float:
    """The share of the epoch-to-epoch variance of the (eval-mode) accuracy that disappears when the BatchNorm
    statistics are recomputed with the weights frozen: ``1 - var(diff(recomputed)) / var(diff(running))``.

    1 means every swing came from the running statistics, 0 none; a negative value, that recomputed statistics move
    more than the running ones. Epochs where either is missing are left out.

        >>> from types import SimpleNamespace
        >>> r = SimpleNamespace(name="r", val_accuracy=np.array([.5, .9, .5, .9]), bn_eval="val",
        ...                     extra={"val_precise_bn_accuracy": np.array([.8, .8, .8, .8])})
        >>> bn_share(r)
        1.0
    """
    running, recomputed, _ = bn_series(result)
    ok = np.isfinite(running) & np.isfinite(recomputed)
    pairs = ok[1:] & ok[:-1]
    if pairs.sum() < 2:
        raise UsageError(f"replica {result.name!r} has fewer than 3 consecutive epochs with both accuracies")
    da = np.diff(running)[pairs]
    db = np.diff(recomputed)[pairs]
    va = float(np.var(da, ddof=1))
    if va == 0.0:
        return 0.0
    return float(1.0 - np.var(db, ddof=1) / va)


__all__ = ["ENGINE", "ScriptReplicaResult", "bn_series", "bn_share", "result_from_run", "run_script_replica",
           "warm_up"]

"""A probe study: the baseline replicated over seeds (the noise band) and one arm per intervention, branched from
the checkpoint just before the jump, run by an executor, judged against the band.

A study is a directory, so that a killed or crashed study resumes without redoing finished replicas::

    STUDY/
      study.json            what is studied: target, metric, spike, arms, seeds, branch epoch, horizon, forks
      original.json         the original training (seed 0, from scratch): its curves locate the jump
      branch-eNNNN.pt       the original's model + optimizer state at the end of epoch NNNN (the branch, and the
                            fork points of baseline seed 0; torch, loaded weights_only)
      fork-<arm>_seedS-eNNNN.pt
                            that arm's seed-S replica's state at the end of epoch NNNN, where another arm forks
      replicas/<arm>.json   each arm's replicas, written atomically when the arm finishes
      bn.json               the BatchNorm re-evaluation of the original's checkpoints (evaluation only)
      result.json           the verdicts (schema ``whyspike/probe-v1``, read by ``whyspike report --probes``)

Two savings keep a study cheap without changing what it computes (bit for bit in the sequential engine, to
float32 rounding in the vectorized one; ``run_study(reuse=False)`` trains everything, the reference): baseline
seed 0 *is* the original (a seed-0 branch replays it), so its curve is taken from original.json; and an arm that
trains as another planned replica of its seed until a later epoch (schedule and skip interventions:
:func:`~whyspike.probe.interventions.shared_epoch`) continues, seed by seed, from that replica's state there (its
*parent*: the baseline or another arm, the one alike for longest, :mod:`~whyspike.probe.forks`), its earlier
epochs copied from the parent's curve. So the stages run parents first (keeping their states at the fork
points), then the arms forked from them, and so on.

The target is a factory: ``FILE.py:FUNC`` or ``package.module:FUNC``, FUNC() returning a
:class:`~whyspike.probe.spec.TrainingSpec`. Every worker imports it itself (nothing unpicklable crosses processes).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import io
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError, UsageError
from . import interventions as iv_mod
from .forks import Fork, plan_forks, stages
from .interventions import Intervention
from .spec import ReplicaError, ReplicaResult, ReplicaSpec, TrainingSpec
from .stats import Band, judge, seed_band

SCHEMA = "whyspike/probe-v1"
METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
# the branch starts this many epochs before the jump (the jump's "before" level needs a few points)
BRANCH_MARGIN = 3
# replicas train this many epochs past the latest place the jump can be (its "after" level needs a few points)
AFTER = 5

_FACTORIES: dict[str, Callable] = {}


# --------------------------------------------------------------------------------------------- the target
def load_factory(target: str) -> Callable[[], TrainingSpec]:
    """``FILE.py:FUNC`` or ``module:FUNC`` -> the function (one-line errors naming what is wrong)."""
    if target in _FACTORIES:
        return _FACTORIES[target]
    where, sep, func = target.rpartition(":")
    if not sep or not where or not func:
        raise UsageError(f"probe target {target!r}: expected FILE.py:FUNC or module:FUNC, FUNC() returning a "
                         "whyspike.probe.TrainingSpec")
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise InputError(where, "does not exist", "give the path of the Python file that defines the factory")
        name = "_whyspike_target_" + re.sub(r"\W", "_", str(path))
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise UsageError(f"probe target {target!r}: cannot import {where} ({exc})") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise UsageError(f"probe target {target!r}: {where} has no function {func}")
    _FACTORIES[target] = fn
    return fn


def build_spec(target: str) -> TrainingSpec:
    spec = load_factory(target)()
    if not isinstance(spec, TrainingSpec):
        raise UsageError(f"probe target {target!r} returned {type(spec).__name__}, not a whyspike.probe.TrainingSpec")
    return spec


# --------------------------------------------------------------------------------------------- one task
def run_task(task: dict) -> dict:
    """Train the replicas of one or more arms (in whatever process runs this). Replicas given together train
    together: the vectorized engine stacks every replica that can share a batch.

    ``task["replicas"]`` holds one dict per replica: ``arm``, ``ivs`` (intervention strings), ``seed`` (its data
    and noise seed), ``init_seed``, ``epochs`` (it trains until this epoch), ``start`` (the path of the state it
    continues from; None: from scratch) and optionally ``checkpoints`` (epochs whose end state it keeps). Returns
    ``{"arms": {arm: [result dicts]}, "states": {replica name: {epoch: torch.save bytes}}}`` (the kept states
    travel back as bytes: nothing but plain data crosses processes)."""
    import torch

    from .engines import run_replicas

    spec = build_spec(task["target"])
    starts: dict[str, dict] = {}
    replicas, arm_of, failed = [], [], []
    out: dict = {"arms": {job["arm"]: [] for job in task["replicas"]}, "states": {}}
    for job in task["replicas"]:
        arm, seed, path = job["arm"], int(job["seed"]), job.get("start")
        if path and path not in starts:
            starts[path] = torch.load(path, map_location="cpu", weights_only=True)
        rep = ReplicaSpec(name=f"{arm}#seed{seed}", init_seed=int(job["init_seed"]), data_seed=seed, noise_seed=seed,
                          start=starts.get(path), overrides={"epochs": int(job["epochs"])},
                          checkpoint_epochs=frozenset(int(e) for e in job.get("checkpoints") or ()))
        try:
            for text in job["ivs"]:
                rep = iv_mod.apply(iv_mod.parse(text), spec, rep, task.get("spike"))
        except ReplicaError as exc:
            failed.append((arm, rep.name, str(exc)))
            continue
        replicas.append(rep)
        arm_of.append(arm)
    for arm, res in zip(arm_of, run_replicas(spec, replicas, engine=task.get("engine", "auto"))):
        out["arms"][arm].append(res.to_dict())
        for epoch, state in res.checkpoints.items():
            buf = io.BytesIO()
            torch.save(state, buf)
            out["states"].setdefault(res.name, {})[int(epoch)] = buf.getvalue()
    for arm, name, error in failed:
        out["arms"][arm].append(ReplicaResult(name, ReplicaSpec(name=name), *(np.zeros(0),) * 7,
                                              error=error).to_dict())
    return out


# --------------------------------------------------------------------------------------------- the study
def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False, default=_default))
    os.replace(tmp, path)


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def open_study(out: Path, config: dict) -> None:
    """Make the study directory, or check that the one there holds this study (one-line errors otherwise)."""
    try:
        (out / "replicas").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot be used as a study directory ({exc.strerror or exc})",
                         "give --out a directory that can be written") from None
    saved = out / "study.json"
    if saved.exists():
        try:
            old = json.loads(saved.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(saved, f"is not readable ({exc})",
                             "give another --out, or delete the directory to start the study again") from None
        if isinstance(old, dict) and old.get("config") and old["config"] != config:
            raise UsageError(f"{out} holds another study ({old['config']}); give another --out, or the same "
                             "arguments to resume it")


def finished_arm(path: Path) -> list | None:
    """An arm's saved results, or None when it has to run (no file, or one that cannot be read: set aside as
    ``.corrupt`` so that the arm runs again and nothing is overwritten unseen)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if isinstance(data, list):
            return data
    except (OSError, ValueError):
        pass
    os.replace(path, path.with_name(path.name + ".corrupt"))
    return None


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.=+-]", "_", name)


def _arm_file(arm: str) -> str:
    return _safe_name(arm) + ".json"


def _diagnose_original(res: ReplicaResult, metric: str, setup=None) -> tuple[int | None, Any]:
    """The most significant jump of ``metric`` in the original training, by whyspike's own detector; ``setup``
    (a :class:`~whyspike.run.Setup`, what a recorded run knows: eval-set size, BatchNorm, weight decay) sharpens the
    detection and the causes."""
    from ..diagnosis import diagnose
    from ..run import Run, Source
    from ..run.model import make_series

    run = Run(Source("probe original", "probe"))
    if setup is not None:
        run.setup = setup
    for m in METRICS:
        y = np.asarray(getattr(res, m), dtype=float)
        if len(y) and np.isfinite(y).any():
            run.add(make_series(m, "epoch", np.asarray(res.epochs, dtype=float), y))
    if len(res.lr):
        run.add(make_series("lr", "epoch", np.asarray(res.epochs, dtype=float), np.asarray(res.lr, float)))
    d = diagnose(run, metric=metric)
    return (int(d.spikes[0].at) if d.spikes else None), d


def run_study(target: str, out: str | os.PathLike, *, spike: str | int = "auto",
              interventions: list[str] | None = None, seeds: int = 3, metric: str = "val_accuracy",
              executor: str = "local", workers: int | None = None, address: str | None = None,
              engine: str = "auto", progress: bool | None = None, ray_init: dict | None = None,
              reuse: bool = True) -> dict:
    """Run (or resume) the study in ``out``; returns the result document (also written to ``result.json``).

    ``reuse`` (default): baseline seed 0 is the original's own curve, and an arm that trains as the baseline or
    another arm until a later epoch (a schedule or skip intervention) continues from that replica's state there
    (see :mod:`~whyspike.probe.forks`). ``reuse=False`` trains every replica from the branch: the same curves (bit
    for bit in the sequential engine), at a higher cost."""
    from .executors import run_tasks

    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r}: a probe compares one of {', '.join(METRICS)}")
    if not isinstance(seeds, int) or seeds < 1:
        raise UsageError(f"--seeds {seeds!r}: must be a whole number >= 1")
    out = Path(out)
    asked = [iv_mod.parse(s) for s in (interventions or [])]
    config = {"schema": SCHEMA, "target": target, "metric": metric, "seeds": seeds, "engine": engine,
              "spike_requested": spike, "interventions": [str(i) for i in asked]}
    open_study(out, config)
    spec = build_spec(target)
    saved = out / "study.json"
    t0 = time.perf_counter()
    original = _original(spec, out, metric)
    at, diagnosis = _diagnose_original(original, metric)
    if spike != "auto":
        at = int(spike)
    if not asked:
        asked = default_plan(diagnosis, at, spec)
    shifts = [i.expected_shift() or 0.0 for i in asked]
    if at is None:
        branch_epoch, horizon = None, spec.epochs
    else:
        branch_epoch = int(min(at, at + min(shifts, default=0))) - BRANCH_MARGIN - 1
        branch_epoch = branch_epoch if branch_epoch >= 0 else None
        horizon = int(min(spec.epochs, at + max([abs(s) for s in shifts] + [0]) + AFTER))

    def epochs_of(arm: str) -> int:
        """An arm trains until AFTER epochs past the latest place its jump can be (an unshifted arm stops early)."""
        if at is None:
            return horizon
        k = max([abs(i.expected_shift() or 0.0) for i in asked if str(i) == arm] + [0.0])
        return int(min(spec.epochs, at + k + AFTER))

    branch = _save_branch(out, spec, original, branch_epoch) if branch_epoch is not None else None
    arms = {"baseline": []} | {str(i): [str(i)] for i in asked if not i.evaluation_only}
    first = -1 if branch_epoch is None else branch_epoch  # the replicas' state before their first epoch
    # lazy divergence: an arm that trains as the baseline or another arm until some epoch continues from that
    # replica's state there
    forks: dict[str, Fork] = plan_forks({a: [iv_mod.parse(t) for t in ivs] for a, ivs in arms.items()},
                                        {a: epochs_of(a) for a in arms}, spec, at, first) if reuse else {}
    fork_doc = {arm: f.to_dict() for arm, f in forks.items()}
    _atomic_json(saved, {"config": config, "spike": at, "arms": list(arms), "branch_epoch": branch_epoch,
                         "horizon": horizon, "forks": fork_doc, "baseline_seed0": "original" if reuse else "trained",
                         "evaluation_only": [str(i) for i in asked if i.evaluation_only]})
    todo = [arm for arm in arms if finished_arm(out / "replicas" / _arm_file(arm)) is None]
    # baseline seed 0 is the original (a seed-0 branch replays it): its epochs are taken, not trained again
    seed0 = _as_baseline_seed0(original, spec, first, epochs_of("baseline")) if reuse else None
    spe = spec.steps_per_epoch
    errors: dict[str, str] = {}
    tasks: dict[str, dict] = {}
    bar = _Progress(len(arms) * seeds, (len(arms) - len(todo)) * seeds, progress)

    def replica_runs(arm: str) -> dict[int, ReplicaResult]:
        """An arm's finished replicas by seed (baseline seed 0: the original when reused)."""
        runs = {0: original} if reuse and arm == "baseline" else {}
        for d in finished_arm(out / "replicas" / _arm_file(arm)) or []:
            r = ReplicaResult.from_dict(d)
            m = re.fullmatch(re.escape(arm) + r"#seed(\d+)", r.name)
            if m and r.ok and int(m.group(1)) not in runs:
                runs[int(m.group(1))] = r
        return runs

    def jobs(arm: str) -> list[dict]:
        """The replicas ``arm`` still has to train (keeping their states where arms still to train fork from them):
        each from the branch, or from its fork point when the parent's replica of its seed reached it (for baseline
        seed 0 the original's checkpoint, else the state the parent kept)."""
        keep = sorted({f.epoch for a, f in forks.items() if f.parent == arm and a in todo})

        def job(seed: int, start, fork: Fork | None = None) -> dict:
            return {"arm": arm, "ivs": arms[arm], "seed": seed, "init_seed": seed if branch is None else 0,
                    "epochs": epochs_of(arm), "start": str(start) if start else None,
                    "fork": fork.to_dict() if fork else None, "checkpoints": keep}

        if arm == "baseline":
            return [job(s, branch) for s in range(1 if reuse else 0, seeds)]
        if arm not in forks:
            return [job(s, branch) for s in range(seeds)]
        fork, out_jobs = forks[arm], []
        parent = replica_runs(fork.parent)
        for s in range(seeds):
            state = (_save_branch(out, spec, original, fork.epoch) if s == 0 and fork.parent == "baseline"
                     else out / _fork_file(f"{fork.parent}#seed{s}", fork.epoch))
            reached = s in parent and fork.epoch in parent[s].epochs and state.exists()
            out_jobs.append(job(s, state, fork) if reached else job(s, branch))  # else: its own way from the branch
        return out_jobs

    def write(arm: str, runs: list[ReplicaResult], fork_of: dict) -> None:
        """Write a finished arm: baseline seed 0 put in front, a forked replica's epochs through its fork taken
        from the parent's replica of its seed (trained exactly alike until then)."""
        if arm == "baseline" and seed0 is not None:
            runs = [seed0, *runs]
        parents: dict[str, dict] = {}
        for k, r in enumerate(runs):
            fork = fork_of.get(r.name)
            if fork is not None and r.ok:
                if fork["from"] not in parents:
                    parents[fork["from"]] = replica_runs(fork["from"])
                parent = parents[fork["from"]][int(r.name.rpartition("#seed")[2])]
                runs[k] = _stitch(_window(parent, first + 1, fork["epoch"], spe), r)
        _atomic_json(out / "replicas" / _arm_file(arm), [r.to_dict() for r in runs])
        bar.advance(len(runs))

    def done(tid: str, results: dict) -> None:
        for name, states in results.get("states", {}).items():  # first: a written baseline implies its states
            for epoch, blob in states.items():
                _atomic_bytes(out / _fork_file(name, int(epoch)), blob)
        fork_of = {f"{j['arm']}#seed{j['seed']}": j["fork"] for j in tasks[tid]["replicas"]}
        for arm, res in results["arms"].items():
            write(arm, [ReplicaResult.from_dict(d) for d in res], fork_of)

    def failed(tid: str, message: str) -> None:
        for arm in dict.fromkeys(j["arm"] for j in tasks[tid]["replicas"]):
            errors[arm] = message  # not written: a resumed study tries the arm again
            bar.advance(seeds)

    def run_stage(stage: list[str]) -> None:
        work = {arm: jobs(arm) for arm in stage}
        if "baseline" in work and not work["baseline"]:  # one seed, the original's: nothing to train
            write("baseline", [], {})
        work = {arm: j for arm, j in work.items() if j}
        # arms are packed into as many tasks as there are workers: replicas of one task train together (stacked)
        n_tasks = 1 if executor == "inline" else max(1, min(len(work), workers or os.cpu_count() or 1))
        packs: list[list[str]] = [[] for _ in range(n_tasks)]
        for i, arm in enumerate(work):
            packs[i % n_tasks].append(arm)
        stage_tasks = {"+".join(p): {"target": target, "spike": at, "engine": engine,
                                     "replicas": [j for arm in p for j in work[arm]]} for p in packs if p}
        tasks.update(stage_tasks)
        run_tasks(stage_tasks, run_task, done, failed, executor=executor, workers=workers, address=address,
                  ray_init=ray_init)

    with bar:
        # the baseline's seeds and every arm that diverges at the branch, keeping their states at the fork points;
        # then the arms forked from them, from those states, and so on
        for stage in stages(list(arms), forks):
            run_stage([arm for arm in stage if arm in todo])
    bn = _bn_arms(spec, out, original, [i for i in asked if i.evaluation_only])
    result = _judge(out, config, at, arms, errors, bn, branch_epoch, horizon, asked, fork_doc)
    result["seconds"] = time.perf_counter() - t0
    result["original_seconds"] = original.seconds
    _atomic_json(out / "result.json", result)
    return result


def _original(spec: TrainingSpec, out: Path, metric: str) -> ReplicaResult:
    """The original training (seed 0, from scratch, every epoch's state kept in memory for the branch and BN)."""
    from .engines import run_replicas

    path = out / "original.json"
    if path.exists():
        return ReplicaResult.from_dict(json.loads(path.read_text()))
    res = run_replicas(spec, [ReplicaSpec("original", checkpoint_epochs=frozenset(range(spec.epochs)))],
                       engine="sequential")[0]
    if not res.ok:
        raise UsageError(f"the original training failed: {res.error}")
    _CHECKPOINTS[str(out)] = res.checkpoints
    _atomic_json(path, res.to_dict())
    return res


# checkpoints of the original training, by study directory (kept in memory for this process's BN re-evaluation;
# a resumed study re-trains the original when it needs them)
_CHECKPOINTS: dict[str, dict] = {}


def _checkpoints(spec: TrainingSpec, out: Path) -> dict:
    from .engines import run_replicas

    ck = _CHECKPOINTS.get(str(out))
    if ck is None:
        res = run_replicas(spec, [ReplicaSpec("original", checkpoint_epochs=frozenset(range(spec.epochs)))],
                           engine="sequential")[0]
        ck = _CHECKPOINTS[str(out)] = res.checkpoints
    return ck


def _fork_file(replica: str, epoch: int) -> str:
    """Where a replica's state at a fork point is kept (the arms forked from it continue from it)."""
    return f"fork-{_safe_name(replica)}-e{epoch:04d}.pt"


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _window(res: ReplicaResult, first: int, last: int, steps_per_epoch: int) -> ReplicaResult:
    """``res`` restricted to epochs ``first`` .. ``last`` (and their steps)."""
    e = (res.epochs >= first) & (res.epochs <= last)
    st = (res.steps >= first * steps_per_epoch) & (res.steps < (last + 1) * steps_per_epoch)
    return dataclasses.replace(res, epochs=res.epochs[e], train_loss=res.train_loss[e],
                               train_accuracy=res.train_accuracy[e], val_loss=res.val_loss[e],
                               val_accuracy=res.val_accuracy[e], lr=res.lr[e], step_loss=res.step_loss[st],
                               steps=res.steps[st], checkpoints={}, reused={})


def _stitch(before: ReplicaResult, rest: ReplicaResult) -> ReplicaResult:
    """A forked replica's result over all its epochs: ``before`` (the replica it forked from, through the fork)
    then ``rest`` (what it trained itself)."""
    def cat(key: str):
        return np.concatenate([getattr(before, key), getattr(rest, key)])

    return dataclasses.replace(rest, epochs=cat("epochs"), train_loss=cat("train_loss"),
                               train_accuracy=cat("train_accuracy"), val_loss=cat("val_loss"),
                               val_accuracy=cat("val_accuracy"), lr=cat("lr"), step_loss=cat("step_loss"),
                               steps=cat("steps"),
                               reused={"from": before.name, "epochs": [int(before.epochs[0]), int(before.epochs[-1])]})


def _as_baseline_seed0(original: ReplicaResult, spec: TrainingSpec, first: int, end: int) -> ReplicaResult:
    """Baseline seed 0 over epochs ``first + 1`` .. ``end - 1``: the original's own numbers. A seed-0 replica
    branched from the original's state replays the original (bit for bit in the sequential engine), so it is not
    trained again."""
    spe = spec.steps_per_epoch
    w = _window(original, first + 1, end - 1, spe)
    start = {"epoch": first, "step": (first + 1) * spe} if first >= 0 else None
    return dataclasses.replace(w, name="baseline#seed0", seconds=0.0,
                               replica=ReplicaSpec("baseline#seed0", overrides={"epochs": end}, start=start),
                               reused={"from": "original", "epochs": [first + 1, end - 1]})


def _save_branch(out: Path, spec: TrainingSpec, original: ReplicaResult, epoch: int) -> Path:
    import torch

    path = out / f"branch-e{epoch:04d}.pt"
    if not path.exists():
        state = _checkpoints(spec, out)[epoch]
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
    return path


def _bn_arms(spec: TrainingSpec, out: Path, original: ReplicaResult, evals: list[Intervention]) -> dict:
    if not evals:
        return {}
    from .bn_eval import reevaluate

    path = out / "bn.json"
    if path.exists():
        return json.loads(path.read_text())
    try:
        bn = reevaluate(spec, _checkpoints(spec, out))
    except ReplicaError as exc:
        bn = {"error": str(exc)}
    _atomic_json(path, _finite(bn))
    return bn


def _finite(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def default_plan(diagnosis, at: int | None, spec: TrainingSpec) -> list[Intervention]:
    """The experiments that settle the candidate causes of the jump (the seed band is always run)."""
    plan: list[str] = []
    causes = [c.id for s in (diagnosis.spikes[:1] if diagnosis is not None else []) for c in s.causes]
    has_bn = _has_bn(spec)
    for cid in causes:
        if cid == "lr_schedule" and spec.schedule is not None:
            plan += ["lr.shift=+3", "lr.decay=off"]
        elif cid == "lr_warmup" and spec.schedule is not None:
            plan.append("lr.warmup=2")
        elif cid == "batchnorm_statistics" and has_bn:
            plan += ["bn.recompute", "bn.norm=group"]
        elif cid == "optimization_instability":
            plan.append("lr.scale=0.5")
        elif cid == "grokking" and spec.weight_decay:
            plan.append("wd=off")
        elif cid == "stochastic" and spec.optimizer == "sgd" and spec.momentum:
            plan.append("momentum=off")
    if at is None and has_bn:
        plan.append("bn.recompute")
    return [iv_mod.parse(s) for s in dict.fromkeys(plan)]


def _has_bn(spec: TrainingSpec) -> bool:
    from .bn_eval import _bn_modules

    try:
        return bool(_bn_modules(spec.model_fn()))
    except Exception:  # noqa: BLE001
        return False


def _judge(out: Path, config: dict, at, arms: dict, errors: dict, bn: dict, branch_epoch, horizon,
           asked: list[Intervention], forks: dict | None = None) -> dict:
    metric = config["metric"]
    loaded = {}
    for arm in arms:
        f = out / "replicas" / _arm_file(arm)
        loaded[arm] = [ReplicaResult.from_dict(d) for d in finished_arm(f) or []]
    radius = 3.0
    base = loaded["baseline"]
    band = seed_band(base, metric, at, radius) if at is not None else Band(metric, [])
    result: dict = {"schema": SCHEMA, "metric": metric, "target": config["target"],
                    "spike": {"at": at, "branch_epoch": branch_epoch, "horizon": horizon},
                    "baseline": {"runs": [_run(r, metric) for r in base if r.ok],
                                 "band": {"x": band.x, "lo": band.lo, "hi": band.hi, "median": band.median},
                                 "jumps": band.to_dict()["jumps"], "reproducible": band.reproducible,
                                 "errors": [r.error for r in base if not r.ok] + (
                                     [errors["baseline"]] if "baseline" in errors else [])},
                    "interventions": []}
    if forks is not None:  # the arms that continued from another replica's state at the end of that epoch
        result["spike"]["forks"] = forks
    for iv in asked:
        name = str(iv)
        if iv.evaluation_only:
            result["interventions"].append(_bn_verdict(name, bn, metric))
            continue
        if name in errors:
            result["interventions"].append({"name": name, "verdict": "error", "message": errors[name], "runs": []})
            continue
        treated = loaded.get(name, [])
        if at is None:
            v = {"name": name, "verdict": "no_jump", "message": "the original training shows no significant jump in "
                 f"{metric}: nothing to move or remove"}
        else:
            v = judge(name, band, treated, at, radius, iv.expected_shift()).to_dict()
        v["description"] = _describe(iv)
        v["runs"] = [_run(r, metric) for r in treated if r.ok]
        v["errors"] = [f"{r.name}: {r.error}" for r in treated if not r.ok]
        result["interventions"].append(v)
    return result


def _bn_verdict(name: str, bn: dict, metric: str) -> dict:
    if "error" in bn:
        return {"name": name, "verdict": "error", "message": bn["error"], "runs": []}
    share = bn.get("share")
    key = "recomputed" if name == "bn.recompute" else "batch_stats"
    runs = [{"name": "as trained", "x": bn["epochs"], "y": bn["as_trained"]},
            {"name": name, "x": bn["epochs"], "y": bn[key]}]
    if name == "bn.recompute":
        verdict = "removed" if share is not None and share >= 0.5 else "unchanged"
        msg = (f"recomputing BatchNorm statistics with frozen weights removes {share:.0%} of the epoch-to-epoch "
               "variance of val accuracy" if share is not None and share >= 0 else
               "recomputing BatchNorm statistics with frozen weights removes none of the epoch-to-epoch variance of "
               f"val accuracy (it is {-share:.0%} larger with recomputed statistics)" if share is not None else
               "too few epochs to compare variances")
    else:
        verdict, msg = "unchanged", "evaluated with batch statistics (train-mode BN) for comparison"
    return {"name": name, "verdict": verdict, "share": share, "message": msg, "runs": runs,
            "description": _describe(Intervention(name))}


def _run(r: ReplicaResult, metric: str) -> dict:
    y = getattr(r, metric)
    run = {"name": r.name, "x": [int(e) for e in r.epochs],
           "y": [None if not np.isfinite(v) else float(v) for v in y]}
    if r.reused:  # epochs not trained for this replica: the original's (seed 0), or the parent's through a fork
        run["reused"] = r.reused
    return run


def _describe(iv: Intervention) -> str:
    for line in (iv_mod.__doc__ or "").splitlines():
        if line.startswith(f"``{iv.name}"):
            return line.split("``", 2)[2].strip()
    return str(iv)


class _Progress:
    """Replicas done / running / left on stderr (rich), when stderr is a terminal or ``show`` says so."""

    def __init__(self, total: int, done: int, show: bool | None):
        self.total, self.done = total, done
        self.show = sys.stderr.isatty() if show is None else show
        self._p = None

    def __enter__(self):
        if self.show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("probe replicas"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[left]} left"), TimeElapsedColumn(),
                               console=Console(stderr=True), transient=True)
            self._p.__enter__()
            self._task = self._p.add_task("probe", total=self.total, completed=self.done,
                                          left=self.total - self.done)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._p is not None:
            self._p.update(self._task, completed=self.done, left=self.total - self.done)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

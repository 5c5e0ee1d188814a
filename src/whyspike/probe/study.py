"""A probe study: the baseline replicated over seeds (the noise band) and one arm per intervention, branched from
the checkpoint just before the jump, run by an executor, judged against the band.

A study is a directory, so that a killed or crashed study resumes without redoing finished replicas::

    STUDY/
      study.json            what is studied: target, metric, spike, arms, seeds, branch epoch, horizon
      original.json         the original training (seed 0, from scratch): its curves locate the jump
      branch.pt             model + optimizer state at the end of the branch epoch (torch, loaded weights_only)
      replicas/<arm>.json   each arm's replicas, written atomically when the arm finishes
      bn.json               the BatchNorm re-evaluation of the original's checkpoints (evaluation only)
      result.json           the verdicts (schema ``whyspike/probe-v1``, read by ``whyspike report --probes``)

The target is a factory: ``FILE.py:FUNC`` or ``package.module:FUNC``, FUNC() returning a
:class:`~whyspike.probe.spec.TrainingSpec`. Every worker imports it itself (nothing unpicklable crosses processes).
"""

from __future__ import annotations

import importlib
import importlib.util
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
def run_task(task: dict) -> dict[str, list[dict]]:
    """Train the replicas of one or more arms (in whatever process runs this) and return their results as dicts, by
    arm. Arms given together train together: the vectorized engine stacks every replica that can share a batch."""
    import torch

    from .engines import run_replicas

    spec = build_spec(task["target"])
    start = None
    if task.get("branch"):
        start = torch.load(task["branch"], map_location="cpu", weights_only=True)
    replicas, arm_of, failed = [], [], []
    for arm, texts in task["arms"].items():
        ivs = [iv_mod.parse(s) for s in texts]
        for seed in task["seeds"]:
            rep = ReplicaSpec(name=f"{arm}#seed{seed}", init_seed=seed if start is None else 0,
                              data_seed=seed, noise_seed=seed, start=start,
                              overrides={"epochs": int(task["epochs"][arm])})
            try:
                for iv in ivs:
                    rep = iv_mod.apply(iv, spec, rep, task.get("spike"))
            except ReplicaError as exc:
                failed.append((arm, rep.name, str(exc)))
                continue
            replicas.append(rep)
            arm_of.append(arm)
    out: dict[str, list[dict]] = {arm: [] for arm in task["arms"]}
    for arm, res in zip(arm_of, run_replicas(spec, replicas, engine=task.get("engine", "auto"))):
        out[arm].append(res.to_dict())
    for arm, name, error in failed:
        out[arm].append(ReplicaResult(name, ReplicaSpec(name=name), *(np.zeros(0),) * 7, error=error).to_dict())
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


def _arm_file(arm: str) -> str:
    return re.sub(r"[^\w.=+-]", "_", arm) + ".json"


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
              engine: str = "auto", progress: bool | None = None, ray_init: dict | None = None) -> dict:
    """Run (or resume) the study in ``out``; returns the result document (also written to ``result.json``)."""
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
    _atomic_json(saved, {"config": config, "spike": at, "arms": list(arms), "branch_epoch": branch_epoch,
                         "horizon": horizon, "evaluation_only": [str(i) for i in asked if i.evaluation_only]})
    todo = {arm: ivs for arm, ivs in arms.items() if finished_arm(out / "replicas" / _arm_file(arm)) is None}
    # arms are packed into as many tasks as there are workers: replicas of one task train together (stacked)
    n_tasks = 1 if executor == "inline" else max(1, min(len(todo), workers or os.cpu_count() or 1))
    packs: list[dict] = [{} for _ in range(n_tasks)]
    for i, (arm, ivs) in enumerate(todo.items()):
        packs[i % n_tasks][arm] = ivs
    tasks = {"+".join(p): {"target": target, "arms": p, "seeds": list(range(seeds)), "spike": at,
                           "branch": str(branch) if branch else None, "engine": engine,
                           "epochs": {arm: epochs_of(arm) for arm in p}}
             for p in packs if p}
    errors: dict[str, str] = {}
    bar = _Progress(len(arms) * seeds, (len(arms) - len(todo)) * seeds, progress)

    def done(tid: str, results: dict) -> None:
        for arm, res in results.items():
            _atomic_json(out / "replicas" / _arm_file(arm), res)
            bar.advance(len(res))

    def failed(tid: str, message: str) -> None:
        for arm in tasks[tid]["arms"]:
            errors[arm] = message  # not written: a resumed study tries the arm again
            bar.advance(seeds)

    with bar:
        run_tasks(tasks, run_task, done, failed, executor=executor, workers=workers, address=address,
                  ray_init=ray_init)
    bn = _bn_arms(spec, out, original, [i for i in asked if i.evaluation_only])
    result = _judge(out, config, at, arms, errors, bn, branch_epoch, horizon, asked)
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
           asked: list[Intervention]) -> dict:
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
    return {"name": r.name, "x": [int(e) for e in r.epochs],
            "y": [None if not np.isfinite(v) else float(v) for v in y]}


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

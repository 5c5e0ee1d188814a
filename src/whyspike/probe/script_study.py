"""A black-box probe study: the user's unchanged training script re-run with one factor changed per arm, against a
band of baseline seeds, branched from the recorded checkpoint just before the jump — ``whyspike probe train.py``.

The same study as :func:`whyspike.probe.study.run_study` (the same directory contract, resume and
``whyspike/probe-v1`` result), with the black-box engine (:mod:`whyspike.probe.engines.blackbox`) as the trainer::

    STUDY/
      study.json            what is studied: script, arguments, metric, spike, arms, seeds, branch epoch, horizon
      original.json         the original run (seed=0, checkpoints at every epoch): its curves locate the jump
      original/runs/...     its run directory; the branch is its checkpoints/epoch-NNNN
      replicas/<arm>.json   each arm's replicas, written atomically when the arm finishes
      replicas/<arm>/seedK  each replica's run directory and log (child.log)
      bn.json               bn.recompute: a detailed re-run of the original (PreciseBN columns), its share
      result.json           the verdicts (schema ``whyspike/probe-v1``)

Seeds. The script's own seeds are pinned (``seed=0``: the data it generates stay the data the checkpoints were
trained on, so a branch is valid); replica K varies the streams ``fit`` draws per epoch, ``seed.data=K`` (data
order) and ``seed.noise=K`` (dropout and other random layers), keyed by epoch, so that seed 0 replays the original
exactly from the branch. A script whose training takes neither stream (``shuffle=False`` and no random layer, or a
PyTorch loop) varies ``seed=K`` instead, with full re-runs (a branch would be the same training every time).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import InputError, UsageError
from . import interventions as iv_mod
from .interventions import Intervention
from .stats import seed_band
from .study import (AFTER, BRANCH_MARGIN, METRICS, SCHEMA, _arm_file, _atomic_json, _describe,
                    _diagnose_original, _finite, _judge, _Progress, finished_arm, open_study)

ENGINE = "blackbox"
STREAMS = ("seed.data", "seed.noise")  # per-epoch seed streams: varied for the band, branch-safe
CHECKPOINT_ALL = 1_000_000  # "keep every epoch's checkpoint" for the original run


# --------------------------------------------------------------------------------------------- one task
def run_script_task(task: dict) -> dict[str, list[dict]]:
    """Run the replicas of one arm (each a child process of this one) and return their results as dicts:
    ``{arm: [result, ...]}``. A replica that cannot run comes back as a result with ``error`` (never raised)."""
    from .engines.blackbox import run_script_replica

    arm = task["arm"]
    folder = Path(task["dir"])
    shutil.rmtree(folder, ignore_errors=True)  # what a killed earlier attempt left: never mixed into this one
    results = []
    for k in task["seeds"]:
        items = dict(task["interventions"])
        seed = 0
        if task["seed_mode"] == "streams":
            items.update({s: str(k) for s in task["streams"]})
        else:
            seed = k
        env = dict(task.get("env") or {})
        if task.get("max_epochs"):
            env["WHYSPIKE_MAX_EPOCHS"] = str(int(task["max_epochs"]))
        r = run_script_replica(Path(task["script"]), list(task["argv"]), interventions=items, seed=seed,
                               branch=Path(task["branch"]) if task.get("branch") else None,
                               out_dir=folder / f"seed{k}", env=env, timeout=task.get("timeout"),
                               detailed=bool(task.get("detailed")), name=f"{arm}#seed{k}", cwd=Path(task["cwd"]))
        results.append(r.to_dict())
    return {arm: results}


# --------------------------------------------------------------------------------------------- the study
def run_script_study(script: str | os.PathLike, argv: list[str] | None, out: str | os.PathLike, *,
                     spike: str | int = "auto", interventions: list[str] | None = None, seeds: int = 3,
                     metric: str = "val_accuracy", executor: str = "local", workers: int | None = None,
                     address: str | None = None, progress: bool | None = None, timeout: float | None = None,
                     env: Mapping[str, str] | None = None, ray_init: dict | None = None) -> dict:
    """Run (or resume) the black-box study of ``script argv...`` in ``out``; returns the result document (also
    written to ``result.json``). ``env`` is added to every run's environment (``WHYSPIKE_MAX_EPOCHS`` caps the
    original, say); ``timeout`` (seconds) bounds each replica. ``metric`` falls back from ``val_*`` to ``train_*``
    when the script has no validation data (noted in the result)."""
    from .executors import run_tasks

    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r}: a probe compares one of {', '.join(METRICS)}")
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise UsageError(f"--seeds {seeds!r}: must be a whole number >= 1")
    script = Path(script)
    if not script.is_file():
        raise InputError(script, "no such training script", "give the path of the Python script that trains")
    if script.suffix != ".py":
        raise UsageError(f"probe target {str(script)!r}: a black-box target is a Python script (train.py); a "
                         "factory is FILE.py:FUNC")
    argv = [str(a) for a in (argv or [])]
    env = {str(k): str(v) for k, v in dict(env or {}).items()}
    cwd = Path.cwd()
    out = Path(out)
    asked = [iv_mod.parse(s) for s in (interventions or [])]
    config = {"schema": SCHEMA, "target": str(script.resolve()), "argv": argv, "engine": ENGINE, "metric": metric,
              "seeds": seeds, "spike_requested": spike, "interventions": [str(i) for i in asked], "env": env}
    open_study(out, config)
    saved = out / "study.json"
    t0 = time.perf_counter()
    notes: list[str] = []
    original, run_dir = _original(script, argv, out, env, timeout, cwd)
    streams = [s for s in STREAMS if s in original.replica.overrides]
    used = _metric(original, metric, notes)
    setup = _setup(run_dir)
    at, diagnosis = _diagnose_original(original, used, setup)
    n_epochs = int(original.epochs[-1]) + 1
    if spike != "auto":
        at = int(spike)
        if not 0 < at < n_epochs:
            raise UsageError(f"--spike {at}: the original training has epochs 0-{n_epochs - 1}; the jump's epoch must "
                             "lie after the first one")
    if not asked:
        asked = script_plan(diagnosis, at, setup, original)
    seed_mode = "streams" if streams else "seed"
    if seed_mode == "seed" and seeds > 1:
        notes.append("the training takes no per-epoch seed stream (shuffle=False and no random layer, or not a "
                     "Keras fit): seeds vary seed=K, every script seed, in full re-runs")
    shifts = [i.expected_shift() or 0.0 for i in asked]
    if at is None:
        branch_epoch, horizon = None, n_epochs
    else:
        branch_epoch = int(min(at, at + min(shifts, default=0))) - BRANCH_MARGIN - 1
        branch_epoch = branch_epoch if branch_epoch >= 0 else None
        horizon = int(min(n_epochs, at + max([abs(s) for s in shifts] + [0]) + AFTER))
    branch = None
    if branch_epoch is not None and seed_mode == "streams":
        branch, branch_epoch = _checkpoint(run_dir, branch_epoch)
    else:
        branch_epoch = None
    if branch is None and at is not None:
        notes.append("no checkpoint before the jump to branch from: every replica is a full re-run")

    def epochs_of(arm: str) -> int:
        """An arm trains until AFTER epochs past the latest place its jump can be (an unshifted arm stops early)."""
        if at is None:
            return horizon
        k = max([abs(i.expected_shift() or 0.0) for i in asked if str(i) == arm] + [0.0])
        return int(min(n_epochs, at + k + AFTER))

    arms = {"baseline": {}} | {str(i): {i.name: i.value} for i in asked if not i.evaluation_only}
    evals = [i for i in asked if i.evaluation_only]
    _atomic_json(saved, {"config": config, "spike": at, "arms": list(arms), "branch_epoch": branch_epoch,
                         "horizon": horizon, "evaluation_only": [str(i) for i in evals], "seed_streams": streams,
                         "seed_mode": seed_mode, "metric_used": used})
    seed_list = list(range(seeds))
    common = {"script": str(script.resolve()), "argv": argv, "cwd": str(cwd), "env": env, "timeout": timeout,
              "streams": streams, "seed_mode": seed_mode}
    tasks: dict[str, dict] = {}
    for arm, items in arms.items():
        if finished_arm(out / "replicas" / _arm_file(arm)) is not None:
            continue
        e = epochs_of(arm)
        tasks[arm] = common | {"arm": arm, "interventions": items, "seeds": seed_list,
                               "branch": str(branch) if branch else None,
                               "max_epochs": max(1, e - (branch_epoch + 1)) if branch else e,
                               "dir": str(out / "replicas" / _arm_file(arm).removesuffix(".json"))}
    bn_path = out / "bn.json"
    bn: dict = {}
    if any(i.name == "bn.recompute" for i in evals):
        if bn_path.exists():
            bn = json.loads(bn_path.read_text())
        elif setup is not None and setup.has_batchnorm is False:
            bn = {"error": "bn.recompute: the model has no BatchNormalization layer: there are no statistics to "
                           "recompute"}
            _atomic_json(bn_path, bn)
        else:  # a detailed re-run of the original (the same seeds), evaluated with recomputed statistics per epoch
            tasks["bn.recompute"] = common | {"arm": "bn.recompute", "interventions": {}, "seeds": [0],
                                              "seed_mode": "streams" if streams else "seed", "branch": None,
                                              "max_epochs": None, "detailed": True,
                                              "dir": str(out / "replicas" / "bn.recompute")}
    errors: dict[str, str] = {}
    per_arm = {arm: len(seed_list) for arm in arms} | {"bn.recompute": 1}
    total = len(arms) * len(seed_list) + (1 if "bn.recompute" in tasks or bn else 0)
    left = sum(per_arm[t] for t in tasks)
    bar = _Progress(total, total - left, progress)

    def done(tid: str, results: dict) -> None:
        for arm, res in results.items():
            if arm == "bn.recompute":
                bn.update(_bn_document(res[0]))
                _atomic_json(bn_path, _finite(bn))
            else:
                _atomic_json(out / "replicas" / _arm_file(arm), res)
            bar.advance(len(res))

    def failed(tid: str, message: str) -> None:
        errors[tid] = message  # not written: a resumed study tries the arm again
        if tid == "bn.recompute":
            bn["error"] = f"the BatchNorm re-run failed: {message}"
        bar.advance(per_arm.get(tid, 1))

    with bar:
        run_tasks(tasks, run_script_task, done, failed, executor=executor, workers=workers, address=address,
                  ray_init=ray_init)
    result = _verdicts(out, config, used, at, arms, errors, bn, branch_epoch, horizon, asked)
    result.update(engine=ENGINE, argv=argv, seed_streams=streams, seed_mode=seed_mode, notes=notes)
    if used != metric:
        result["metric_requested"] = metric
    result["seconds"] = time.perf_counter() - t0
    result["original_seconds"] = original.seconds
    _atomic_json(out / "result.json", result)
    return result


# --------------------------------------------------------------------------------------------- the original
def _original(script: Path, argv: list[str], out: Path, env: dict, timeout, cwd: Path):
    """The original run (seed=0, the seed streams it takes, a checkpoint at every epoch) and its run directory."""
    from .engines.blackbox import ScriptReplicaResult, _last_line, run_script_replica

    path = out / "original.json"
    folder = out / "original"
    if path.exists():
        res = ScriptReplicaResult.from_dict(json.loads(path.read_text()))
        run_dir = _run_dir(folder)
        return res, run_dir
    streams = list(STREAMS)
    while True:
        shutil.rmtree(folder, ignore_errors=True)
        res = run_script_replica(script, argv, interventions={s: "0" for s in streams}, seed=0, branch=None,
                                 out_dir=folder, env=env | {"WHYSPIKE_CHECKPOINT_BUDGET": "1"}, timeout=timeout,
                                 checkpoints=CHECKPOINT_ALL, name="original", cwd=cwd)
        # a stream the training cannot take (no random layer, shuffle=False, not a Keras fit) is left out; a script
        # without Model.fit (a PyTorch loop) names every stream it never applied in one error: one re-run, not two
        never = (res.error or "").split(" never applied:")[0].split(", ")
        refused = [s for s in streams if res.error and (res.error.startswith(s) or s in never)]
        if not refused:
            break
        streams = [s for s in streams if s not in refused]
    if not res.ok:
        last = _last_line(Path(res.log)) if res.log else ""
        said = f" (its last line: {last})" if last and last not in res.error else ""
        raise InputError(script, f"the original run failed: {res.error}{said}",
                         f"make the script run under `whyspike run` first (its output: {res.log})")
    if not len(res.epochs):
        raise InputError(script, "the original run recorded no epoch", "the probe needs a Keras fit or a recorded "
                         "PyTorch training with at least one epoch")
    _atomic_json(path, res.to_dict())
    return res, _run_dir(folder)


def _run_dir(folder: Path) -> Path | None:
    """The original's run directory, found under the study (so that a moved or copied study still finds it)."""
    runs = sorted(p.parent for p in (folder / "runs").glob("*/meta.json"))
    return runs[0] if runs else None


def _checkpoint(run_dir: Path | None, epoch: int) -> tuple[Path | None, int | None]:
    """The latest recorded checkpoint at or before ``epoch`` (and its epoch); (None, None) when there is none."""
    if run_dir is None:
        return None, None
    found = []
    for p in (run_dir / "checkpoints").glob("epoch-*"):
        try:
            e = int(p.name.split("-")[-1])
        except ValueError:
            continue
        if e <= epoch and (p / "manifest.json").exists():
            found.append((e, p))
    if not found:
        return None, None
    e, p = max(found)
    return p, e


def _setup(run_dir: Path | None):
    """What the recorded run knows of its setup (optimizer, momentum, schedule, BatchNorm, eval-set size)."""
    if run_dir is None:
        return None
    from ..errors import WhyspikeError
    from ..importers import load_run

    try:
        return load_run(str(run_dir)).setup
    except WhyspikeError:
        return None


def _metric(original, metric: str, notes: list[str]) -> str:
    y = np.asarray(getattr(original, metric), dtype=float)
    if np.isfinite(y).any():
        return metric
    other = "train_" + metric.removeprefix("val_")
    if metric.startswith("val_") and np.isfinite(np.asarray(getattr(original, other), dtype=float)).any():
        notes.append(f"the script's fit has no validation data: the study compares {other} instead of {metric}")
        return other
    raise UsageError(f"--metric {metric}: the original run recorded no {metric} (give one it has: "
                     f"{', '.join(m for m in METRICS if np.isfinite(np.asarray(getattr(original, m), float)).any())})")


# --------------------------------------------------------------------------------------------- the plan
def script_plan(diagnosis, at: int | None, setup, original=None) -> list[Intervention]:
    """The experiments that settle the candidate causes of the jump, from what the recorded run says of itself
    (its schedule, BatchNorm layers, optimizer momentum, weight decay): the black-box counterpart of
    :func:`whyspike.probe.study.default_plan`. The seed band is always run."""
    plan: list[str] = []
    causes = [c.id for s in (diagnosis.spikes[:1] if diagnosis is not None else []) for c in s.causes]
    has_bn = bool(setup is not None and setup.has_batchnorm)
    lr = np.asarray(getattr(original, "lr", []), dtype=float) if original is not None else np.zeros(0)
    lr = lr[np.isfinite(lr)]
    schedule = bool(setup is not None and setup.lr_schedule) or (len(lr) > 1 and np.ptp(lr) > 1e-12 * np.max(lr))
    warmup = bool(setup is not None and setup.lr_schedule and
                  (setup.lr_schedule.get("config") or {}).get("warmup_steps"))
    momentum = setup.momentum if setup is not None else None
    wd = setup.weight_decay if setup is not None else None
    for cid in causes:
        if cid == "lr_schedule" and schedule:
            plan += ["lr.shift=+3", "lr.decay=off"]
        elif cid == "lr_warmup" and warmup:
            plan.append("lr.warmup=2")
        elif cid == "batchnorm_statistics" and has_bn:
            plan.append("bn.recompute")
        elif cid == "optimization_instability":
            plan.append("lr.scale=0.5")
        elif cid == "grokking" and wd:
            plan.append("wd=off")
        elif cid == "stochastic" and momentum:
            plan.append("momentum=off")
    if at is None and has_bn:
        plan.append("bn.recompute")
    return [iv_mod.parse(s) for s in dict.fromkeys(plan)]


# --------------------------------------------------------------------------------------------- the verdicts
def _bn_document(d: dict) -> dict:
    """The BatchNorm re-evaluation of a detailed re-run, as ``bn.json`` holds it (the in-process study's shape)."""
    from .engines.blackbox import ScriptReplicaResult, bn_series, bn_share

    r = ScriptReplicaResult.from_dict(d)
    if not r.ok:
        return {"error": f"the BatchNorm re-run failed: {r.error}"}
    try:
        running, recomputed, on = bn_series(r)
    except UsageError as exc:
        return {"error": str(exc)}
    try:
        share = bn_share(r)
    except UsageError:
        share = None
    return {"epochs": [int(e) for e in r.epochs], "as_trained": running.tolist(), "recomputed": recomputed.tolist(),
            "share": share, "on": on}


def _verdicts(out: Path, config: dict, metric: str, at, arms: dict, errors: dict, bn: dict, branch_epoch,
              horizon, asked: list[Intervention]) -> dict:
    from ..record._intervene import NOT_BLACK_BOX

    judged = [i for i in asked if i.name != "bn.train_mode"]
    result = _judge(out, {"metric": metric, "target": config["target"]}, at, arms, errors, bn, branch_epoch,
                    horizon, judged)
    by_name = {v["name"]: v for v in result["interventions"]}
    for v in by_name.values():
        if v["name"] == "bn.recompute" and bn.get("on") == "train" and "message" in v:
            v["message"] = v["message"].replace("val accuracy", "the eval-mode training accuracy")
    for i in asked:
        if i.name == "bn.train_mode":
            by_name[str(i)] = {"name": str(i), "verdict": "error", "runs": [], "description": _describe(i),
                               "message": f"bn.train_mode is not possible in a black-box Keras script: "
                                          f"{NOT_BLACK_BOX['bn.train_mode']}"}
    result["interventions"] = [by_name[str(i)] for i in asked]
    base = _load(out, "baseline")
    if at is None and base:  # no significant jump in the original: the seeds still say where their largest one is
        band = seed_band(base, metric).to_dict()
        result["baseline"]["jumps"], result["baseline"]["reproducible"] = band["jumps"], band["reproducible"]
    result["baseline"]["replay"] = _replay(out, base, metric)
    return result


def _load(out: Path, arm: str) -> list:
    from .engines.blackbox import ScriptReplicaResult

    f = out / "replicas" / _arm_file(arm)
    return [ScriptReplicaResult.from_dict(d) for d in finished_arm(f) or []]


def _replay(out: Path, base: list, metric: str) -> dict | None:
    """How closely the seed-0 baseline replica replays the original over the epochs both trained (the largest
    absolute difference of ``metric`` and of the training loss; 0.0 and 0.0 is bit for bit)."""
    from .engines.blackbox import ScriptReplicaResult

    zero = [r for r in base if r.name == "baseline#seed0" and r.ok]
    if not zero or not (out / "original.json").exists():
        return None
    o = ScriptReplicaResult.from_dict(json.loads((out / "original.json").read_text()))
    r = zero[0]
    common, io, ir = np.intersect1d(o.epochs, r.epochs, return_indices=True)
    if not len(common):
        return None

    def gap(a, b):
        d = np.abs(np.asarray(a, float)[io] - np.asarray(b, float)[ir])
        d = d[np.isfinite(d)]
        return float(d.max()) if len(d) else None

    diff, loss = gap(getattr(o, metric), getattr(r, metric)), gap(o.train_loss, r.train_loss)
    return {"epochs": [int(common[0]), int(common[-1])], "max_abs_diff": diff, "train_loss_max_abs_diff": loss,
            "exact": diff == 0.0 and loss == 0.0}


__all__ = ["run_script_study", "run_script_task", "script_plan"]

"""The probes that settle each scenario's cause: counterfactual re-runs after the verdict, folded into the diagnosis.

``run_probes(scenario, run_dir, diagnosis)`` runs the experiments of the scenario's ``probe_plan`` and returns a
:class:`ProbeOutcome`: a ``whyspike/probe-v1`` document for the report (``write_report(..., probes=doc)``), one
line per verdict, and whether the diagnosis, with the probe verdicts folded in (``whyspike.probe.fold``), names the
ground truth first. Five kinds of probe, one per kind of training:

- ``study``: :func:`whyspike.probe.study.run_study` on the scenario's own ``spec_<size>`` factory (an epoch-level
  jump: the replicas branch from the checkpoint just before it);
- ``replicas``: the in-process engine driven from here, from scratch, where a study cannot look (a jump on the
  step axis, a jump the dynamics place, a seed band alone); the curves are judged with ``whyspike.probe.stats``;
- ``script``: the seed's Keras scripts re-run unchanged by the black-box engine with interventions injected
  (:func:`whyspike.probe.script_study.run_script_study` for a jump an event places: branched before it);
- ``config``: the scenario's own training re-recorded with one field of its configuration changed (a resume, an
  augmentation switch: what a ``TrainingSpec`` cannot express);
- ``check``: no retraining at all, a check on the recorded run (the evaluation set's binomial noise, the running
  mean against the accuracy at the epoch's end).

Positions are the recording's: epochs, or steps for a step-level jump (a full-batch training's probe "epochs"
are its steps). A probe's seed band is the probe engine's own seeds, not the recording's one draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np

from ..probe._text import intervention_lines

SCHEMA = "whyspike/probe-v1"
SEEDS = {"ci": 2, "full": 3}  # replicas per arm: the noise band
# a jump on a step axis recurs when its position varies across seeds by at most this share of it (the stats'
# rule, one epoch, is one step there)
STEP_TOLERANCE = 0.25


@dataclass
class Curve:
    """One replica's curve of the probed metric, on the recording's axis."""

    name: str
    x: np.ndarray
    y: np.ndarray
    error: str | None = None


@dataclass
class Arm:
    """One intervention's replicas. ``tests``: the cause id it confirms when it moves or removes the jump (None: the
    vocabulary's own, ``whyspike.probe.fold.TESTS``); ``radius``: how far from the jump its own jump is searched."""

    name: str
    description: str
    curves: list[Curve]
    expected_shift: float | None = None
    radius: float | None = None
    tests: str | None = None


@dataclass
class ProbeOutcome:
    kind: str  # study | replicas | script | config | check | none
    doc: dict | None = None  # whyspike/probe-v1, for the report
    lines: list[str] = field(default_factory=list)  # one per verdict
    check: str | None = None  # the zero-retrain check (or why no probe applies), one sentence
    folded: bool = False  # the verdicts were folded into the scenario's jump
    named: str | None = None  # the jump's top cause after folding (or the truth finding, when checked)
    confidence: float | None = None
    confirmed: bool | None = None  # the truth is named first after the probes (None: nothing could say)
    seconds: float = 0.0


class Progress:
    """Replicas done / to do on stderr (a terminal only; silent in pipes and tests): ``add(n)`` as work is planned,
    ``advance(n)`` as it finishes, ``status(text)`` names what runs."""

    def __init__(self, show: bool | None = None):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.show = self.console.is_terminal if show is None else show
        self._p = None
        self._task = None

    def __enter__(self) -> "Progress":
        if self.show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, SpinnerColumn, TextColumn
            from rich.progress import TimeElapsedColumn

            self._p = Bar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20),
                          MofNCompleteColumn(), TextColumn("replicas"), TimeElapsedColumn(), console=self.console,
                          transient=True)
            self._p.__enter__()
            self._task = self._p.add_task("probing", total=0)
        return self

    def add(self, n: int) -> None:
        if self._p is not None:
            self._p.update(self._task, total=(self._p.tasks[0].total or 0) + n)

    def advance(self, n: int = 1) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def status(self, text: str) -> None:
        if self._p is not None:
            self._p.update(self._task, description=text)

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)


# ------------------------------------------------------------------------------------------ judging curves
def _as_result(c: Curve):
    """A curve as the ReplicaResult ``whyspike.probe.stats`` reads (the curve in the ``train_loss`` slot)."""
    from ..probe.spec import ReplicaResult, ReplicaSpec

    x, y = np.asarray(c.x, dtype=np.float64), np.asarray(c.y, dtype=np.float64)
    nan = np.full(len(y), np.nan)
    return ReplicaResult(c.name, ReplicaSpec(name=c.name), epochs=x, train_loss=y, train_accuracy=nan,
                         val_loss=nan, val_accuracy=nan, step_loss=np.zeros(0), lr=nan, error=c.error)


def _run(c: Curve) -> dict:
    return {"name": c.name, "x": [float(v) for v in c.x],
            "y": [float(v) if np.isfinite(v) else None for v in np.asarray(c.y, dtype=float)]}


def reproducible(band, axis: str, at: float) -> bool | None:
    """Whether the baseline's jump recurs across seeds: None for a band of one run (it says nothing about seeds);
    on an epoch axis the stats' rule (most seeds, one direction, positions within one epoch); on a step axis the
    positions may spread by ``STEP_TOLERANCE`` of the jump's step."""
    if len(band.jumps) < 2:
        return None
    if axis == "epoch":
        return bool(band.reproducible)
    from ..probe.stats import JUMP_THRESHOLD

    p = [j for j in band.jumps if j is not None and j.significance >= JUMP_THRESHOLD]
    if len(p) * 2 <= len(band.jumps) or len({math.copysign(1, j.size) for j in p}) > 1:
        return False
    return len(p) < 2 or float(np.std([j.at for j in p])) <= max(1.0, STEP_TOLERANCE * abs(at))


def locate_peak(x, y, around: float, radius: float, direction: str = "up", window: int = 10):
    """A transient spike's peak within ``around ± radius``: the point furthest above (``direction="up"``) the median
    of the ``window`` points before it, its significance that excess over the curve's noise (``stats.curve_noise``).
    ``stats.locate_jump`` measures a change of level, and the largest one near a spike is often its fall or the
    early descent; a spike is better measured by its height over what came just before."""
    from ..probe.stats import Jump, curve_noise

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(y) < 4:
        return None
    sign = 1.0 if direction == "up" else -1.0
    sigma = curve_noise(y)
    best = None
    for t in range(1, len(y)):
        if abs(x[t] - around) > radius:
            continue
        excess = sign * (y[t] - float(np.median(y[max(0, t - window):t])))
        if best is None or excess > best[0]:
            best = (excess, t)
    if best is None:
        return None
    excess, t = best
    sig = excess / sigma if sigma > 0 else (math.inf if excess > 0 else 0.0)
    return Jump(at=int(x[t]), size=sign * excess, significance=float(sig))


def locate_level(x, y, around: float, radius: float, floor: float, width: int = 5):
    """``stats.locate_jump`` with the curve's noise floored at ``floor``: an accuracy that saturates at 1.0 has a
    median first difference of 0, and with no noise every change is infinitely significant (the first one wins).
    Levels of ``width`` points (5, not 3): a rise over tens of evaluations (grokking) is a change of level too."""
    from ..probe.stats import curve_noise, locate_jump

    y = np.asarray(y, dtype=np.float64)
    noise = curve_noise(y)
    return locate_jump(x, y, around, radius, width=width, noise=max(noise if np.isfinite(noise) else 0.0, floor))


def judge_located(name: str, base: list, treated: list, at: float, expected_shift: float | None,
                  what: str = "spike"):
    """``stats.judge``'s rules on jumps located here (``locate_peak``, ``locate_level``): removed when the treated
    jumps shrink below ``REMOVED_BELOW`` of the band's, moved when they sit at least two seed spreads (and one
    position) away, else unchanged."""
    from ..probe.stats import JUMP_THRESHOLD, REMOVED_BELOW, Verdict, permutation_p

    present = [j for j in base if j is not None and j.significance >= JUMP_THRESHOLD]
    ran = [j for j in treated]
    if not present:
        best = max((j.significance for j in base if j is not None), default=0.0)
        return Verdict(name, "no_jump", message=f"the baseline shows no {what} near {at:g} to move or remove "
                       f"(the largest is {best:.1f}x its noise, below {JUMP_THRESHOLD:g}x)")
    if not ran:
        return Verdict(name, "error", message="no replica ran")
    sign = math.copysign(1.0, float(np.mean([j.size for j in present])))
    sizes = [max(sign * j.size, 0.0) if j is not None else 0.0 for j in ran]  # the other way counts as none
    base_size = [sign * j.size for j in present]
    ratio = float(np.mean(sizes)) / float(np.mean(base_size))
    still = sum(j is not None and j.significance >= JUMP_THRESHOLD for j in ran)
    noise = float(np.median([abs(j.size) / j.significance for j in present if j.significance > 0] or [0.0]))
    sd_size = max(float(np.std(base_size, ddof=1)) if len(present) > 1 else 0.0, noise, 1e-12)
    if ratio < REMOVED_BELOW or (still * 2 < len(ran) and ratio < 0.7):
        return Verdict(name, "removed", size_ratio=ratio, effect_size=(float(np.mean(sizes)) - np.mean(base_size)) /
                       sd_size, p_value=permutation_p(base_size, sizes), jumps=ran,
                       message=(f"the {what} is gone: no replica shows one (at {ratio:.0%} of the baseline's "
                                "size)" if not still else f"the {what} shrinks to {ratio:.0%} of the baseline's "
                                f"size ({still} of {len(ran)} replicas keep a smaller one)"))
    base_at = [j.at for j in present]
    ats = [j.at for j in ran if j is not None and j.significance >= JUMP_THRESHOLD] or [j.at for j in ran if j]
    shift = float(np.mean(ats)) - float(np.mean(base_at))
    sd_at = max(float(np.std(base_at, ddof=1)) if len(present) > 1 else 0.0, 1.0)
    if abs(shift) >= 1.0 and abs(shift) / sd_at >= 2.0:
        verdict = "moved"
        msg = f"the {what} moved by {shift:+.0f} (from {np.mean(base_at):.0f} to {np.mean(ats):.0f})"
        if expected_shift is not None:
            msg += f", where the intervention moved its supposed cause by {expected_shift:+g}"
    else:
        verdict = "unchanged"
        msg = f"the {what} stayed at {np.mean(ats):.0f} (baseline {np.mean(base_at):.0f}), at {ratio:.0%} of its size"
    return Verdict(name, verdict, shift=shift, size_ratio=ratio, effect_size=shift / sd_at,
                   p_value=permutation_p(base_at, ats), jumps=ran, message=msg)


def judge_curves(metric: str, axis: str, at: float, radius: float, baseline: list[Curve], arms: list[Arm],
                 target: str, note: str = "", peak: str | None = None, noise_floor: float | None = None) -> dict:
    """The probe-v1 document of a seed band and its arms, judged as ``whyspike probe`` judges a study: each seed's
    jump located within ``radius`` of ``at``, each arm against the band (removed / moved / unchanged). ``peak``
    (``"up"`` / ``"down"``): the jump is a transient spike, measured by its peak (``locate_peak``);
    ``noise_floor``: a change of level whose noise is at least that (``locate_level``)."""
    from ..probe.interventions import NAMES, parse
    from ..probe.stats import judge, seed_band
    from ..probe.study import _describe  # the vocabulary's one-line descriptions

    base = [_as_result(c) for c in baseline]
    band = seed_band(base, "train_loss", at, radius)
    if peak:
        locate = lambda x, y, around, r: locate_peak(x, y, around, r, peak)  # noqa: E731
    elif noise_floor is not None:
        locate = lambda x, y, around, r: locate_level(x, y, around, r, noise_floor)  # noqa: E731
    else:
        locate = None
    if locate is not None:
        band.jumps = [locate(c.x, c.y, at, radius) for c in baseline if c.error is None]
    rep = reproducible(band, axis, at)
    bd = band.to_dict()
    doc = {"schema": SCHEMA, "metric": metric, "target": target, "note": note,
           "spike": {"at": at, "axis": axis, "branch_epoch": None, "radius": radius},
           "baseline": {"runs": [_run(c) for c in baseline if c.error is None],
                        "band": {"x": band.x, "lo": band.lo, "hi": band.hi, "median": band.median},
                        "jumps": bd["jumps"] if rep is not None else [], "reproducible": rep,
                        "errors": [c.error for c in baseline if c.error]},
           "interventions": []}
    for arm in arms:
        r = arm.radius if arm.radius is not None else radius
        if locate is not None:
            centre, wide = at + (arm.expected_shift or 0.0), r + abs(arm.expected_shift or 0.0)
            found = [locate(c.x, c.y, centre, wide) for c in arm.curves if c.error is None]
            v = judge_located(arm.name, band.jumps, found, at, arm.expected_shift,
                              "spike" if peak else "jump").to_dict()
        else:
            v = judge(arm.name, band, [_as_result(c) for c in arm.curves], at, r, arm.expected_shift).to_dict()
        desc = arm.description
        if not desc and arm.name.split("=")[0] in NAMES:
            desc = _describe(parse(arm.name))
        v.update(description=desc, runs=[_run(c) for c in arm.curves if c.error is None],
                 errors=[f"{c.name}: {c.error}" for c in arm.curves if c.error])
        if arm.tests:
            v["tests"] = arm.tests
        if axis == "step":  # the stats speak of epochs; here a position is a step
            v["message"] = v.get("message", "").replace(" epochs", " steps").replace("epoch ", "step ")
        doc["interventions"].append(v)
    return doc


# ------------------------------------------------------------------------------------------ the in-process engine
def spec_of(sc, size: str):
    """The scenario's training as a TrainingSpec (its module's ``spec``), for the configuration of ``size``."""
    import importlib

    return importlib.import_module(sc.train.__module__).spec(sc.config(size))


def target_of(sc, size: str) -> str:
    """``module:FUNC`` of the scenario's spec factory, as ``run_study`` and ``whyspike probe`` take it."""
    return f"{sc.train.__module__}:spec_{size}"


def _curves(results, metric: str, every: int = 1, scale: float = 1.0) -> list[Curve]:
    out = []
    for r in results:
        if metric == "step_loss":
            x, y = np.asarray(r.steps, dtype=float), np.asarray(r.step_loss, dtype=float)
        else:
            x, y = np.asarray(r.epochs, dtype=float), np.asarray(getattr(r, metric), dtype=float)
        keep = (x % every) == 0
        out.append(Curve(r.name, x[keep], y[keep] * scale, r.error))
    return out


def replica_curves(spec, arms: dict[str, Callable | str | None], seeds: list[int], epochs: int, metric: str,
                   bar: Progress, every: int = 1, scale: float = 1.0) -> dict[str, list[Curve]]:
    """Each arm's replicas, one per seed, trained from scratch for ``epochs``: an arm is a vocabulary intervention
    (``"wd=off"``), a function changing the ReplicaSpec, or None (the baseline)."""
    from ..probe import ReplicaSpec, run_replicas
    from ..probe.interventions import apply, parse
    from ..probe.spec import ReplicaError

    out = {}
    for name, change in arms.items():
        bar.status(f"probe {name}")
        reps, failed = [], []
        for s in seeds:
            rep = ReplicaSpec(name=f"{name}#seed{s}", init_seed=s, data_seed=s, noise_seed=s,
                              overrides={"epochs": int(epochs)})
            try:
                rep = apply(parse(change), spec, rep) if isinstance(change, str) else change(rep) if change else rep
            except ReplicaError as exc:
                failed.append(Curve(rep.name, np.zeros(0), np.zeros(0), str(exc)))
                continue
            reps.append(rep)
        bar.add(len(seeds))
        bar.advance(len(failed))
        done = [0]

        def progress(k: int, total: int) -> None:
            bar.advance(k - done[0])
            done[0] = k

        results = run_replicas(spec, reps, progress=progress) if reps else []
        out[name] = _curves(results, metric, every, scale) + failed
    return out


def _study(sc, size: str, out: Path, spike: int, interventions: list[str], metric: str, seeds: int,
           bar: Progress) -> dict:
    from ..probe.study import run_study

    arms = 1 + sum(1 for i in interventions if i not in ("bn.recompute", "bn.train_mode"))
    bar.add(arms * seeds)
    bar.status(f"probe study: {', '.join(interventions)}")
    doc = run_study(target_of(sc, size), out, spike=spike, interventions=interventions, seeds=seeds, metric=metric,
                    executor="inline", progress=False)
    bar.advance(arms * seeds)
    doc.setdefault("spike", {})["axis"] = "epoch"
    return doc


# ------------------------------------------------------------------------------------------ the black-box engine
def script_curves(source: str, script_name: str, out: Path, arms: dict[str, dict], seeds: list[int], metric: str,
                  bar: Progress, max_epochs: int | None = None, detailed: tuple[str, ...] = ()) -> dict[str, list]:
    """The Keras script re-run unchanged per arm and seed by the black-box engine (``interventions``: the arm's
    ``{NAME: VALUE}``); returns the replicas' results (``ScriptReplicaResult``) per arm."""
    from ..probe.engines.blackbox import run_script_replica, warm_up

    warm_up()
    folder = out / "script"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / script_name  # outside the package: the tensorflow stand-in is only handed to user code
    script.write_text(source)
    env = {"WHYSPIKE_MAX_EPOCHS": str(max_epochs)} if max_epochs else {}
    results: dict[str, list] = {}
    bar.add(len(seeds) * len(arms))
    for name, items in arms.items():
        bar.status(f"probe {name} ({script_name})")
        results[name] = []
        for s in seeds:
            label = f"{name}#seed{s}"
            r = run_script_replica(script, [], interventions=items, seed=s, branch=None,
                                   out_dir=out / _safe(name) / f"seed{s}", env=env, detailed=name in detailed,
                                   name=label, cwd=folder, timeout=600)
            results[name].append(r)
            bar.advance()
    return results


def script_study(source: str, script_name: str, out: Path, spike: int, interventions: list[str], metric: str,
                 seeds: int, bar: Progress, max_epochs: int | None = None) -> dict:
    """:func:`whyspike.probe.script_study.run_script_study` on the Keras script (written to ``out/script``): the
    original recorded with every checkpoint, the band and each arm branched from the epoch before the jump."""
    from ..probe.engines.blackbox import warm_up
    from ..probe.script_study import run_script_study

    warm_up()
    folder = out / "script"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / script_name  # outside the package: the tensorflow stand-in is only handed to user code
    script.write_text(source)
    arms = 1 + sum(1 for i in interventions if i not in ("bn.recompute", "bn.train_mode"))
    bar.add(1 + arms * seeds)
    bar.status(f"probe study of {script_name}: {', '.join(interventions)}")
    doc = run_script_study(script, [], out / "study", spike=spike, interventions=interventions, seeds=seeds,
                           metric=metric, executor="inline", progress=False, timeout=600,
                           env={"WHYSPIKE_MAX_EPOCHS": str(max_epochs)} if max_epochs else None)
    bar.advance(1 + arms * seeds)
    doc.setdefault("spike", {})["axis"] = "epoch"
    return doc


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^\w.=+-]", "_", name)


# ------------------------------------------------------------------------------------------ folding
def fold_into(spike, doc: dict) -> bool:
    """Fold the probe verdicts of ``doc`` into ``spike``'s causes (re-ranked), through ``whyspike.probe.fold``.

    ``fold`` finds its spike by epoch; here the spike is given (a scenario's jump, on a step axis too), so it is
    handed over as the one spike of a stand-in diagnosis at the probed position. Arms outside the vocabulary
    (``tests``: a re-recorded resume, an initialisation scale) are folded by the same rule: moved or removed
    confirms the cause they test (0.95), unchanged refutes it (0.15)."""
    from ..explain.cause import Cause
    from ..probe.fold import TESTS, fold

    at = doc.get("spike", {}).get("at")
    if at is None:
        return False
    own = [v for v in doc.get("interventions", []) if v.get("tests") and v["name"].split("=")[0] not in TESTS]
    known = dict(doc, interventions=[v for v in doc.get("interventions", []) if v not in own],
                 spike=dict(doc["spike"], at=at))
    stand_in = SimpleNamespace(axis="epoch", at=float(at), metric=doc.get("metric"), significance=spike.significance,
                               causes=list(spike.causes))
    fold(SimpleNamespace(spikes=[stand_in]), known)
    causes = {c.id: c for c in stand_in.causes}
    for v in own:
        if v.get("verdict") not in ("moved", "removed", "unchanged"):
            continue
        c = causes.get(v["tests"]) or Cause(v["tests"], 0.2, [], "", "")
        causes[v["tests"]] = c
        if v["verdict"] in ("moved", "removed"):
            c.confidence = max(c.confidence, 0.95)
            c.evidence.insert(0, f"confirmed by probe {v['name']}: {v.get('message', v['verdict'])}")
        else:
            c.confidence = min(c.confidence, 0.15)
            c.evidence.insert(0, f"refuted by probe {v['name']}: {v.get('message', v['verdict'])}")
    spike.causes = sorted(causes.values(), key=lambda c: -c.confidence)
    return True


# ------------------------------------------------------------------------------------------ lines
def verdict_lines(doc: dict) -> list[str]:
    """One line per verdict, the seed band first (as ``whyspike probe`` prints them)."""
    lines = []
    base = doc.get("baseline") or {}
    spike = doc.get("spike") or {}
    unit = spike.get("axis", "epoch")
    if base.get("reproducible") is not None:
        jumps = [j for j in base.get("jumps") or [] if j]
        at = [j["at"] for j in jumps if (j.get("significance") or 0) >= 4]
        n = len(base.get("jumps") or [])
        xs = [float(v) for r in base.get("runs") or [] for v in r.get("x") or []]
        span = max(xs) - min(xs) if xs else 0.0
        verdict = "reproducible" if base["reproducible"] else "NOT reproducible"
        if (spike.get("radius") or 0) >= span > 0:  # searched over the whole run: where each seed's largest is
            where = ", ".join(f"{j['at']:g}" for j in jumps)
            lines.append(f"seeds: each seed's largest change of level falls at {unit} {where} ({len(at)} of {n} "
                         f"significant): {verdict}")
        else:
            where = f"{unit} {', '.join(f'{a:g}' for a in at)}" if at else "no significant jump"
            lines.append(f"seeds: {len(at)} of {n} seeds jump near {unit} {spike['at']:g} ({where}): {verdict} "
                         "across seeds")
    lines += intervention_lines(doc.get("interventions", []), bullet="", error_indent="  ")
    return lines


__all__ = ["Arm", "Curve", "ProbeOutcome", "Progress", "fold_into", "judge_curves", "replica_curves",
           "reproducible", "script_curves", "script_study", "spec_of", "target_of", "verdict_lines"]

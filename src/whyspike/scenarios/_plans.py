"""Each scenario's probe plan: which experiment settles its cause, and how it is read (``run_probes``).

    >>> from whyspike import scenarios
    >>> from whyspike.scenarios._plans import run_probes
    >>> sc = scenarios.get("lr-step-decay")
    >>> run_dir = sc.record("whyspike-demo", "ci")                                   # doctest: +SKIP
    >>> p = run_probes(sc, run_dir, diagnose(load_run(run_dir)), size="ci")          # doctest: +SKIP
    >>> p.lines[1], p.named, p.confirmed                                             # doctest: +SKIP
    ('lr.shift=+3: MOVED — the jump moved by +3 epochs (epoch 20 -> 23), ...', 'lr_schedule', True)

The plan of a scenario is the function registered for its name in :data:`PLANS`; the arms it runs are the
scenario's ``probe_plan`` (a test keeps the two in step). The machinery is in ``_probes``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ._probes import SEEDS, Arm, Curve, ProbeOutcome, Progress, _study, fold_into, judge_curves, replica_curves
from ._probes import script_curves, script_study, spec_of, target_of, verdict_lines


@dataclass
class Ctx:
    sc: object  # the Scenario
    run_dir: Path
    d: object  # its Diagnosis
    outcome: object  # sc.outcome(d)
    size: str
    out: Path  # run_dir/probes
    bar: Progress

    @property
    def seeds(self) -> int:
        return SEEDS[self.size]

    @property
    def cfg(self):
        return self.sc.config(self.size)

    def at(self, default=None) -> float | None:
        """The scenario's jump as diagnosed (its position), else ``default``."""
        j = self.outcome.jump
        return float(j.at) if j is not None else default

    def recorded(self, metric: str, name: str = "recorded") -> Curve:
        s = self.d.run.series[metric]
        return Curve(name, np.asarray(s.x, dtype=float), np.asarray(s.y, dtype=float))


PLANS: dict[str, Callable[[Ctx], ProbeOutcome]] = {}


def plan(*names: str):
    def register(fn):
        for n in names:
            PLANS[n] = fn
        return fn

    return register


# ------------------------------------------------------------------------------------------ event-locked: a study
@plan("lr-step-decay", "warm-restarts")
def _lr_event(c: Ctx) -> ProbeOutcome:
    """A study on the training accuracy (an epoch mean: it moves with the LR as the validation does, with less
    noise), branched just before the LR event: the shifted schedule must move the jump by exactly its shift."""
    arms = [p for p in c.sc.probe_plan if p != "seeds"]
    doc = _study(c.sc, c.size, c.out / "study", int(c.at(_first(c.sc.at))), arms, "train_accuracy", c.seeds, c.bar)
    return ProbeOutcome("study", doc)


@plan("batchnorm-lag")
def _bn(c: Ctx) -> ProbeOutcome:
    """Re-evaluate every checkpoint with recomputed BatchNorm statistics (no retraining): the swings that go away
    are the running statistics' doing."""
    spike = int(c.at()) if c.outcome.jump is not None else "auto"
    arms = [p for p in c.sc.probe_plan if p != "seeds"]
    return ProbeOutcome("study", _study(c.sc, c.size, c.out / "study", spike, arms, "val_accuracy", c.seeds, c.bar))


# ------------------------------------------------------------------------------------------ in-process replicas
def _replicas(c: Ctx, arms: dict, metric: str, epochs: int, radius: float, *, seeds: list[int] | None = None,
              every: int = 1, scale: float = 1.0, peak: str | None = None, arm_kw: dict | None = None,
              note: str = "", noise_floor: float | None = None) -> ProbeOutcome:
    spec = spec_of(c.sc, c.size)
    seeds = list(range(c.seeds)) if seeds is None else seeds
    curves = replica_curves(spec, {"baseline": None, **arms}, seeds, epochs, metric, c.bar, every, scale)
    at = c.at()
    kw = {name: dict((arm_kw or {}).get(name, {})) for name in arms}
    made = [Arm(name, kw[name].pop("description", ""), curves[name], **kw[name]) for name in arms]
    axis = "step" if c.sc.metric.startswith("step/") else "epoch"
    doc = judge_curves(c.sc.metric, axis, at, radius, curves["baseline"], made,
                       f"{target_of(c.sc, c.size)} (from scratch, {len(seeds)} seed(s), {epochs} epochs)", note, peak,
                       noise_floor)
    return ProbeOutcome("replicas", doc)


@plan("warmup-spike")
def _warmup(c: Ctx) -> ProbeOutcome:
    """A warmup twice as long reaches each LR at twice the step: a spike the LR's peak causes moves later (or
    shrinks, the model having had time to adapt). Judged on the spike's height over the steps before it."""
    at = c.at()
    spe = c.cfg.n_train // c.cfg.batch_size
    epochs = min(c.cfg.epochs, math.ceil((3 * at + 40) / spe))
    return _replicas(c, {"lr.warmup=2": "lr.warmup=2"}, "step_loss", epochs, 15, peak="up",
                     arm_kw={"lr.warmup=2": {"expected_shift": at, "radius": 15}})


@plan("grokking")
def _grokking(c: Ctx) -> ProbeOutcome:
    """Without weight decay nothing trades the memorizing weights for the general ones: the validation accuracy
    should not rise at all within the same number of steps. Each seed's jump is searched over the whole run (the
    seed decides when it groks)."""
    cfg = c.cfg
    n_val = c.d.run.setup.eval_size or 100
    return _replicas(c, {"wd=off": "wd=off"}, "val_accuracy", cfg.steps, cfg.steps, every=cfg.eval_every,
                     noise_floor=0.5 / math.sqrt(n_val),  # the largest binomial s.d. of an accuracy on n_val
                     note="full batch: a probe epoch is one step; validation read every "
                          f"{cfg.eval_every} steps as recorded")


@plan("catapult")
def _catapult(c: Ctx) -> ProbeOutcome:
    """Half the LR is below 2/sharpness at initialisation: no catapult should happen. Full-batch GD from the
    recording's initialisation is deterministic, so one replica per arm says all."""
    at = c.at()
    return _replicas(c, {"lr.scale=0.5": "lr.scale=0.5"}, "train_loss", min(c.cfg.steps, int(at) + 60), 20,
                     seeds=[0], note="full-batch GD from one initialisation: deterministic, one replica per arm")


@plan("edge-of-stability")
def _eos(c: Ctx) -> ProbeOutcome:
    """At half the LR the threshold 2/lr doubles: the sharpness needs far longer to reach it, and the spikes near
    the original one disappear. Judged on spike heights."""
    at = c.at()
    return _replicas(c, {"lr.scale=0.5": "lr.scale=0.5"}, "train_loss", min(c.cfg.steps, int(at) + 110), 100,
                     peak="up")


@plan("deep-linear-plateau")
def _plateau(c: Ctx) -> ProbeOutcome:
    """The seeds change only the initialisation (full batch: the data order does not matter), and the escape
    must come back in each; three times the initial scale starts closer to the escape: it must come earlier."""
    at = c.at()

    def init_x3(rep):
        def larger(model):
            import torch

            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(3.0)
            return model

        larger.__name__ = "init x3"
        return dataclasses.replace(rep, model_transform=larger)

    return _replicas(c, {"init.scale=3": init_x3}, "train_loss", min(c.cfg.steps, int(2 * at)), at / 2,
                     scale=c.cfg.dim, arm_kw={"init.scale=3": {
                         "radius": at, "tests": "plateau_escape",
                         "description": "every initial weight times 3 (a model transform; not in the probe "
                                        "vocabulary)"}},
                     note="seeds change the initialisation only; loss x dim = the recording's per-example sum")


@plan("stochastic-jump")
def _stochastic(c: Ctx) -> ProbeOutcome:
    """The same configuration trained again with other seeds: a spike of chance does not come back at its epoch."""
    j = c.outcome.jump
    peak = j.direction if j is not None and j.shape == "transient" else None
    return _replicas(c, {}, "train_loss", c.cfg.epochs, 3, peak=peak)


# ------------------------------------------------------------------------------------------ the seed's Keras scripts
def _script_curves(results: list, metric: str) -> list[Curve]:
    return [Curve(r.name, np.asarray(r.epochs, dtype=float), np.asarray(getattr(r, metric), dtype=float), r.error)
            for r in results]


def _seed_script(c: Ctx) -> tuple[str, str]:
    from .seed_examples import INTENDED, SEED_FILES, seed_source

    cfg = c.cfg
    source, name = seed_source(cfg.example), SEED_FILES[cfg.example]
    if cfg.intended:
        source, name = source.replace(*INTENDED), name.replace(".py", "_intended.py")
    return source, name


@plan("seed-ex1")
def _ex1(c: Ctx) -> ProbeOutcome:
    """The script re-run with the decay removed (``lr.decay=off``), the recording's seed: if the per-step decay is
    what stalled training, the model now goes on memorizing its random labels."""
    source, name = _seed_script(c)
    res = script_curves(source, name, c.out, {"lr.decay=off": {"lr.decay": "off"}}, [c.cfg.seed], "train_accuracy",
                        c.bar, max_epochs=c.cfg.max_epochs)
    rec = c.recorded("accuracy", "recorded (decay_steps=10)")
    (treated,) = _script_curves(res["lr.decay=off"], "train_accuracy")
    v = {"name": "lr.decay=off", "description": "the LR held at its initial value (the schedule removed)",
         "runs": [{"name": treated.name, "x": treated.x.tolist(), "y": _nums(treated.y)}],
         "errors": [treated.error] if treated.error else [], "tests": "schedule_units"}
    if treated.error:
        v.update(verdict="error", message=treated.error)
    else:
        k = min(2, len(rec.y) - 1)
        gain_rec, gain = float(rec.y[-1] - rec.y[k]), float(treated.y[-1] - treated.y[k])
        removed = gain > 0.03 and gain > 5 * abs(gain_rec)  # 0.03: ~2 s.d. of a change of accuracy on 1000
        v.update(verdict="removed" if removed else "unchanged", size_ratio=None, shift=None,
                 message=(f"without the decay training goes on: accuracy {treated.y[k]:.3f} -> {treated.y[-1]:.3f} "
                          f"from epoch {k} to {int(treated.x[-1])}, where the recording (the LR decayed per step) "
                          f"moved {rec.y[k]:.3f} -> {rec.y[-1]:.3f}"))
    doc = {"schema": "whyspike/probe-v1", "metric": "accuracy", "target": f"{name} (black-box engine)",
           "spike": {"at": None, "axis": "epoch"},
           "baseline": {"runs": [{"name": rec.name, "x": rec.x.tolist(), "y": _nums(rec.y)}]},
           "interventions": [v]}
    lr = c.d.run.series.get("lr")
    check = None
    if lr is not None and len(lr) >= 2 and lr.y[0] > 0 and lr.y[-1] > 0:
        per_epoch = math.log(float(lr.y[0]) / float(lr.y[-1]), 2) / float(lr.x[-1] - lr.x[0])
        check = (f"The recorded LR halves {per_epoch:.1f} times per epoch ({lr.y[0]:.3g} after epoch 0, "
                 f"{lr.y[-1]:.3g} after epoch {int(lr.x[-1])}): decay_steps counts optimizer steps.")
    return ProbeOutcome("script", doc, check=check, confirmed=v["verdict"] == "removed")


@plan("seed-ex1-intended")
def _ex1_intended(c: Ctx) -> ProbeOutcome:
    """A black-box study of the intended script: over seeds (data order and noise from a branch before the decay),
    and with its decays 3 epochs later (``lr.shift=+3``): the small step of the training loss at epoch 10 must
    follow the decay to 13."""
    source, name = _seed_script(c)
    arms = [p for p in c.sc.probe_plan if p != "seeds"]
    doc = script_study(source, name, c.out, int(c.at(10.0)), arms, "train_loss", c.seeds, c.bar,
                       max_epochs=c.cfg.max_epochs)
    return ProbeOutcome("script", doc)


@plan("seed-ex2", "seed-ex3")
def _seed_noise(c: Ctx) -> ProbeOutcome:
    """The script over seeds: where each seed's largest change of level in accuracy falls. The article's "spike"
    would come back at its epoch; noise lands anywhere. Example 2 also re-evaluates one seed's training set with
    recomputed BatchNorm statistics (``bn.recompute``, the detailed tier)."""
    source, name = _seed_script(c)
    seeds = list(range(c.seeds))
    res = script_curves(source, name, c.out, {"baseline": {}}, seeds, "train_accuracy", c.bar,
                        max_epochs=c.cfg.max_epochs)
    if "bn.recompute" in c.sc.probe_plan:
        res.update(script_curves(source, name, c.out, {"bn.recompute": {"bn.recompute": ""}}, seeds[:1],
                                 "train_accuracy", c.bar, max_epochs=c.cfg.max_epochs, detailed=("bn.recompute",)))
    base = _script_curves(res["baseline"], "train_accuracy")
    acc = c.d.run.series["accuracy"]
    at = c.at(float(acc.x[int(np.argmax(np.diff(acc.y))) + 1]) if len(acc) > 2 else 0.0)
    n = max(len(cv.x) for cv in base)
    doc = judge_curves("accuracy", "epoch", at, n, base, [], f"{name} (black-box engine, {len(seeds)} seeds)",
                       "each seed's largest change of level anywhere in the run")
    if "bn.recompute" in res:
        doc["interventions"].append(_bn_share(res["bn.recompute"][0]))
    rep = doc["baseline"]["reproducible"]
    return ProbeOutcome("script", doc, confirmed=(rep is False) if c.outcome.jump is None else None)


def _bn_share(r) -> dict:
    """The black-box BatchNorm re-evaluation as a verdict: recomputed statistics remove at least half of the
    epoch-to-epoch variance of the eval-mode accuracy, or not (the study's rule)."""
    from ..errors import UsageError
    from ..probe.engines.blackbox import bn_series, bn_share

    v = {"name": "bn.recompute", "tests": "batchnorm_statistics",
         "description": "evaluation only, no retraining: BN statistics recomputed on training batches (PreciseBN)"}
    if r.error:
        return dict(v, verdict="error", message=r.error, runs=[])
    try:
        running, recomputed, on = bn_series(r)
        share = bn_share(r)
    except UsageError as exc:
        return dict(v, verdict="error", message=str(exc), runs=[])
    x = np.asarray(r.epochs, dtype=float).tolist()
    where = "the training set" if on == "train" else "the validation set"
    return dict(v, verdict="removed" if share >= 0.5 else "unchanged", share=share,
                runs=[{"name": "eval mode, running statistics", "x": x, "y": _nums(running)},
                      {"name": "bn.recompute", "x": x, "y": _nums(recomputed)}],
                message=(f"recomputed statistics remove {max(share, 0.0):.0%} of the epoch-to-epoch variance of the "
                         f"eval-mode accuracy on {where}; the accuracy Keras reports is measured in train mode, with "
                         "batch statistics, and never uses the running ones"))


# ------------------------------------------------------------------------------------------ re-recorded configurations
def _config(c: Ctx, name: str, change: dict, metric: str, radius: float, tests: str, description: str,
            expected_shift: float | None = None, peak: str | None = None) -> ProbeOutcome:
    """The scenario's own training re-recorded with ``change`` applied to its configuration, against the
    recording (one run each: the scenario's seed)."""
    from ..importers import load_run

    c.bar.add(1)
    c.bar.status(f"probe {name} (re-recording {c.sc.name})")
    cfg = dataclasses.replace(c.cfg, **change)
    run = c.sc.record(c.out / _safe(name), c.size, config=cfg)
    c.bar.advance()
    s = load_run(run).series[metric]
    treated = Curve(f"{name}", np.asarray(s.x, dtype=float), np.asarray(s.y, dtype=float))
    doc = judge_curves(metric, "epoch", c.at(), radius, [c.recorded(metric)],
                       [Arm(name, description, [treated], expected_shift=expected_shift, tests=tests)],
                       f"{c.sc.name} re-recorded with {', '.join(f'{k}={v!r}' for k, v in change.items())}",
                       "one recording per arm (the scenario's seed)", peak)
    return ProbeOutcome("config", doc)


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^\w.=+-]", "_", name)


@plan("resume-without-optimizer-state")
def _resume(c: Ctx) -> ProbeOutcome:
    """The same job with the optimizer state saved and restored: the jump at the resume must go."""
    return _config(c, "resume.restore_optimizer", {"restore_optimizer": True}, c.sc.metric, 3, "resume",
                   "the checkpoint saves and the resumed job loads optimizer.state_dict() too", peak="up")


@plan("augmentation-switch")
def _augmentation(c: Ctx) -> ProbeOutcome:
    """The augmentation switched off 5 epochs later: the drop of the training loss must follow it."""
    return _config(c, "augment.shift=+5", {"switch_off": c.cfg.switch_off + 5}, c.sc.metric, 3, "data_pipeline",
                   "augmentation switched off 5 epochs later", expected_shift=5)


# ------------------------------------------------------------------------------------------ checks, no retraining
@plan("small-eval-set")
def _small_eval(c: Ctx) -> ProbeOutcome:
    s = c.d.run.series.get("val_accuracy")
    n = c.d.run.setup.eval_size
    if s is None or not n or len(s) < 8:
        return ProbeOutcome("check", check="no validation accuracy with a known evaluation-set size to check")
    y = np.asarray(s.y, dtype=float)[len(s) // 4:]  # past the early learning
    p = float(np.mean(y))
    one = math.sqrt(p * (1 - p) / n)
    expected, observed = math.sqrt(2) * one, float(np.std(np.diff(y), ddof=1))
    big = float(np.max(np.abs(np.diff(y))))
    check = (f"Checked without retraining: each val_accuracy reading counts hits among {n} examples; at {p:.2f} one "
             f"reading has a binomial s.d. of {one:.3f}, so two readings differ by s.d. {expected:.3f} from "
             f"sampling alone. The recorded epoch-to-epoch changes have s.d. {observed:.3f} (largest {big:.2f}): "
             f"{'no more than' if observed <= 1.5 * expected else 'more than'} that noise.")
    return ProbeOutcome("check", check=check, confirmed=observed <= 1.5 * expected)


@plan("keras-running-average")
def _running_average(c: Ctx) -> ProbeOutcome:
    run = c.d.run.series
    if "accuracy" not in run or "train_eval_accuracy" not in run:
        return ProbeOutcome("check", check="the run lacks train_eval_accuracy (the detailed tier) to check against")
    acc, end = np.asarray(run["accuracy"].y, dtype=float), np.asarray(run["train_eval_accuracy"].y, dtype=float)
    k = min(len(acc), len(end))
    gap0 = float(end[0] - acc[0])
    later = float(np.max(np.abs(end[1:k] - acc[1:k]))) if k > 1 else float("nan")
    check = (f"Checked without retraining: the detailed tier evaluated the training set with each epoch's final "
             f"weights — {end[0]:.3f} after epoch 0, where Keras reported {acc[0]:.3f}, the mean over the epoch's "
             f"batches while the model learned; from epoch 1 on the two differ by at most {later:.3f}. The "
             "epoch-0 'jump' is the running average.")
    return ProbeOutcome("check", check=check, confirmed=gap0 > 0.1 and gap0 > 3 * later)


# ------------------------------------------------------------------------------------------ running a plan
def run_probes(sc, run_dir: Path, d, size: str = "ci", bar: Progress | None = None) -> ProbeOutcome:
    """Run ``sc``'s probe plan against its recording in ``run_dir`` (diagnosed as ``d``), fold the verdicts into
    the scenario's jump in ``d`` (in place), and say whether the truth is named first. The probes' files go to
    ``run_dir/probes`` (replaced when run again)."""
    fn = PLANS.get(sc.name)
    outcome = sc.outcome(d)
    if fn is None:
        return ProbeOutcome("none", check="no probe applies to this scenario")
    out = Path(run_dir) / "probes"
    shutil.rmtree(out, ignore_errors=True)  # inside the run directory the demo itself just recorded
    out.mkdir(parents=True)
    started = time.monotonic()
    own = bar is None
    bar = bar or Progress()
    try:
        if own:
            bar.__enter__()
        po = fn(Ctx(sc, Path(run_dir), d, outcome, size, out, bar))
    finally:
        if own:
            bar.__exit__(None, None, None)
    po.seconds = time.monotonic() - started
    if po.doc is not None:
        po.lines = verdict_lines(po.doc)
        (out / "result.json").write_text(json.dumps(po.doc, indent=1, default=_plain))  # whyspike report --probes
    if po.doc is not None and outcome.jump is not None and not sc.truth_is_finding:
        po.folded = fold_into(outcome.jump, po.doc)
        top = outcome.jump.causes[0] if outcome.jump.causes else None
        po.named, po.confidence = (top.id, top.confidence) if top else (None, None)
        po.confirmed = po.named == sc.truth
    elif sc.truth_is_finding and po.check:
        finding = next((f for f in d.findings if f.id == sc.truth), None)
        if finding is not None:
            finding.message = f"{finding.message.rstrip().rstrip('.')}. {po.check}"
        po.named = sc.truth if finding is not None else None
        po.confirmed = bool(po.confirmed) and finding is not None
    return po


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def _first(at):
    return at[0] if isinstance(at, tuple) else at


def _nums(y) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(y, dtype=float)]


__all__ = ["PLANS", "run_probes"]

"""Run-level findings (DESIGN.md, findings ids): facts about the whole run a user should know first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..run import Series
from .cause import Context, fmt
from .causes.running_average import first_epoch_gap
from .staircase import fit_staircase


@dataclass
class Finding:
    id: str
    message: str
    at: float | None = None
    metric: str | None = None
    severity: str = "warning"  # warning | info

    def to_dict(self) -> dict:
        d = {"id": self.id, "message": self.message, "at": self.at, "metric": self.metric}
        return d


def lr_vanished(ctx: Context) -> list[Finding]:
    """The LR fell so low that later updates are numerically nil: training effectively stopped."""
    out = []
    # epoch-level first: "stopped after epoch 1" is what a person reads, even when the LR is logged per step too
    for lr in sorted(ctx.run.find(kind="lr"), key=lambda s: s.axis != "epoch"):
        ok = np.isfinite(lr.y) & (lr.y >= 0)
        x, y = lr.x[ok], lr.y[ok]
        if len(y) < 3 or y[0] <= 0 or y.min() > 1e-4 * y[0]:
            continue
        # a schedule annealed to ~0 at the very end (cosine, linear decay) is not a stall: the LR must vanish while
        # at least a quarter of the run is still ahead, measured against its peak (a warmup starts near 0)
        if np.argmax(y < 1e-4 * y.max()) >= 0.75 * len(y) or y.min() > 1e-4 * y.max():
            continue
        stair = fit_staircase(y, _rate_hint(ctx)) if lr.axis == "epoch" else None
        initial = stair.initial if stair else float(y[0])
        # the LR still to be spent after position i, against what was spent up to it; below 10% the run has
        # effectively stopped moving
        spent = np.cumsum(y)
        remaining = spent[-1] - spent
        stop = int(np.argmax(remaining < 0.1 * spent))
        unit = "epoch" if lr.axis == "epoch" else "step"
        low = int(np.argmax(y < 1e-4 * initial))
        origin = " (the initial LR, read back from the staircase)" if stair and stair.initial != y[0] else ""
        span = f" — the first {stop + 1} {unit}s" if lr.axis == "epoch" and x[0] == 0 else ""
        msg = (f"{lr.name} fell from {fmt(initial)}{origin} to {fmt(y[-1])} by {unit} {fmt(x[-1])} "
               f"(x{fmt(y[-1] / initial)}); below 1e-4 of its initial value from {unit} {fmt(x[low])} on. Training "
               f"effectively stopped after {unit} {fmt(x[stop])}{span}: every update after it adds up to less than a "
               "tenth of the learning already done, so no later jump can come from this schedule")
        out.append(Finding("lr_vanished", msg, float(x[stop]), lr.name))
        break
    return out


def _rate_hint(ctx: Context) -> float | None:
    cfg = _schedule_config(ctx)
    r = cfg.get("decay_rate")
    return float(r) if isinstance(r, (int, float)) and 0 < r < 1 else None


def _schedule_config(ctx: Context) -> dict:
    sched = ctx.run.setup.lr_schedule or {}
    inner = sched.get("config", sched) if isinstance(sched, dict) else {}
    return inner if isinstance(inner, dict) else {}


def schedule_units(ctx: Context) -> list[Finding]:
    """A staircase decaying several times per epoch: its decay_steps counts optimizer steps, not epochs."""
    out = []
    for lr in ctx.run.find(kind="lr", axis="epoch"):
        ok = np.isfinite(lr.y) & (lr.y > 0)
        x, y = lr.x[ok], lr.y[ok]
        if len(y) < 4:
            continue
        ratios = y[1:] / y[:-1]
        if (ratios < 0.95).mean() < 0.6:
            continue  # not decaying at (nearly) every epoch
        per_epoch = float(np.exp(np.mean(np.log(ratios))))
        stair = fit_staircase(y, _rate_hint(ctx))
        if stair is None:
            rate = _rate_hint(ctx) or 0.5
            decays_per_epoch = float(np.log(per_epoch) / np.log(rate))
        else:
            rate, decays_per_epoch = stair.rate, stair.decays_per_epoch
        if decays_per_epoch < 1.5:
            continue
        spe = ctx.run.setup.steps_per_epoch or _schedule_config(ctx).get("steps_per_epoch")
        ds = _schedule_config(ctx).get("decay_steps")
        if spe and not ds:
            ds = spe / decays_per_epoch  # decays/epoch = steps_per_epoch / decay_steps
        msg = (f"{lr.name} falls x{fmt(per_epoch)} every epoch — {decays_per_epoch:.2g} decays of x{fmt(rate)} per "
               "epoch: the schedule decays per optimizer step, where per epoch was likely meant.")
        if spe and ds:
            ds_r = round(ds) if abs(ds - round(ds)) < 0.05 else ds
            intended = [e for e in np.arange(ds_r, float(x[-1]) + 1, ds_r) if float(x[0]) < e <= float(x[-1])]
            msg += (f" With {fmt(spe)} steps per epoch that is decay_steps={fmt(ds_r)} steps; read as epochs it would "
                    f"decay at epoch {', '.join(fmt(e) for e in intended[:4]) or 'none in this run'}")
            quiet = _quiet_at(ctx, intended[:4])
            if quiet:
                msg += f" — and no jump happened there ({quiet})"
            msg += (f". Fix: decay every {fmt(ds_r)} epochs with decay_steps = {fmt(ds_r)} x steps_per_epoch = "
                    f"{fmt(ds_r * spe)}")
        else:
            msg += (" Fix: decay_steps counts optimizer steps; to decay every N epochs use "
                    "decay_steps = N x steps_per_epoch (e.g. 10 x steps_per_epoch for every 10 epochs). Pass "
                    "--steps-per-epoch to see where the intended decays would have been")
        out.append(Finding("schedule_units", msg, float(x[1]), lr.name))
        break
    return out


def _quiet_at(ctx: Context, epochs: list[float]) -> str:
    """'accuracy 0.136 -> 0.136 at epoch 10, ...' for metrics with no spike at these epochs ('' if one jumps)."""
    parts = []
    for s in ctx.run.metric_series:
        if s.axis != "epoch":
            continue
        if any(sp.metric == s.name and abs(sp.at - e) <= 1 for sp in ctx.spikes for e in epochs):
            return ""
        for e in epochs[:2]:
            a, b = s.value_at(e - 1), s.value_at(e)
            if a is not None and b is not None:
                parts.append(f"{s.name} {fmt(a)} -> {fmt(b)} at epoch {fmt(e)}")
        if len(parts) >= 2:
            break
    return "; ".join(parts)


def small_eval_set(ctx: Context) -> list[Finding]:
    n = ctx.run.setup.eval_size
    if not n or n >= 2000:
        return []
    vals = ctx.run.find(kind="accuracy", split="val")
    if not vals:
        return []
    s = vals[0]
    p = float(np.nanmedian(s.y)) / s.role.scale
    sd = s.role.scale * np.sqrt(max(p * (1 - p), 0.25 / n) / n)
    how = "inferred from the granularity of the logged values" if ctx.run.setup.eval_size_inferred else "as configured"
    return [Finding("small_eval_set",
                    f"{s.name} is measured on {n} examples ({how}): it moves in steps of {fmt(s.role.scale / n)} and "
                    f"its sampling s.d. is about {fmt(sd)}; changes smaller than ~{fmt(2.8 * sd)} between two "
                    "evaluations are not evidence of anything", None, s.name, "info")]


def running_average_metric(ctx: Context) -> list[Finding]:
    out = []
    for kind in ("accuracy", "loss"):
        gap = first_epoch_gap(ctx, kind)
        if gap:
            tr, va, t0, v0 = gap
            msg = (f"{tr} in the first epoch ({fmt(t0)}) is far worse than {va} ({fmt(v0)}): the train metric is "
                   "averaged over the epoch while the model changes (Keras and most training loops report it so), "
                   "which makes epoch 2 look like a jump")
            at_end = ctx.run.series.get(f"train_eval_{kind}")
            e0 = at_end.value_at(ctx.run.series[tr].x[0]) if at_end is not None else None
            if e0 is not None and np.isfinite(e0):
                msg += (f"; the same training set evaluated with the first epoch's final weights "
                        f"({at_end.name}) gives {fmt(e0)}")
            out.append(Finding("running_average_metric", msg, None, tr, "info"))
            break
    return out


def nan_or_inf(ctx: Context) -> list[Finding]:
    out = []
    for s in ctx.run.series.values():
        if s.role.kind == "meta":
            continue
        bad = np.flatnonzero(~np.isfinite(s.y))
        if len(bad):
            unit = "epoch" if s.axis == "epoch" else "step"
            out.append(Finding("nan_or_inf", f"{s.name} is NaN/inf at {len(bad)} {unit}(s), first at {unit} "
                                             f"{fmt(float(s.x[bad[0]]))} (value {s.y[bad[0]]})",
                               float(s.x[bad[0]]), s.name))
    return out


def resume_detected(ctx: Context) -> list[Finding]:
    evs = [e for e in ctx.run.events if e.kind in ("step_rewind", "wall_gap", "run_start")]
    if not evs:
        return []
    first = evs[0]
    more = f" ({len(evs) - 1} more)" if len(evs) > 1 else ""
    return [Finding("resume_detected", f"the run was restarted: {first.detail}{more}", first.at, None)]


def train_eval_gap(ctx: Context) -> list[Finding]:
    for kind in ("accuracy", "loss"):
        for tr in ctx.run.find(kind=kind, split="train", axis="epoch"):
            for va in ctx.run.find(kind=kind, split="val", axis="epoch"):
                t, v = _last(tr), _last(va)
                if t is None or v is None:
                    continue
                if kind == "accuracy" and t - v > 0.1 * tr.role.scale:
                    return [Finding("train_eval_gap", f"at the end {tr.name} is {fmt(t)} but {va.name} is {fmt(v)}: "
                                    f"a gap of {fmt(t - v)} (overfitting, or a train/eval mismatch such as augmentation "
                                    "or BatchNorm mode)", None, va.name, "info")]
                if kind == "loss" and v > 2 * t > 0:
                    return [Finding("train_eval_gap", f"at the end {va.name} ({fmt(v)}) is {fmt(v / t)}x {tr.name} "
                                    f"({fmt(t)})", None, va.name, "info")]
    return []


def _last(s: Series) -> float | None:
    y = s.y[np.isfinite(s.y)]
    return float(y[-1]) if len(y) else None


CHECKS = (lr_vanished, schedule_units, nan_or_inf, resume_detected, running_average_metric, small_eval_set,
          train_eval_gap)


def run_findings(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    for check in CHECKS:
        out.extend(check(ctx))
    return out

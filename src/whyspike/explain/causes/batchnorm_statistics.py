"""batchnorm_statistics: an eval-path discrepancy — train smooth and high, validation swinging.

BatchNorm running statistics that lag the weights are the usual cause (they are used only in eval mode).
"""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt


def _eval_mode(name: str) -> bool:
    """A training-set metric measured in eval mode by the recorder's detailed tier (``train_eval_accuracy``)."""
    return "train_eval" in name


def _swing(y: np.ndarray) -> float:
    d = np.diff(y[np.isfinite(y)])
    return float(np.median(np.abs(d))) if len(d) >= 3 else float("nan")


def _catching_up(spike: Spike, s, tr) -> str | None:
    """The eval-mode metric jumps towards the train-mode one, which stays put: an eval path catching up (running
    statistics reaching the weights), not the model learning — train mode had learned it already."""
    if s.role.kind != "accuracy" or not (spike.direction == "up") == bool(s.role.higher_is_better):
        return None
    i = spike.start_index
    t_before, t_after = _near(tr, s.x[max(0, i - 3) : i]), _near(tr, s.x[i : i + 3])
    if t_before is None or t_after is None:
        return None
    gap_before = t_before - spike.before
    moved = abs(t_after - t_before)
    if gap_before < 0.2 * s.role.scale or spike.size < 0.5 * gap_before or moved > 0.25 * spike.size:
        return None
    return (f"{s.name} jumped {fmt(spike.before)} -> {fmt(spike.after)} towards {tr.name} ({fmt(t_before)} before, "
            f"{fmt(t_after)} after), which barely moved: train mode already had what eval mode only showed now")


def _near(series, xs) -> float | None:
    idx = np.searchsorted(series.x, xs)
    idx = idx[(idx < len(series)) & np.isin(series.x[np.clip(idx, 0, len(series) - 1)], xs)]
    y = series.y[idx]
    y = y[np.isfinite(y)]
    return float(np.mean(y)) if len(y) else None


def _precise_bn(spike: Spike, ctx: Context) -> tuple[float, str] | None:
    """The recorder's PreciseBN validation (the same checkpoints with recomputed BatchNorm statistics), when logged:
    steady across the jump means the jump was the running statistics; jumping as much means it was not."""
    s = ctx.series(spike)
    names = [n for n in ctx.run.series if "precise_bn" in n and ctx.run.series[n].role.kind == s.role.kind
             and ctx.run.series[n].axis == spike.axis and ctx.run.series[n].role.split == "val"]
    if not names:
        return None
    p = ctx.run.series[names[0]]
    i = spike.start_index
    before, after = _near(p, s.x[max(0, i - 3) : i]), _near(p, s.x[i : i + 3])
    if before is None or after is None:
        return None
    moved = abs(after - before)
    unit = ctx.unit(spike.axis)
    if moved <= 0.3 * spike.size:
        return 0.35, (f"with BatchNorm statistics recomputed on training batches (PreciseBN) {p.name} was already "
                      f"{fmt(before)} before {unit} {fmt(spike.at)} and {fmt(after)} after: the same weights were "
                      f"good all along; only the running statistics {s.name} used were behind")
    return -0.25, (f"{p.name} (recomputed BatchNorm statistics) moved too ({fmt(before)} -> {fmt(after)}): the "
                   "weights changed, not only the statistics")


def assess(spike: Spike, ctx: Context) -> Cause | None:
    s = ctx.series(spike)
    if (s.role.split != "val" and not _eval_mode(s.name)) or s.role.kind not in ("accuracy", "loss"):
        return None
    partners = ctx.partners(spike)
    if any(ctx.run.series[p.metric].role.split == "train" and not _eval_mode(p.metric) for p in partners):
        return None  # the train-mode metric jumped too: not an eval-path effect
    trains = [t for t in ctx.run.find(kind=s.role.kind, split="train", axis=spike.axis) if not _eval_mode(t.name)]
    if not trains:
        return None
    tr = trains[0]
    i = spike.start_index
    lo, hi = max(0, i - 10), i + 10
    sw_val, sw_tr = _swing(s.y[lo:hi]), _swing(tr.y[lo:hi])
    unit = ctx.unit(spike.axis)
    if np.isfinite(sw_val) and np.isfinite(sw_tr) and sw_val >= 3 * max(sw_tr, 1e-12):
        ev = [f"around {unit} {fmt(spike.at)} {s.name} swings by a median {fmt(sw_val)} per {unit} while "
              f"{tr.name} moves only {fmt(sw_tr)}: the model is steady in train mode and unsteady in eval mode"]
    else:
        catch_up = _catching_up(spike, s, tr)
        if catch_up is None:
            return None
        ev = [catch_up]
    conf = 0.3
    if s.role.kind == "accuracy":
        gap = np.nanmedian(tr.y[lo:hi]) - np.nanmedian(s.y[lo:hi])
        if gap > 0.05 * s.role.scale:
            conf += 0.1
            ev.append(f"{tr.name} sits {fmt(gap)} above {s.name} there")
    if ctx.run.setup.has_batchnorm:
        conf += 0.15
        ev.append("the model has BatchNorm layers, whose running statistics are used only in eval mode")
    elif ctx.run.setup.has_batchnorm is None:
        ev.append("whether the model has BatchNorm is not in the log")
    else:  # known to have none: an eval-mode difference needs another source (dropout, a changed eval set)
        conf -= 0.15
        ev.append("but the model has no BatchNorm layers, so no running statistics can lag")
    evals = sorted({p.metric for p in partners if _eval_mode(p.metric)} | ({s.name} if _eval_mode(s.name) else set()))
    if evals:
        conf += 0.1
        ev.append(f"{', '.join(evals)} (the training set evaluated in eval mode) jumped at the same "
                  f"{unit} while {tr.name} (train mode) did not: what changed is the eval-mode network")
    precise = _precise_bn(spike, ctx)
    if precise is not None:
        shift, text = precise
        conf += shift
        ev.insert(0, text)
    return Cause("batchnorm_statistics", min(conf, 0.95), ev,
                 "re-evaluating the same checkpoints with recomputed BatchNorm statistics leaves the swings",
                 "recompute BN statistics on ~100 training batches with frozen weights (PreciseBN) and re-evaluate "
                 "the checkpoints around the jump — no retraining; also evaluate in train mode")

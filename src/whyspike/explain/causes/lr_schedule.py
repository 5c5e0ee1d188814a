"""lr_schedule: a learning-rate change at or just before the jump (step decay, plateau reduction, restart)."""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt


def _expected_direction(spike: Spike, kind: str, ctx: Context) -> bool:
    """A decay lets the model settle (accuracy up, loss down); a restart or increase does the opposite."""
    good = (spike.direction == "up") == bool(ctx.series(spike).role.higher_is_better)
    return good if kind == "decay" else not good


def assess(spike: Spike, ctx: Context) -> Cause | None:
    near = [c for c in ctx.changes_near(spike) if c.kind in ("decay", "increase", "restart")]
    if not near:
        return None
    start = ctx.start(spike)
    change = min(near, key=lambda c: (abs(start - c.at), c.at > start))
    unit = ctx.unit(spike.axis)
    lag = start - change.at
    verb = "fell" if change.after < change.before else "rose"
    where = "the config's milestones" if change.series == "config" else change.series
    ev = [f"{where}: learning rate {verb} {fmt(change.before)} -> {fmt(change.after)} (x{fmt(change.factor)}) at "
          f"{unit} {fmt(change.at)}; {spike.metric} {'rose' if spike.direction == 'up' else 'fell'} "
          f"{fmt(spike.before)} -> {fmt(spike.after)} starting at {unit} {fmt(start)}"]
    one = ctx.radius(spike, epochs=1)  # "the next epoch", in the spike's own axis units
    conf = 0.62 if lag == 0 else (0.5 if 0 < lag <= one else 0.35)
    if _expected_direction(spike, change.kind, ctx):
        conf += 0.1
    else:
        conf -= 0.25
        ev.append(f"the jump goes the opposite way from what a {change.kind} usually does")
    partners = [p for p in ctx.partners(spike) if abs(ctx.start(p) - change.at) <= ctx.radius(p, epochs=1)]
    if partners:
        conf += 0.12
        names = ", ".join(sorted({p.metric for p in partners})[:3])
        ev.append(f"{names} jumped at the same {unit}: train and validation moving together is the mark of an "
                  "optimizer change, not of the evaluation")
    s = ctx.series(spike)
    if spike.shape == "step" and change.kind == "decay":
        i = spike.start_index
        y = s.y[np.isfinite(s.y)]
        pre, post = np.diff(y[max(0, i - 10) : i]), np.diff(y[i + 1 : i + 11])
        if len(pre) >= 4 and len(post) >= 4 and np.std(post) < 0.5 * np.std(pre):
            conf += 0.08
            ev.append(f"{unit}-to-{unit} swings shrank from {fmt(np.std(pre))} to {fmt(np.std(post))} after the "
                      "decay, as a smaller step size does")
    if len([c for c in ctx.lr_changes if c.axis == spike.axis and c.kind == change.kind]) > 1:
        conf += 0.03
    shift = 5 if spike.axis == "epoch" else 500
    return Cause(
        "lr_schedule",
        min(conf, 0.97),
        ev,
        f"moving the LR change to {unit} {fmt(change.at + shift)} leaves the jump at {unit} {fmt(start)}",
        f"re-run from the checkpoint before {unit} {fmt(change.at)} with the change moved by +{shift} "
        f"(lr.shift=+{shift}) and once without it (lr.hold): the jump should move with it and vanish without it",
    )

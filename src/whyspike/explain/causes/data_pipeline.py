"""data_pipeline: a change in what the model is fed — augmentation switched, layers unfrozen, batch size changed.

The evidence is a logged setting that changes level where the jump starts: a series of kind ``pipeline`` (an
augmentation strength, a frozen flag, an image size: see ``run.roles``) or the logged batch size
(``step/samples``). The mark of an augmentation switched off (YOLO's ``close_mosaic``) is the training metric
improving at once while validation moves little or the other way: the training data got easier, the model did not
change.
"""

from __future__ import annotations

import numpy as np

from ...detect import Spike
from ..cause import Cause, Context, fmt


def _setting_changes(spike: Spike, ctx: Context) -> list[tuple[str, float, float, float]]:
    """(name, before, after, where) for each logged setting that changed level within a radius before the jump's
    start (or with it)."""
    start, radius = ctx.start(spike), ctx.radius(spike)
    out = []
    spe = ctx.run.setup.steps_per_epoch
    # (series, factor to the spike's axis): a per-epoch setting maps onto steps as epoch e starting at step e * spe
    settings = [(s, 1.0) for s in ctx.run.series.values() if s.role.kind == "pipeline" and s.axis == spike.axis]
    if spike.axis == "step" and spe:
        settings += [(s, float(spe)) for s in ctx.run.series.values()
                     if s.role.kind == "pipeline" and s.axis == "epoch"]
    samples = ctx.run.series.get("step/samples")
    if samples is not None and spike.axis == "step":
        settings.append((samples, 1.0))
    for s, factor in settings:
        ok = np.isfinite(s.y)
        x, y = s.x[ok] * factor, s.y[ok]
        if len(y) < 2:
            continue
        moved = np.flatnonzero(y[1:] != y[:-1]) + 1
        # a new level, held on both sides: an epoch's short last batch (32, 32, 8, 32) is no change of setting
        held = [i for i in moved if (i < 2 or y[i - 2] == y[i - 1]) and (i + 1 >= len(y) or y[i + 1] == y[i])]
        near = [i for i in held if start - radius <= x[i] <= start + ctx.radius(spike, epochs=1)]
        if near:
            i = min(near, key=lambda i: abs(x[i] - start))
            out.append((s.name, float(y[i - 1]), float(y[i]), float(x[i])))
    return out


def assess(spike: Spike, ctx: Context) -> Cause | None:
    changes = _setting_changes(spike, ctx)
    if not changes:
        return None
    unit = ctx.unit(spike.axis)
    start = ctx.start(spike)
    name, before, after, where = min(changes, key=lambda c: abs(c[3] - start))
    what = "the batch size" if name == "step/samples" else name
    ev = [f"{what} changed {fmt(before)} -> {fmt(after)} at {unit} {fmt(where)}; {spike.metric} "
          f"{'rose' if spike.direction == 'up' else 'fell'} {fmt(spike.before)} -> {fmt(spike.after)} from "
          f"{unit} {fmt(start)}"]
    lag = start - where
    conf = 0.55 if 0 <= lag <= ctx.radius(spike, epochs=1) else 0.4
    s = ctx.series(spike)
    if s.role.split == "train":
        vals = [v for v in ctx.run.find(kind=s.role.kind, split="val", axis=spike.axis)]
        moved_val = [p for p in ctx.partners(spike) if p.metric in {v.name for v in vals}]
        if vals and not moved_val:
            conf += 0.15
            ev.append(f"{vals[0].name} did not jump with it: the training data changed, not the model")
    if len(changes) > 1:
        ev.append("other settings changed there too (" + ", ".join(c[0] for c in changes if c[0] != name) + "): "
                  "test them one at a time")
    return Cause("data_pipeline", min(conf, 0.9), ev,
                 f"keeping {what} at {fmt(before)} past {unit} {fmt(where)} leaves the jump in place",
                 f"re-run from the checkpoint before {unit} {fmt(where)} with {what} kept at {fmt(before)} "
                 f"(data.hold={name}) and with the switch moved by +5: the jump should follow the switch")

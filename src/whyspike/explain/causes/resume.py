"""resume: a restart from a checkpoint that lost optimizer/scheduler state or the step counter."""

from __future__ import annotations

from ...detect import Spike
from ..cause import Cause, Context, fmt


def _rewind_before(spike: Spike, ctx: Context) -> str | None:
    """A step counter that went back (a restarted optimizer or recorder) where the epoch-axis jump starts: the last
    step logged before the rewind, over the steps per epoch, is the number of epochs done before the restart."""
    spe = ctx.run.setup.steps_per_epoch
    if spike.axis != "epoch" or not spe:
        return None
    start = ctx.start(spike)
    for e in ctx.run.events:
        if e.kind != "step_rewind" or e.axis != "step" or "from" not in e.data:
            continue
        done = (float(e.data["from"]) + 1) / spe  # epochs completed when the counter went back (epochs from 0)
        if abs(done - start) <= 1:
            return (f"the step counter went back from {fmt(float(e.data['from']))} to {fmt(float(e.data['to']))} "
                    f"({e.data.get('series', 'a step series')}): at {fmt(spe)} steps per epoch the run restarted "
                    f"after {fmt(done)} epochs, where the jump starts")
    return None


def assess(spike: Spike, ctx: Context) -> Cause | None:
    unit = ctx.unit(spike.axis)
    radius = ctx.radius(spike, epochs=2)
    rewinds = ctx.events_near(spike, ("step_rewind",), radius)
    gaps = ctx.events_near(spike, ("wall_gap", "run_start"), radius)
    resets = [c for c in ctx.changes_near(spike, before=radius, after=radius) if c.kind == "restart"]
    counter = _rewind_before(spike, ctx) if not rewinds else None
    if not (rewinds or gaps or resets or counter):
        return None
    ev, conf = [], 0.3
    if counter:
        conf += 0.35
        ev.append(counter)
    if rewinds:
        conf += 0.35
        ev.append(rewinds[0].detail + " — the log was written again from an earlier point, as after a resume")
    if gaps:
        conf += 0.2
        ev.append(gaps[0].detail)
    if resets:
        periodic = sum(c.kind == "restart" for c in ctx.lr_changes) > 1  # SGDR restarts: a schedule, not a resume
        conf += 0.05 if periodic else 0.25
        r = resets[0]
        ev.append(f"{r.series} jumped back to {fmt(r.after)} (its initial value) at {unit} {fmt(r.at)}: "
                  "a scheduler that restarted from scratch")
    return Cause("resume", min(conf, 0.95), ev,
                 "the run was not restarted there, or a resume that restores optimizer, scheduler and step counter "
                 "shows the same jump",
                 "resume from the same checkpoint twice, once restoring optimizer + scheduler state and once "
                 "without: only the second should show the jump")

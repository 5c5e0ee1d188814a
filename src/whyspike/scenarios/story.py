"""What happened in a scenario's run, in sentences whose numbers come from the run itself (for ``whyspike demo`` and,
later, the report): the article's prediction set against the recording, and whether it held.

    >>> from whyspike.scenarios.story import largest_change
    >>> import numpy as np
    >>> largest_change(np.arange(5), np.array([0.1, 0.12, 0.2, 0.21, 0.2]))
    (2, 0.08)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..explain.cause import fmt
from ..explain.staircase import fit_staircase
from ._base import Outcome


@dataclass
class Story:
    happened: list[str]  # sentences, numbers from the run
    holds: str  # "holds" | "does not hold" | "partly holds": the article's prediction against the run


def largest_change(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """(position, size) of the largest rise between consecutive values."""
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(y) < 2:
        return None
    d = np.diff(y)
    i = int(np.argmax(d))
    return x[i + 1].item() if hasattr(x[i + 1], "item") else x[i + 1], round(float(d[i]), 6)


def _epoch(x: float) -> str:
    return f"epoch {int(x)}"  # numbered from 0, as the run directory and whyspike's verdict number them


def _findings(d, fid: str):
    return next((f for f in d.findings if f.id == fid), None)


def story_ex1(d, outcome: Outcome) -> Story:
    run = d.run
    out = []
    lr = run.series.get("lr")
    acc = run.series.get("accuracy")
    if lr is not None and len(lr) >= 4:
        st = fit_staircase(lr.y)
        rate = f"halves {st.decays_per_epoch:.2g} times per epoch" if st else "falls every epoch"
        out.append(f"The LR {rate}, not once every 10 epochs: {fmt(st.initial if st else lr.y[0])} at the "
                   f"start, {fmt(float(lr.y[0]))} at the end of {_epoch(lr.x[0])}, {fmt(float(lr.y[-1]))} at the "
                   f"end of {_epoch(lr.x[-1])}.")
    stall = _findings(d, "lr_vanished")
    if stall is not None and stall.at is not None and acc is not None:
        out.append(f"Training stalled after {_epoch(stall.at)}: accuracy {fmt(float(acc.y[0]))} in epoch 0, "
                   f"{fmt(float(acc.y[-1]))} in the last (chance on these random labels: 0.1).")
    if acc is not None:
        moves = [f"{fmt(a)} -> {fmt(b)} at epoch {e}" for e in (10, 20)
                 if (a := acc.value_at(e - 1)) is not None and (b := acc.value_at(e)) is not None]
        jumps = [s for s in d.spikes if s.metric == "accuracy"]
        if moves:
            out.append(f"Nothing happens where the article expects it: accuracy {'; '.join(moves)}"
                       f"{'' if jumps else ' — no significant jump anywhere in the run'}.")
    holds = "does not hold" if _findings(d, "schedule_units") and not outcome.jump else "partly holds"
    return Story(out, holds)


def story_ex1_intended(d, outcome: Outcome) -> Story:
    out = []
    lr = d.run.series.get("lr")
    if lr is not None:
        # the LR logged at an epoch's end is the next epoch's; the last one's is never used
        drops = [f"{int(lr.x[i]) + 1}" for i in range(1, len(lr) - 1) if lr.y[i] < 0.8 * lr.y[i - 1]]
        if drops:
            out.append(f"With decay_steps=320 the LR halves from epoch {' and '.join(drops)} on: the schedule the "
                       "article describes.")
    s = outcome.jump
    if s is not None:
        top = s.causes[0]
        out.append(f"The training loss steps down {fmt(s.before)} -> {fmt(s.after)} at epoch {int(s.at)} "
                   f"({s.significance:.1f}x its noise); whyspike names {top.id} ({top.confidence:.0%}).")
    else:
        out.append("No jump stands out of the noise at the decays.")
    acc_jumps = [x for x in d.spikes if x.metric == "accuracy"]
    out.append("Accuracy: " + ("no significant jump — halving the step of a model memorizing random labels "
                               "changes its pace a little, it does not make a spike." if not acc_jumps else
                               f"a jump at epoch {int(acc_jumps[0].at)} ({acc_jumps[0].causes[0].id})."))
    holds = "partly holds" if s is not None and not acc_jumps else ("holds" if acc_jumps else "does not hold")
    return Story(out, holds)


def story_noise(d, outcome: Outcome) -> Story:
    out = []
    acc = d.run.series.get("accuracy")
    if acc is not None and len(acc) >= 2:
        big = largest_change(acc.x, acc.y)
        out.append(f"Accuracy creeps from {fmt(float(acc.y[0]))} to {fmt(float(acc.y[-1]))} over {len(acc)} epochs "
                   f"(random labels: memorization only); its largest epoch-to-epoch rise is {fmt(big[1])} at "
                   f"{_epoch(big[0])}.")
    s = outcome.jump
    if s is None:
        out.append("whyspike finds no significant jump in accuracy: every wobble is the size of its own noise.")
        holds = "does not hold"
    else:
        top = s.causes[0]
        out.append(f"whyspike finds one jump, {fmt(s.before)} -> {fmt(s.after)} at {_epoch(s.at)} "
                   f"({s.significance:.1f}x noise), and names {top.id} ({top.confidence:.0%}).")
        holds = "partly holds" if top.id == "stochastic" else "does not hold"
    return Story(out, holds)


STORIES = {"seed-ex1": story_ex1, "seed-ex1-intended": story_ex1_intended, "seed-ex2": story_noise,
           "seed-ex3": story_noise}


def tell(name: str, d, outcome: Outcome) -> Story | None:
    """The story of a seed scenario's run (None for scenarios without one)."""
    fn = STORIES.get(name)
    return fn(d, outcome) if fn else None

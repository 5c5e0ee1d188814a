"""What an explanation is: a Cause (one hypothesis for one spike) and the Context every cause module reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..detect import Spike
from ..run import Run, Series
from .lr import LrChange, lr_changes


@dataclass
class Cause:
    """A ranked hypothesis: DESIGN.md contract 1 id, confidence in [0, 1], evidence citing the run's numbers."""

    id: str
    confidence: float
    evidence: list[str]
    refuted_if: str
    probe: str

    def to_dict(self) -> dict:
        return {"id": self.id, "confidence": round(float(self.confidence), 2), "evidence": self.evidence,
                "refuted_if": self.refuted_if, "probe": self.probe}


@dataclass
class Context:
    """Everything the cause modules share for one run: the run, its LR changes, and every spike found."""

    run: Run
    spikes: list[Spike]
    lr_changes: list[LrChange] = field(default_factory=list)

    @classmethod
    def build(cls, run: Run, spikes: list[Spike]) -> "Context":
        return cls(run, spikes, lr_changes(run))

    def series(self, spike: Spike) -> Series:
        return self.run.series[spike.metric]

    def unit(self, axis: str) -> str:
        return "epoch" if axis == "epoch" else "step"

    def radius(self, spike: Spike, epochs: float = 2.0) -> float:
        """How far (in axis units) an event may sit from a jump and still be 'at or just before' it.

        ``epochs`` on the epoch axis. On the step axis it scales with how sparsely the metric is logged (a
        validation metric logged every 5000 steps shows a change at the next evaluation) and with the run's
        length (a curve settling over a few hundred steps of a million-step run puts its mid-point late).
        """
        if spike.axis == "epoch":
            return epochs
        x = self.series(spike).x
        spacing = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
        span = float(x[-1] - x[0]) if len(x) > 1 else 0.0
        return max(25.0 * epochs, epochs * spacing, 0.001 * epochs * span)

    def changes_near(self, spike: Spike, before: float | None = None, after: float = 1) -> list[LrChange]:
        """LR changes on the spike's axis from ``before`` units before to ``after`` units after its start."""
        before = self.radius(spike) if before is None else before
        start = self.start(spike)
        return [c for c in self.lr_changes if c.axis == spike.axis and start - before <= c.at <= start + after]

    def start(self, spike: Spike) -> float:
        """Where the change begins (the first point of a step or of a transient), in the axis' numbering."""
        if spike.start is not None:
            return spike.start
        s = self.series(spike)  # a Spike built by hand: derive it from the index
        finite = s.x[np.isfinite(s.y)]
        return float(finite[min(spike.start_index, len(finite) - 1)])

    def partners(self, spike: Spike, epochs: float = 1.0) -> list[Spike]:
        """Spikes in other metrics at (nearly) the same position on the same axis."""
        return [o for o in self.spikes if o is not spike and o.axis == spike.axis and o.metric != spike.metric
                and abs(self.start(o) - self.start(spike)) <= max(self.radius(spike, epochs), self.radius(o, epochs))]

    def full_batch(self) -> int | None:
        """The batch size when every step sees the whole training set (full-batch gradient descent), else None.

        Such a run has no minibatch sampling noise: its loss curve is deterministic given the initialization."""
        st = self.run.setup
        if st.batch_size and st.train_size and st.batch_size >= st.train_size:
            return int(st.batch_size)
        return None

    def events_near(self, spike: Spike, kinds: tuple[str, ...], radius: float | None = None):
        radius = self.radius(spike) if radius is None else radius
        start = self.start(spike)
        return [e for e in self.run.events if e.kind in kinds and e.axis == spike.axis and abs(e.at - start) <= radius]


def fmt(v: float) -> str:
    """Numbers as people write them in a sentence: 0.1, 0.0125, 1.2e-31, 92.7."""
    if v is None or not np.isfinite(v):
        return str(v)
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e5):
        return f"{v:.2g}"
    return f"{v:.4g}"

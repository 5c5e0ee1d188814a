"""What a scenario is: a small real training whose cause is known, recorded into a run directory as a user's would be.

A scenario pairs a training (``train(config, run_dir)``) with what it demonstrates: the ground-truth cause (a cause
id of DESIGN.md contract 1) or run-level finding, the metric the jump is in, and where the jump is expected when an
event places it. Configurations are frozen dataclasses, one per size (``"full"``: the demonstration, ``"ci"``: a
few seconds for the tests); a probe (a counterfactual re-run) is a ``dataclasses.replace`` of one field, which is
what ``probe_plan`` names.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import InputError, UsageError

SIZES = ("full", "ci")


@dataclass(frozen=True)
class Scenario:
    """One demonstration. ``truth`` is a cause id, or a finding id when ``truth_is_finding``.

    ``at``: where the jump is expected (an event-locked cause: the LR milestone, the resume, the switch), ``None``
    when the dynamics place it (grokking, a plateau, noise); then the most significant jump in ``metric`` is the
    scenario's jump. ``jump_optional``: the truth is that nothing but noise moves, so finding no significant jump at
    all agrees with it. ``probe_plan``: the experiments that settle the cause, as ``whyspike demo`` runs them
    (``_plans``): interventions in ``whyspike probe --intervene`` syntax, ``seeds`` (the seed band), or a change of
    the scenario's own configuration where no intervention can say it (``augment.shift=+5``,
    ``resume.restore_optimizer``, ``init.scale=3``); empty when a check on the recording settles it without
    retraining. ``article``: what the seed article predicted (seed scenarios only).
    """

    name: str
    description: str
    truth: str
    metric: str
    train: Callable[[Any, Path], None]
    sizes: Mapping[str, Any]
    why: str = ""
    at: float | tuple[float, ...] | None = None  # one position, or several (any of them: periodic restarts)
    tolerance: float = 2.0
    direction: str | None = None  # "up" / "down": only jumps this way are the scenario's (a spike, not its fall)
    truth_is_finding: bool = False
    no_jump: bool = False  # part of the truth: nothing in ``metric`` stands out of the noise
    jump_optional: bool = False
    framework: str = "torch"
    article: str | None = None
    probe_plan: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def config(self, size: str = "full") -> Any:
        if size not in self.sizes:
            raise UsageError(f"scenario {self.name!r} has no size {size!r} — use one of: {', '.join(self.sizes)}")
        return self.sizes[size]

    def record(self, out_dir: str | Path, size: str = "full", config: Any = None) -> Path:
        """Train and record into ``out_dir/<name>`` (replacing an earlier recording of it there); the run directory.

        ``config`` overrides the size's configuration (a probe's changed copy of it).
        """
        cfg = self.config(size) if config is None else config
        run_dir = fresh_run_dir(Path(out_dir), self.name)
        self.train(cfg, run_dir)
        return run_dir

    def outcome(self, diagnosis) -> "Outcome":
        """What the diagnosis of this scenario's run says about its jump, against the ground truth."""
        return judge(self, diagnosis)


@dataclass
class Outcome:
    """The scenario's jump as diagnosed (``jump`` is None when none was found), what was named first, and whether
    that is the ground truth."""

    scenario: Scenario
    jump: Any | None
    named: str | None  # the top cause of the jump, or the truth finding's id when it was found
    confidence: float | None
    ok: bool
    note: str = ""
    findings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = self.jump
        if s is not None:
            unit = "epoch" if s.axis == "epoch" else "step"
            jump = (f"{s.metric} {s.direction} {s.before:.3g} -> {s.after:.3g} at {unit} {s.at:g} "
                    f"({s.significance:.1f}x noise)")
        else:
            jump = f"no significant jump in {self.scenario.metric}"
        named = f"{self.named} {self.confidence:.0%}" if self.named and self.confidence is not None else \
            (self.named or "nothing")
        return f"{jump}; named first: {named}; truth: {self.scenario.truth} — {'OK' if self.ok else 'MISSED'}"


def judge(sc: Scenario, d) -> Outcome:
    findings = [f.id for f in d.findings]
    spikes = [s for s in d.spikes if s.metric == sc.metric and (sc.direction is None or s.direction == sc.direction)]
    if sc.at is not None:
        where = sc.at if isinstance(sc.at, tuple) else (sc.at,)
        spikes = [s for s in spikes if any(abs(_start(s) - a) <= sc.tolerance or abs(s.at - a) <= sc.tolerance
                                           for a in where)]
    jump = max(spikes, key=lambda s: s.significance) if spikes else None
    if sc.truth_is_finding:
        ok = sc.truth in findings and not (sc.no_jump and jump is not None)
        note = "" if ok else f"the finding {sc.truth} was not raised" if sc.truth not in findings else \
            f"a jump in {sc.metric} was reported where none should stand out"
        return Outcome(sc, jump, sc.truth if sc.truth in findings else None, None, ok, note, findings)
    if jump is None:
        return Outcome(sc, None, None, None, sc.jump_optional,
                       "nothing stands out of the noise" if sc.jump_optional else "the jump was not detected", findings)
    top = jump.causes[0] if jump.causes else None
    named = top.id if top else None
    return Outcome(sc, jump, named, top.confidence if top else None, named == sc.truth, "", findings)


def _start(spike) -> float:
    return spike.start if spike.start is not None else spike.at


def fresh_run_dir(out_dir: Path, name: str) -> Path:
    """``out_dir/name``, emptied when it holds an earlier whyspike recording; never deletes anything else."""
    path = out_dir / name
    if path.exists():
        if not _is_whyspike_run(path):
            raise UsageError(f"{path} exists and is not a whyspike run directory — choose another --out, or move it")
        shutil.rmtree(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out_dir, f"cannot hold run directories ({exc.strerror or exc})",
                         "choose a writable directory with --out") from None
    return path


def _is_whyspike_run(path: Path) -> bool:
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return str(meta.get("schema", "")).startswith("whyspike/run")

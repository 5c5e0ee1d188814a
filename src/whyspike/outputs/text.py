"""The terminal verdict: findings first, then the jumps — grouped when several metrics jump at one position for
one cause — each with its evidence, what would refute it, and the probe that would settle it."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from ..detect import Spike
from ..diagnosis import Diagnosis
from ..explain.cause import fmt

MAX_GROUPS = 6


def group_spikes(spikes: list[Spike]) -> list[list[Spike]]:
    """Spikes at (nearly) the same position on one axis with the same best cause, strongest group first."""
    groups: list[list[Spike]] = []
    for s in spikes:  # already most significant first
        top = s.causes[0].id if s.causes else "unknown"
        for g in groups:
            g0 = g[0]
            if g0.axis == s.axis and abs(g0.at - s.at) <= (1 if s.axis == "epoch" else 10) and \
                    (g0.causes[0].id if g0.causes else "unknown") == top:
                g.append(s)
                break
        else:
            groups.append([s])
    return groups


def _unit(axis: str) -> str:
    return "epoch" if axis == "epoch" else "step"


def render_text(d: Diagnosis, console: Console | None = None, *, verbose: bool = False) -> None:
    console = console or Console()
    src = d.run.source
    console.print(Text.assemble(("whyspike ", "bold"), (src.path, "cyan"), (f"  [{src.format}]", "dim")))
    for w in d.run.warnings[: 20 if verbose else 3]:
        console.print(Text(f"warning: {w}", style="yellow"))
    for f in d.findings:
        style = "bold red" if f.severity == "warning" else "bold blue"
        console.print(Text.assemble((f"{f.id}: ", style), f.message))
    groups = group_spikes(d.spikes)
    if not groups:
        console.print(Text(f"No significant jump in {', '.join(d.metrics[:6]) or 'any metric'}"
                           f"{' …' if len(d.metrics) > 6 else ''}.", style="bold"))
    else:
        console.print(Text(f"{len(d.spikes)} significant jump(s) at {len(groups)} position(s):", style="bold"))
    shown = groups if verbose else groups[:MAX_GROUPS]
    for g in shown:
        top = g[0].causes[0]
        console.print()
        console.print(Text.assemble((f"{_unit(g[0].axis)} {fmt(g[0].at)}", "bold"), "  ",
                                    (top.id, "bold green"), f" {top.confidence:.0%}"))
        for s in g:
            console.print(Text(f"  {s.metric} {s.direction} {fmt(s.before)} -> {fmt(s.after)} "
                               f"({s.shape}, {s.significance:.1f}x noise)"))
        for e in top.evidence[: 5 if verbose else 3]:
            console.print(Text(f"  • {e}"))
        others = [f"{c.id} {c.confidence:.0%}" for c in g[0].causes[1:3]]
        if others:
            console.print(Text(f"  also possible: {', '.join(others)}", style="dim"))
        console.print(Text(f"  refuted if: {top.refuted_if}", style="dim"))
        console.print(Text(f"  probe: {top.probe}", style="dim"))
    if len(groups) > len(shown):
        console.print(Text(f"… {len(groups) - len(shown)} more position(s): --verbose or --format json", style="dim"))
    if d.missing and (verbose or not d.spikes or d.spikes[0].causes[0].confidence < 0.6):
        console.print()
        for m in d.missing:
            console.print(Text.assemble(("missing: ", "dim bold"), (f"{m.signal} — {m.why}; {m.how}", "dim")))

"""`whyspike demo [NAME]`: train a scenario whose cause is known, record it, diagnose it, say whether whyspike got it.

With no NAME: the seed article's three examples, each with what the article predicted, what its code actually does
and why. ``--list`` shows every scenario.

After the verdict the demo runs the scenario's probes (its ``probe_plan``: counterfactual re-runs, or a check on the
recording where no re-run applies; ``whyspike.scenarios._plans``), folds their verdicts into the diagnosis, writes
``report.html`` into the run directory, and then calls the functions in :data:`HOOKS`
(``hook(scenario, run_dir, diagnosis, console)``). The seed tour keeps within :data:`TOUR_BUDGET` seconds: a
scenario whose probes would not fit is reported without them, saying so.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import click
from rich.console import Console
from rich.text import Text

from ..errors import UsageError

Hook = Callable[..., None]
HOOKS: list[Hook] = []  # hook(scenario, run_dir, diagnosis, console), run after each scenario's verdict
TOUR_BUDGET = 270.0  # seconds the seed tour may take (5 minutes, with a margin for the report and the last print)

KINDS = {"study": "counterfactual re-runs, branched from the checkpoint just before the jump (whyspike probe)",
         "replicas": "counterfactual re-runs from scratch (in-process engine)",
         "script": "the script re-run unchanged, one factor changed (black-box engine)",
         "config": "the scenario re-recorded with one setting changed",
         "check": "a check on the recording, no retraining",
         "none": "no probe applies"}

SEED_TOUR = (("Example 1: learning-rate decay", "seed-ex1", "seed-ex1-intended"),
             ("Example 2: batch statistics (BatchNorm)", "seed-ex2", None),
             ("Example 3: SGD with momentum", "seed-ex3", None))


@click.command("demo")
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the scenarios and their ground-truth causes.")
@click.option("--out", default="whyspike-demo", show_default=True, metavar="DIR",
              help="Where the run directories go (DIR/NAME, replaced when run again).")
@click.option("--size", type=click.Choice(["full", "ci"]), default="full", show_default=True,
              help="full: the demonstration (seconds to a minute each); ci: the few-second version the tests run.")
@click.option("--probes/--no-probes", default=True, show_default=True,
              help="Run the probes that settle each scenario's cause (re-runs with one factor changed).")
def demo_cmd(name, list_, out, size, probes):
    """Train a small scenario with a known cause, record and diagnose it (NAME; --list shows them).

    Without NAME: the seed article's three examples, each with what the article predicted, what its code does,
    and why.
    """
    from .. import scenarios

    console = Console()
    if list_:
        if name:
            raise UsageError("give either NAME or --list, not both")
        _list(console, scenarios)
        return
    if name is None:
        _seed_tour(console, Path(out), size, probes)
        return
    sc = scenarios.get(name)
    run_dir, d, outcome, seconds = _record_and_diagnose(sc, Path(out), size)
    _report(console, sc, run_dir, d, outcome, seconds, size, probes)


def _list(console: Console, scenarios) -> None:
    width = max(len(n) for n in scenarios.REGISTRY) + 2
    console.print(Text.assemble(("name".ljust(width), "bold"), ("ground-truth cause", "bold")))
    for sc in scenarios.REGISTRY.values():
        cause = sc.truth + (" (a run-level finding)" if sc.truth_is_finding else "")
        console.print(Text.assemble((sc.name.ljust(width), "cyan"), cause))
        console.print(Text("    " + sc.description, style="dim"))
    console.print()
    console.print(Text("whyspike demo NAME [--size ci] trains, records, diagnoses and checks one; whyspike demo "
                       "alone runs the seed article's three examples."))


@contextmanager
def _progress(what: str):
    """An elapsed-time spinner on stderr (terminals only: stdout and pipes stay clean)."""
    err = Console(stderr=True)
    if not err.is_terminal:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        bar.add_task(what, total=None)
        yield


def _record_and_diagnose(sc, out: Path, size: str):
    from ..diagnosis import diagnose
    from ..importers import load_run

    started = time.monotonic()
    with _progress(f"training {sc.name} ({size}, {sc.framework})"):
        run_dir = sc.record(out, size)
    seconds = time.monotonic() - started
    with _progress(f"diagnosing {run_dir}"):
        d = diagnose(load_run(run_dir))
    return run_dir, d, sc.outcome(d), seconds


def _report(console: Console, sc, run_dir: Path, d, outcome, seconds: float, size: str = "full",
            probes: bool = True) -> None:
    from ..outputs import render_text

    console.print(Text.assemble(("scenario ", "bold"), (sc.name, "bold cyan"), f" — {sc.description}"))
    console.print(Text(f"trained and recorded in {seconds:.1f} s; epochs and steps are numbered from 0", style="dim"))
    console.print()
    render_text(d, console)
    console.print()
    truth = f"{sc.truth} ({'run-level finding' if sc.truth_is_finding else 'cause'})"
    mark = ("agrees", "bold green") if outcome.ok else ("does NOT agree", "bold red")
    console.print(Text.assemble(("ground truth: ", "bold"), truth, "  ", ("whyspike ", "bold"), mark))
    console.print(Text(f"  {outcome.summary()}"))
    if outcome.note:
        console.print(Text(f"  {outcome.note}", style="dim"))
    console.print(Text.assemble(("why: ", "bold"), sc.why))
    if sc.probe_plan:
        console.print(Text.assemble(("settled by: ", "bold"), ", ".join(sc.probe_plan)))
    _probe_and_write(console, sc, run_dir, d, size, probes, indent="")
    for hook in HOOKS:
        hook(sc, run_dir, d, console)
    console.print(Text(f"run directory: {run_dir} — `whyspike diagnose {run_dir}` shows it again", style="dim"),
                  soft_wrap=True)  # a path broken across lines cannot be copied


def _probe_and_write(console: Console, sc, run_dir: Path, d, size: str, probes: bool, indent: str = "  ",
                     skip: str | None = None) -> None:
    """Run the scenario's probes (unless ``probes`` is off or ``skip`` says why not), print one line per verdict
    and what the diagnosis names first with them, and write ``report.html`` into the run directory."""
    from ..outputs.report import write_report
    from ..scenarios._plans import run_probes

    po = None
    if probes and skip is None:
        try:
            po = run_probes(sc, run_dir, d, size)
        except Exception as exc:  # noqa: BLE001 — a failed probe must not cost the verdict and the report
            console.print(Text(f"{indent}probes failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                               style="bold red"))
    elif skip is not None:
        console.print(Text(f"{indent}probes: skipped — {skip}", style="yellow"))
    if po is not None:
        _show_probes(console, sc, po, indent)
    path = write_report(run_dir / "report.html", d.run, d, probes=po.doc if po is not None else None)
    console.print(Text.assemble((f"{indent}report: ", "bold"), str(path)), soft_wrap=True)


def _show_probes(console: Console, sc, po, indent: str) -> None:
    console.print(Text.assemble((f"{indent}probes: ", "bold"), KINDS.get(po.kind, po.kind),
                                (f" ({po.seconds:.0f} s)", "dim")))
    for line in po.lines:
        console.print(Text(f"{indent}  • {line}"))
    if po.check:
        console.print(Text(f"{indent}  • {po.check}"))
    if po.folded and po.named:
        mark = ("the ground truth, confirmed", "bold green") if po.confirmed else ("NOT the ground truth "
                                                                                   f"({sc.truth})", "bold red")
        console.print(Text.assemble(f"{indent}  with the probes: ", (po.named, "bold"), f" {po.confidence:.0%} "
                                    "named first — ", mark))
    elif po.confirmed is not None:
        what = "the finding " + sc.truth if sc.truth_is_finding else sc.truth
        mark = ("confirms", "bold green") if po.confirmed else ("does NOT confirm", "bold red")
        console.print(Text.assemble(f"{indent}  the {'check' if po.kind == 'check' else 'probe'} ", mark,
                                    f" {what}"))


def _seed_tour(console: Console, out: Path, size: str, probes: bool = True) -> None:
    from .. import scenarios
    from ..scenarios.story import tell

    console.print(Text("The seed article's three examples, run exactly as written (Keras 3, torch backend, one seed "
                       "set from outside), recorded and diagnosed by whyspike. Epochs are numbered from 0.",
                       style="bold"))
    started = time.monotonic()
    for k, (title, name, intended) in enumerate(SEED_TOUR, 1):
        sc = scenarios.get(name)
        console.print()
        console.rule(Text(f"{title} — {sc.name}", style="bold"), align="left")
        run_dir, d, outcome, seconds = _record_and_diagnose(sc, out, size)
        story = tell(name, d, outcome)
        _para(console, "The article predicted", sc.article or "")
        _para(console, "What happened", " ".join(story.happened))
        _para(console, "Why", sc.why)
        _probe_and_write(console, sc, run_dir, d, size, probes, skip=_over_budget(sc, size, started, seconds))
        for hook in HOOKS:
            hook(sc, run_dir, d, console)
        if intended:
            isc = scenarios.get(intended)
            irun, idiag, iout, iseconds = _record_and_diagnose(isc, out, size)
            istory = tell(intended, idiag, iout)
            _para(console, "As its author intended (decay_steps=320)", " ".join(istory.happened))
            _probe_and_write(console, isc, irun, idiag, size, probes,
                             skip=_over_budget(isc, size, started, iseconds))
            for hook in HOOKS:
                hook(isc, irun, idiag, console)
            console.print(Text(f"  runs: {run_dir}, {irun}", style="dim"), soft_wrap=True)
        else:
            console.print(Text(f"  run: {run_dir}", style="dim"), soft_wrap=True)
        style = "bold red" if story.holds == "does not hold" else "bold yellow" if "partly" in story.holds else \
            "bold green"
        console.print(Text.assemble("  ", ("the article's prediction ", "bold"), (story.holds, style),
                                    " for its own code"))
    console.print()
    console.print(Text(f"{len(SEED_TOUR)} examples in {time.monotonic() - started:.0f} s. `whyspike diagnose RUN` "
                       "for the full verdict of a run; `whyspike demo --list` for every mechanism.", style="dim"))


def _over_budget(sc, size: str, started: float, seconds: float) -> str | None:
    """Why the tour skips this scenario's probes (None: they fit): each replica priced at what the recording took,
    every arm of the plan at a full seed band (an overestimate), and two more recordings kept for the rest."""
    from ..scenarios._probes import SEEDS

    replicas = max(1, len(sc.probe_plan)) * SEEDS[size]
    left = TOUR_BUDGET - (time.monotonic() - started)
    if replicas * seconds <= left - 2 * seconds:
        return None
    return (f"~{replicas} re-runs of ~{seconds:.0f} s would not fit the tour's {TOUR_BUDGET / 60:.1f} minutes; "
            f"`whyspike demo {sc.name}` runs them")


def _para(console: Console, label: str, text: str) -> None:
    console.print(Text.assemble(("  " + label + ": ", "bold"), text))


__all__ = ["HOOKS", "demo_cmd"]

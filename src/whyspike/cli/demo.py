"""`whyspike demo [NAME]`: train a scenario whose cause is known, record it, diagnose it, say whether whyspike got it.

With no NAME: the seed article's three examples, each with what the article predicted, what its code actually does
and why. ``--list`` shows every scenario.

After the verdict the demo calls the functions in :data:`HOOKS` (``hook(scenario, run_dir, diagnosis, console)``):
the place where counterfactual probes (the scenario's ``probe_plan``) and the HTML report plug in.
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
def demo_cmd(name, list_, out, size):
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
        _seed_tour(console, Path(out), size)
        return
    sc = scenarios.get(name)
    run_dir, d, outcome, seconds = _record_and_diagnose(sc, Path(out), size)
    _report(console, sc, run_dir, d, outcome, seconds)


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


def _report(console: Console, sc, run_dir: Path, d, outcome, seconds: float) -> None:
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
        console.print(Text.assemble(("settled by: ", "bold"), ", ".join(sc.probe_plan),
                                    (" (counterfactual re-runs; whyspike probe)", "dim")))
    for hook in HOOKS:
        hook(sc, run_dir, d, console)
    console.print(Text(f"run directory: {run_dir} — `whyspike diagnose {run_dir}` shows it again", style="dim"),
                  soft_wrap=True)  # a path broken across lines cannot be copied


def _seed_tour(console: Console, out: Path, size: str) -> None:
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
        run_dir, d, outcome, _ = _record_and_diagnose(sc, out, size)
        story = tell(name, d, outcome)
        _para(console, "The article predicted", sc.article or "")
        _para(console, "What happened", " ".join(story.happened))
        _para(console, "Why", sc.why)
        for hook in HOOKS:
            hook(sc, run_dir, d, console)
        if intended:
            isc = scenarios.get(intended)
            irun, idiag, iout, _ = _record_and_diagnose(isc, out, size)
            istory = tell(intended, idiag, iout)
            _para(console, "As its author intended (decay_steps=320)", " ".join(istory.happened))
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


def _para(console: Console, label: str, text: str) -> None:
    console.print(Text.assemble(("  " + label + ": ", "bold"), text))


__all__ = ["HOOKS", "demo_cmd"]

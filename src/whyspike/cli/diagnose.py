"""`whyspike diagnose PATH`: explain the jumps in an existing training log."""

from __future__ import annotations

import sys
from contextlib import nullcontext

import click
from rich.console import Console

from ..diagnosis import diagnose
from ..errors import UsageError
from ..importers import formats, load_run

EXIT_SPIKE = 3


@click.command("diagnose")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--metric", "metric", default=None, help="Only this series (name exactly as the log names it).")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: a short verdict for people; json: the diagnosis document (schema whyspike/diagnosis-v1).")
@click.option("--input-format", "input_format", default=None, metavar="FORMAT",
              help="Force the log reader instead of sniffing it (see --list-formats).")
@click.option("--steps-per-epoch", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Optimizer steps per epoch, when the log does not say: lets whyspike convert step-counted schedules.")
@click.option("--eval-size", type=click.IntRange(min=1), default=None,
              help="Examples in the evaluation set (otherwise inferred from the accuracies' granularity).")
@click.option("--fail-on-spike", is_flag=True, help=f"Exit {EXIT_SPIKE} when a significant jump is found (for CI).")
@click.option("--probes", "probes", default=None, type=click.Path(dir_okay=False),
              help="A probe study's result.json (whyspike probe): its verdicts confirm or refute the causes.")
@click.option("-v", "--verbose", is_flag=True, help="Show every jump and more evidence.")
def diagnose_cmd(path, metric, output, input_format, steps_per_epoch, eval_size, fail_on_spike, probes, verbose):
    """Explain the significant jumps in the training log at PATH (file or directory)."""
    known = formats()
    if input_format is not None and input_format not in known:
        raise UsageError(f"--input-format {input_format!r} is not a known log format; use one of: "
                         f"{', '.join(sorted(known))}")
    err = Console(stderr=True)
    # a spinner on an interactive stderr only: stdout stays clean for --format json and pipes
    with err.status(f"reading {path}") if err.is_terminal else nullcontext() as status:
        run = load_run(path, format=input_format)
        if steps_per_epoch:
            run.setup.steps_per_epoch = steps_per_epoch
        if eval_size:
            run.setup.eval_size, run.setup.eval_size_inferred = eval_size, False
        if status is not None:
            status.update(f"looking for jumps in {len(run.series)} series")
        result = diagnose(run, metric=metric)
    if probes is not None:
        _fold_probes(result, probes, err)
    if output == "json":
        from ..outputs import to_json

        sys.stdout.write(to_json(result) + "\n")
    else:
        from ..outputs import render_text

        render_text(result, verbose=verbose)
    if fail_on_spike and result.spikes:
        raise click.exceptions.Exit(EXIT_SPIKE)


def _fold_probes(result, path: str, err: Console) -> None:
    import json

    from ..errors import InputError
    from ..probe.fold import fold

    try:
        doc = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"is not a readable probe result ({exc})",
                         "pass the result.json of a `whyspike probe` study") from None
    if not isinstance(doc, dict) or doc.get("schema") != "whyspike/probe-v1":
        raise InputError(path, "is not a probe result (schema whyspike/probe-v1)",
                         "pass the result.json of a `whyspike probe` study")
    if not fold(result, doc):
        err.print(f"whyspike: the probe study is about epoch {doc.get('spike', {}).get('at')}, where this log shows "
                  "no significant jump: its verdicts were not applied")


__all__ = ["diagnose_cmd"]

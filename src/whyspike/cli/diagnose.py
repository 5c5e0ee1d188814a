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
@click.option("--landscape", "landscape", default=None, type=click.Path(dir_okay=False),
              help="A `whyspike landscape --format json` report: its curvature, path and noise-scale measurements "
                   "become evidence for the causes of the jump it measured.")
@click.option("--no-landscape", "no_landscape", is_flag=True,
              help="Do not measure the curvature around the main jump of a recorded run (done by default when the "
                   "run directory holds checkpoints, model.json and a data sample, for models of at most "
                   "1M parameters).")
@click.option("-v", "--verbose", is_flag=True, help="Show every jump and more evidence.")
def diagnose_cmd(path, metric, output, input_format, steps_per_epoch, eval_size, fail_on_spike, probes, landscape,
                 no_landscape, verbose):
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
    if landscape is not None:
        _fold_landscape(result, landscape, err)
    elif not no_landscape and result.spikes:
        _measure_landscape(result, path, err)
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


def _document(path: str, schema: str, what: str, fix: str) -> dict:
    import json

    from ..errors import InputError

    try:
        doc = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"is not a readable {what} ({exc})", fix) from None
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        raise InputError(path, f"is not a {what} (schema {schema})", fix)
    return doc


# the cheap landscape measurement the diagnosis runs itself: the curvature at the checkpoints around the main jump
AUTO_LANDSCAPE_MAX_PARAMS = 1_000_000


def _measure_landscape(result, path: str, err: Console) -> None:
    """Sharpness against the stability threshold at the checkpoints next to the main jump, when the run directory
    holds what that needs and the model is small; silent otherwise (``whyspike landscape`` says what is missing)."""
    import importlib.util
    import json
    from pathlib import Path

    run = Path(path)
    meta = run / "meta.json"
    if not (meta.is_file() and (run / "model.json").is_file() and (run / "probe_data" / "x.npy").is_file()
            and (run / "checkpoints").is_dir()):
        return
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("keras") is None:
        return
    try:
        n = int((json.loads(meta.read_text()).get("model") or {}).get("n_params") or 0)
    except (OSError, ValueError, TypeError):
        return
    if not 0 < n <= AUTO_LANDSCAPE_MAX_PARAMS:
        return
    from ..landscape import analyze_run
    from ..landscape.fold import fold

    top = next((s for s in result.spikes if s.axis == "epoch"), None)
    if top is None:
        return
    try:
        with err.status("measuring the curvature around the jump") if err.is_terminal else nullcontext():
            report = analyze_run(run, spike=int(top.at), what=("hessian",), radius=1, trace_samples=0)
    except Exception as exc:  # noqa: BLE001 - an optional measurement: the diagnosis stands without it
        err.print(f"whyspike: no landscape measurement ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                  "`whyspike landscape` runs it on its own")
        return
    fold(result, report.to_dict())


def _fold_landscape(result, path: str, err: Console) -> None:
    from ..landscape.fold import fold

    doc = _document(path, "whyspike/landscape-v1", "landscape report",
                    "pass the output of `whyspike landscape RUN --format json -o FILE`")
    if not fold(result, doc):
        err.print(f"whyspike: the landscape report measured {(doc.get('spike') or {}).get('at')}, where this log "
                  "shows no significant jump: its measurements were not applied")


def _fold_probes(result, path: str, err: Console) -> None:
    from ..probe.fold import fold

    doc = _document(path, "whyspike/probe-v1", "probe result", "pass the result.json of a `whyspike probe` study")
    if not fold(result, doc):
        err.print(f"whyspike: the probe study is about epoch {doc.get('spike', {}).get('at')}, where this log shows "
                  "no significant jump: its verdicts were not applied")


__all__ = ["diagnose_cmd"]

"""`whyspike diagnose PATH`: explain the jumps in an existing training log."""

from __future__ import annotations

import sys
from contextlib import nullcontext

import click
from rich.console import Console

from ._diagnosed import check_input_format, fold_landscape, fold_probes, read_and_diagnose, read_documents

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
    check_input_format(input_format)
    probes, landscape = read_documents(probes, landscape)  # bad ones fail before the log is read
    err = Console(stderr=True)
    run, result = read_and_diagnose(path, input_format=input_format, steps_per_epoch=steps_per_epoch,
                                    eval_size=eval_size, metric=metric, err=err)
    if landscape is not None:
        fold_landscape(result, landscape, err)
    elif not no_landscape and result.spikes:
        _measure_landscape(result, path, err)
    if probes is not None:
        fold_probes(result, probes, err)
    if output == "json":
        from ..outputs import to_json

        sys.stdout.write(to_json(result) + "\n")
    else:
        from ..outputs import render_text

        render_text(result, verbose=verbose)
    if fail_on_spike and result.spikes:
        raise click.exceptions.Exit(EXIT_SPIKE)


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



__all__ = ["diagnose_cmd"]

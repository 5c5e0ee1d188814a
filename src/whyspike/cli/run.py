"""`whyspike run SCRIPT.py [args...]`: run an unchanged training script with recording injected, then explain it."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from ..errors import InputError, WhyspikeError


@click.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("script", type=click.Path(path_type=str))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--out", default="whyspike-runs", show_default=True, metavar="DIR",
              help="Where the run directories go (one per Keras fit call / PyTorch training).")
@click.option("--detailed", is_flag=True,
              help="Detailed tier: train metrics in eval mode, PreciseBN, per-example correctness, weight norms "
                   "(costs extra forward passes each epoch).")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Record every N-th step.")
@click.option("--checkpoints", type=click.IntRange(min=0), default=3, show_default=True,
              help="Epoch checkpoints to keep (plus those around a detected jump); 0: none.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch.set_num_threads(N) for the script (left alone otherwise).")
@click.option("-q", "--quiet", is_flag=True, help="No live lines during training; only the verdict at the end.")
def run_cmd(script, script_args, out, detailed, every, checkpoints, threads, quiet):
    """Run SCRIPT unchanged with whyspike recording its training, then explain its curves.

    Every Keras Model.fit call gets a recorder (one run directory each) and hand-written PyTorch loops are hooked;
    plotting is non-interactive; KERAS_BACKEND defaults to torch, and without TensorFlow installed
    `from tensorflow import keras` gives Keras 3. Arguments after SCRIPT go to the script. The environment
    variable WHYSPIKE_MAX_EPOCHS=N caps the epochs of each fit call. The exit code is the script's.
    """
    from ..record.inject import Injection, Options, check_out_dir, format_user_traceback, max_epochs_from_env

    path = Path(script)
    if not path.exists():
        raise InputError(path, "no such file", "give the path of the Python training script to run")
    if path.is_dir() and not (path / "__main__.py").exists():
        raise InputError(path, "is a directory without __main__.py", "give the path of the Python training script")
    options = Options(out=Path(out), tier="detailed" if detailed else "default", every=every, checkpoints=checkpoints,
                      live=not quiet, threads=threads, max_epochs=max_epochs_from_env())
    check_out_dir(options.out)
    with Injection(path, options) as injection:
        outcome = injection.run(list(script_args))
    sys.stdout.flush()
    from ..record._intervene_plan import InterventionError

    if isinstance(outcome.error, InterventionError):  # ours, not the script's: one line, no traceback
        print(f"\nwhyspike: error: {outcome.error} — the training it was applied to (a Model.fit, or the PyTorch "
              "loop at that optimizer step) stopped there", file=sys.stderr, flush=True)
        if outcome.runs:  # fits before it recorded runs
            _report(script, outcome.runs)
        return outcome.exit_code
    if outcome.error is not None:
        print(f"\nwhyspike: {script} raised {type(outcome.error).__name__} (its own traceback below); what was "
              "recorded up to then is kept", file=sys.stderr)
        print(format_user_traceback(outcome.error, path), file=sys.stderr, end="", flush=True)
    _report(script, outcome.runs)
    return outcome.exit_code


def _report(script: str, runs) -> None:
    from ..diagnosis import diagnose
    from ..importers import load_run
    from ..outputs import render_text

    if not runs:
        click.echo(f"whyspike: no training was recorded: {script} never called a Keras Model.fit and stepped no "
                   "PyTorch optimizer", err=True)
        return
    console = Console()
    for k, run in enumerate(runs, 1):
        console.print()
        if len(runs) > 1:
            console.print(f"[bold]whyspike: run {k} of {len(runs)} — {run.label} ({run.framework})[/bold]")
        if run.explained:
            console.print(f"whyspike: run recorded in {run.path} by the script's own WhyspikeCallback (its verdict is "
                          "above)", markup=False, highlight=False)
            continue
        try:
            render_text(diagnose(load_run(run.path)), console)
        except WhyspikeError as exc:
            console.print(f"whyspike: nothing to diagnose in {run.path}: {exc}", markup=False)
        console.print(f"whyspike: run recorded in {run.path} — `whyspike diagnose {run.path}` to see it again",
                      markup=False, highlight=False)


__all__ = ["run_cmd"]

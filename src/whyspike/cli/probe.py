"""`whyspike probe TARGET`: prove a cause by re-running the training with one factor changed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import click

from ..errors import UsageError
from ..probe._text import intervention_lines


def _spike(value: str) -> str | int:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--spike {value!r}: an epoch number or 'auto'") from None


@click.command("probe")
@click.argument("target")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT_ARGS...]")
@click.option("--spike", default="auto", show_default=True, help="Epoch of the jump to probe, or 'auto' (the most "
              "significant one the original training shows).")
@click.option("--intervene", "interventions", multiple=True, metavar="NAME=VALUE",
              help="An intervention (repeatable), e.g. lr.shift=+3, lr.decay=off, momentum=off, bn.recompute, "
                   "seed.data=1. Default: the plan the diagnosis's candidate causes call for.")
@click.option("--seeds", default=3, show_default=True, type=int, help="Replicas per arm (the noise band).")
@click.option("--metric", default="val_accuracy", show_default=True,
              type=click.Choice(["val_accuracy", "val_loss", "train_accuracy", "train_loss"]))
@click.option("--executor", default="local", show_default=True, type=click.Choice(["local", "ray", "inline"]),
              help="local: a process pool; ray: a Ray cluster (--address); inline: this process.")
@click.option("--address", default=None, help="Ray cluster address (with --executor ray).")
@click.option("--workers", default=None, type=int, help="Worker processes (local) or CPUs (a new Ray instance).")
@click.option("--engine", default="auto", show_default=True, type=click.Choice(["auto", "sequential", "vectorized"]))
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Study directory (resumed when it exists). Default: whyspike-probes/<target>.")
@click.option("--format", "fmt", default="text", show_default=True, type=click.Choice(["text", "json"]))
def probe_cmd(target, script_args, spike, interventions, seeds, metric, executor, address, workers, engine, out,
              fmt):
    """Re-run TARGET with one factor changed per arm, against a band of baseline seeds, branched from the
    checkpoint just before the jump.

    TARGET is a training script (train.py, run unchanged as `whyspike run` runs it, its arguments after --), or
    FILE.py:FUNC / module:FUNC, FUNC() returning a whyspike.probe.TrainingSpec (model factory, data, optimizer,
    schedule). A killed study resumes where it stopped when run again with the same --out.
    """
    if ":" not in target and target.endswith(".py"):  # a script: the black-box study
        from ..probe.script_study import run_script_study

        if engine != "auto":
            raise UsageError(f"--engine {engine}: a script is re-run as a whole (the black-box engine); --engine "
                             "chooses the trainer of a FILE.py:FUNC target")
        if out is None:
            out = str(Path("whyspike-probes") / Path(target).stem)
        result = run_script_study(target, list(script_args), out, spike=_spike(spike),
                                  interventions=list(interventions), seeds=seeds, metric=metric, executor=executor,
                                  workers=workers, address=address)
    else:
        from ..probe.study import run_study

        if script_args:
            raise UsageError(f"script arguments {' '.join(script_args)!r}: only a script target (train.py) takes "
                             "arguments after --")
        if out is None:
            name = target.rpartition(":")[0].rpartition("/")[2].removesuffix(".py") or "study"
            out = str(Path("whyspike-probes") / f"{name}-{target.rpartition(':')[2]}")
        result = run_study(target, out, spike=_spike(spike), interventions=list(interventions), seeds=seeds,
                           metric=metric, executor=executor, workers=workers, address=address, engine=engine)
    if fmt == "json":
        click.echo(json.dumps(result, indent=1))
        return 0
    click.echo(render(result, out))
    return 0


def render(result: dict, out: str) -> str:
    """The study in a few lines of 80 columns or less."""
    at = result["spike"]["at"]
    lines = []
    if at is None:
        lines.append(f"The original training shows no significant jump in {result['metric']}.")
        jumps = [j for j in result["baseline"].get("jumps") or [] if j]
        if jumps:  # the seeds' largest level changes (a black-box study reports them even without a jump)
            lines.append(f"Baseline seeds' largest level change at epoch(s) {', '.join(str(j['at']) for j in jumps)} "
                         f"({'reproducible' if result['baseline']['reproducible'] else 'not reproducible'} across "
                         "seeds).")
    else:
        base = result["baseline"]
        jumps = [j for j in base["jumps"] if j]
        where = ", ".join(f"{j['at']}" for j in jumps)
        lines.append(f"Jump in {result['metric']} at epoch {at}; baseline seeds jump at epoch(s) {where or '-'} "
                     f"({'reproducible' if base['reproducible'] else 'not reproducible'} across seeds).")
        if result["spike"].get("branch_epoch") is not None:
            lines.append(f"Replicas branched from the checkpoint of epoch {result['spike']['branch_epoch']}.")
    lines += [f"Note: {note}" for note in result.get("notes") or []]
    lines += intervention_lines(result["interventions"])
    lines.append(f"study: {out}  (result.json; `whyspike report RUN --probes {out}/result.json`)")
    return "\n".join(textwrap.fill(line, 80, subsequent_indent="    ", break_on_hyphens=False) for line in lines)


__all__ = ["probe_cmd", "render"]

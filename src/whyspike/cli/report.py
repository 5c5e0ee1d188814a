"""`whyspike report RUN -o report.html`: the diagnosis as one self-contained HTML page (and a PNG of its figure)."""

from __future__ import annotations

from contextlib import nullcontext

import click
from rich.console import Console

from ..errors import require
from ._diagnosed import check_input_format, fold_landscape, fold_probes, read_and_diagnose, read_documents


@click.command("report")
@click.argument("run_path", metavar="RUN", type=click.Path(path_type=str))
@click.option("-o", "--out", "out", default="report.html", show_default=True, metavar="FILE",
              help="Where to write the HTML report (one self-contained file that works offline).")
@click.option("--metric", default=None, help="Only this series (name exactly as the log names it).")
@click.option("--probes", "probes", default=None, metavar="FILE",
              help="Probe results (JSON, schema whyspike/probe-v1): adds the seed band and the interventions.")
@click.option("--landscape", "landscape", default=None, metavar="FILE",
              help="Landscape measurements (JSON, schema whyspike/landscape-v1): adds interpolation, surface and "
                   "curvature plots.")
@click.option("--png", "png", default=None, metavar="FILE",
              help="Also write the main figure as a PNG (needs matplotlib: pip install 'whyspike[report]').")
@click.option("--input-format", "input_format", default=None, metavar="FORMAT",
              help="Force the log reader instead of sniffing it.")
@click.option("--steps-per-epoch", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Optimizer steps per epoch, when the log does not say.")
@click.option("--eval-size", type=click.IntRange(min=1), default=None,
              help="Examples in the evaluation set (otherwise inferred from the accuracies' granularity).")
def report_cmd(run_path, out, metric, probes, landscape, png, input_format, steps_per_epoch, eval_size):
    """Write an HTML report explaining the jumps in the training log RUN (a file or a directory).

    The page holds the verdict, the curves with the jumps marked and the learning rate underneath (zoom with the
    mouse, hover for values), the evidence for each candidate cause, probe results and landscape plots when given,
    run-level findings and how to reproduce. It loads nothing from the network.
    """
    from ..outputs.report import write_png, write_report

    if png:
        require("matplotlib", "report")  # before any work: the install hint, not a report without its PNG
    check_input_format(input_format)
    probes, landscape = read_documents(probes, landscape)  # bad ones fail before the log is read
    err = Console(stderr=True)
    run, result = read_and_diagnose(run_path, input_format=input_format, steps_per_epoch=steps_per_epoch,
                                    eval_size=eval_size, metric=metric, err=err)
    # the verdict the report states is the one `whyspike diagnose --probes/--landscape` gives
    if landscape is not None:
        fold_landscape(result, landscape, err)
    if probes is not None:
        fold_probes(result, probes, err)
    with err.status(f"writing {out}") if err.is_terminal else nullcontext():
        path = write_report(out, run, result, probes=probes, landscape=landscape)
        if png:
            png_path = write_png(png, result)
    size = path.stat().st_size
    jumps = f"{len(result.spikes)} jump(s)" if result.spikes else "no significant jump"
    click.echo(f"whyspike: wrote {path} ({size / 1024:.0f} KB, {jumps})")
    if png:
        click.echo(f"whyspike: wrote {png_path}")


__all__ = ["report_cmd"]

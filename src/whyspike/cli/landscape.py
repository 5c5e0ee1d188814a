"""`whyspike landscape RUN`: measure the loss landscape around a jump of a recorded run (see whyspike.landscape)."""

from __future__ import annotations

import json
import math
import sys
from contextlib import nullcontext
from pathlib import Path

import click
from rich.console import Console

from ..errors import InputError, UsageError

PARTS = ("hessian", "interp", "surface", "gns")


def _parse_what(what: str) -> tuple[str, ...]:
    items = [w.strip() for w in what.split(",") if w.strip()]
    if not items or "all" in items:
        return PARTS
    bad = [w for w in items if w not in PARTS]
    if bad:
        raise UsageError(f"--what {what!r}: {', '.join(bad)} is not a part; choose among {', '.join(PARTS)} or all")
    return tuple(items)


def _parse_spike(spike: str):
    if spike == "auto":
        return "auto"
    if spike == "last":
        return None
    try:
        return int(spike)
    except ValueError:
        raise UsageError(f"--spike {spike!r}: give an epoch number, 'auto' (the diagnosis' main jump) or 'last' "
                         "(the last two checkpoints)") from None


@click.command("landscape")
@click.argument("run", type=click.Path(path_type=str))
@click.option("--spike", default="auto", show_default=True, metavar="EPOCH|auto|last",
              help="The jump to look at: an epoch (checkpoints just before and from it), 'auto' (the most significant "
                   "jump the diagnosis finds) or 'last' (the last two checkpoints).")
@click.option("--factory", default=None, metavar="FILE.py:FUNC",
              help="FUNC() returns (model, loss_fn[, train_batches[, val_batches]]): the architecture and data the "
                   "run directory does not hold.")
@click.option("--what", default="all", show_default=True, metavar="PARTS",
              help="Comma-separated: hessian (sharpness vs 2/lr over the checkpoints), interp (1-D interpolation), "
                   "surface (2-D), gns (gradient noise scale), or all.")
@click.option("--grid", type=click.IntRange(min=2, max=401), default=21, show_default=True,
              help="Points per side of the 2-D surface.")
@click.option("--surface", "surface_kind", type=click.Choice(["auto", "pca", "random", "checkpoints"]), default="auto",
              show_default=True, help="Plane of the surface: the trajectory's PCA plane (auto with 3+ checkpoints), "
                                      "filter-normalized random directions, or the plane through three checkpoints.")
@click.option("--span", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Half-width of a random surface, in filter-normalized units.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Batch size for the stored data sample (default: the run's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random directions and probes.")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: a summary for people; json: the report (schema whyspike/landscape-v1).")
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write the JSON report to this file.")
def landscape_cmd(run, spike, factory, what, grid, surface_kind, span, batch_size, seed, output, out_file):
    """Measure the loss landscape around a jump of the recorded run RUN: sharpness against 2/lr over the
    checkpoints, the 1-D path across the jump, a 2-D surface with the trajectory, the gradient noise scale."""
    parts = _parse_what(what)
    spike_arg = _parse_spike(spike)
    if not Path(run).is_dir():
        raise InputError(run, "does not exist" if not Path(run).exists() else "is not a directory",
                         "pass a run directory written by a whyspike recorder")
    from ..landscape.analyze import analyze_run
    from ..landscape.sources import build_setup

    err = Console(stderr=True)
    setup = build_setup(run, factory, batch_size)
    progress_cm = _progress(err) if err.is_terminal else nullcontext(None)
    with progress_cm as progress:
        tick = _ticker(progress) if progress is not None else None
        report = analyze_run(run, setup=setup, spike=spike_arg, what=parts, grid=grid, surface=surface_kind,
                             span=span, seed=seed, progress=tick)
    doc = report.to_dict()
    text = json.dumps(doc, indent=2, allow_nan=False)
    if out_file:
        Path(out_file).write_text(text + "\n")
    if output == "json":
        sys.stdout.write(text + "\n")
    else:
        render_text(doc)
    for e in doc["errors"]:
        click.echo(f"whyspike: {e['part']} incomplete: {e['message']} (finished: {e['finished']})", err=True)


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _ticker(progress):
    tasks: dict[str, int] = {}

    def tick(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done, total=total)

    return tick


def _f(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    a = abs(v)
    return f"{v:.3g}" if a == 0 or 1e-3 <= a < 1e5 else f"{v:.2e}"


def render_text(d: dict) -> None:
    out = click.echo
    ck = d["checkpoints"]
    out(f"whyspike landscape {d['run']} ({d['framework']}; checkpoints at epochs "
        f"{_span(ck['available'])})")
    s = d.get("spike")
    if s and s.get("metric"):
        out(f"jump: {s['metric']} {s['direction']} at {s['axis']} {s['at']:g} ({s['shape']}, significance "
            f"{s['significance']}); checkpoints compared: epoch {ck['before']['epoch']} -> epoch {ck['after']['epoch']}")
    else:
        out(f"checkpoints compared: epoch {ck['before']['epoch']} -> epoch {ck['after']['epoch']}")
    for note in d.get("setup") or []:
        out(f"  {note}")
    if d["curvature"]:
        out(f"curvature ({d['curvature_mode']}):")
        out("  epoch      loss    |grad|   lam_max   lam_min  compared  threshold   ratio     trace  hvps")
        for p in d["curvature"]:
            comp = p["preconditioned_lambda_max"] if p["compared"] == "preconditioned_lambda_max" else p["lambda_max"]
            out(f"  {p['epoch']:>5} {_f(p['loss']):>9} {_f(p['grad_norm']):>9} {_f(p['lambda_max']):>9} "
                f"{_f(p['lambda_min']):>9} {_f(comp):>9} {_f(p['threshold']):>10} {_f(p['ratio']):>7} "
                f"{_f(p['trace']):>9} {p['hvps']:>5}")
        rule = next((p["threshold_rule"] for p in d["curvature"] if p.get("threshold_rule")), None)
        if rule:
            out(f"  threshold: {rule}; ratio > 1 means the next steps are unstable for the local curvature")
    it = d.get("interpolation")
    if it:
        a = it["alphas"]
        i0, i1 = a.index(0.0), a.index(1.0)
        mid = min(range(len(a)), key=lambda i: abs(a[i] - 0.5))
        out(f"interpolation epoch {it['from']} -> {it['to']} (alpha in [{a[0]:g}, {a[-1]:g}]): train loss "
            f"{_f(it['train_loss'][i0])} -> {_f(it['train_loss'][mid])} (alpha 0.5) -> {_f(it['train_loss'][i1])}; "
            f"barrier {_f(it['barrier'])}; {'monotonic' if it['monotonic'] else 'not monotonic'}")
        if it.get("val_loss"):
            out(f"  validation loss {_f(it['val_loss'][i0])} -> {_f(it['val_loss'][i1])}, barrier {_f(it['val_barrier'])}")
    sf = d.get("surface")
    if sf:
        vals = [v for row in sf["train_loss"] for v in row if v is not None]
        ev = sf.get("explained_variance")
        extra = f", PCA explains {ev[0]:.0%} + {ev[1]:.0%} of the path" if ev else ""
        out(f"surface ({sf['kind']}, {len(sf['x'])}x{len(sf['y'])} around {sf['center']}{extra}): train loss "
            f"{_f(min(vals) if vals else None)} .. {_f(max(vals) if vals else None)}; {sf['forward_passes']} "
            f"forward passes in {sf['seconds']:.2f} s")
    ns = d.get("noise_scale")
    if ns:
        out(f"gradient noise scale at epoch {ns['epoch']}: B_simple = {_f(ns['b_simple'])} "
            f"(± {_f(ns['b_simple_stderr'])}) from {ns['batches']} batches of {ns['batch_size']}"
            + (f"; the run's batch size is {ns['run_batch_size']}" if ns.get("run_batch_size") else ""))
    if d["evidence"]:
        out("evidence:")
        for e in d["evidence"]:
            out(f"  {e['cause']} {e['confidence_delta']:+.2f}")
            for line in e["evidence"]:
                out(f"    - {line}")
    for w in d["warnings"]:
        out(f"warning: {w}")


def _span(epochs: list[int]) -> str:
    if not epochs:
        return "none"
    if epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"{epochs[0]}-{epochs[-1]}"
    return ", ".join(map(str, epochs))


__all__ = ["landscape_cmd"]

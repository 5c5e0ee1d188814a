"""What ``diagnose`` and ``report`` share: read a log with the user's corrections, diagnose it, and fold probe and
landscape documents (read by the report's own checked readers, ``outputs.report._inputs``) into the diagnosis, so
that both commands give the same verdict."""

from __future__ import annotations

from contextlib import nullcontext

from rich.console import Console

from ..diagnosis import Diagnosis, diagnose
from ..errors import UsageError
from ..importers import formats, load_run
from ..run import Run


def check_input_format(input_format: str | None) -> None:
    """A forced ``--input-format`` must be a known reader (checked before anything is read)."""
    known = formats()
    if input_format is not None and input_format not in known:
        raise UsageError(f"--input-format {input_format!r} is not a known log format; use one of: "
                         f"{', '.join(sorted(known))}")


def read_documents(probes: str | None, landscape: str | None) -> tuple[dict | None, dict | None]:
    """The ``--probes`` and ``--landscape`` documents, checked (one-line errors for a file of another kind)."""
    from ..outputs.report._inputs import read_landscape, read_probes

    return read_probes(probes), read_landscape(landscape)


def read_and_diagnose(path: str, *, input_format: str | None, steps_per_epoch: float | None,
                      eval_size: int | None, metric: str | None, err: Console) -> tuple[Run, Diagnosis]:
    """The run at ``path`` (with the setup the user gave) and its diagnosis; a spinner on an interactive stderr
    only, so that stdout stays clean for ``--format json`` and pipes."""
    with err.status(f"reading {path}") if err.is_terminal else nullcontext() as status:
        run = load_run(path, format=input_format)
        if steps_per_epoch:
            run.setup.steps_per_epoch = steps_per_epoch
        if eval_size:
            run.setup.eval_size, run.setup.eval_size_inferred = eval_size, False
        if status is not None:
            status.update(f"looking for jumps in {len(run.series)} series")
        return run, diagnose(run, metric=metric)


def fold_landscape(result, doc: dict, err: Console) -> None:
    """Apply a landscape report (read with ``read_landscape``) to the jump it measured."""
    from ..landscape.fold import fold

    if not fold(result, doc):
        err.print(f"whyspike: the landscape report measured {(doc.get('spike') or {}).get('at')}, where this log "
                  "shows no significant jump: its measurements were not applied")


def fold_probes(result, doc: dict, err: Console) -> None:
    """Apply a probe result (read with ``read_probes``) to the jump it probed."""
    from ..probe.fold import fold

    if not fold(result, doc):
        err.print(f"whyspike: the probe study is about epoch {(doc.get('spike') or {}).get('at')}, where this log "
                  "shows no significant jump: its verdicts were not applied")

"""The HTML report: one self-contained file to open offline or send to a colleague.

    >>> import whyspike
    >>> from whyspike.diagnosis import diagnose
    >>> from whyspike.outputs.report import write_report
    >>> run = whyspike.load_run("runs/exp1")                               # doctest: +SKIP
    >>> write_report("report.html", run, diagnose(run))                   # doctest: +SKIP
    PosixPath('report.html')

Sections, in order (each left out when its input is absent): the verdict (one sentence per jump), the curves with
the jumps marked and the LR and other optimizer signals aligned underneath (zoom synced), the evidence for each
candidate cause, probe results (``probes=``: a ``whyspike/probe-v1`` document), landscape plots (``landscape=``: a
``whyspike/landscape-v1`` document), run-level findings, and how to reproduce. docs/report.md describes them.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...diagnosis import Diagnosis, diagnose
from ...errors import InputError
from ...run import Run
from ._page import build
from ._png import write_png


def render_report(run: Run, diagnosis: Diagnosis | None = None, *, probes: Any = None, landscape: Any = None,
                  report_name: str = "report.html") -> str:
    """The report as one HTML string.

    ``diagnosis``: from :func:`whyspike.diagnosis.diagnose` (computed when None). ``probes`` / ``landscape``: a
    dict, or the path of a JSON file. ``report_name`` appears in the page's "how to reproduce" commands.
    """
    if diagnosis is None:
        diagnosis = diagnose(run)
    elif diagnosis.run is not run:
        diagnosis = replace(diagnosis, run=run)
    return build(diagnosis, probes=probes, landscape=landscape, report_name=report_name)


def write_report(path: str | os.PathLike, run: Run, diagnosis: Diagnosis | None = None, *, probes: Any = None,
                 landscape: Any = None) -> Path:
    """Write the report to ``path`` (parent folders created) and return the path."""
    path = Path(path)
    page = render_report(run, diagnosis, probes=probes, landscape=landscape, report_name=path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(path, f"cannot be written ({exc.strerror or exc})", "choose another output path") from None
    return path


__all__ = ["render_report", "write_png", "write_report"]

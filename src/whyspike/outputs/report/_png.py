"""A PNG of the report's main figure (for a README or a chat), drawn with matplotlib from the same chart specs.

matplotlib is optional (``pip install 'whyspike[report]'``) and imported only here, when a PNG is asked for; the
HTML report itself needs nothing beyond the standard library and exports its own PNG from the browser.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...diagnosis import Diagnosis
from ...errors import InputError, require
from . import _figures as fig


def _arr(v: list) -> np.ndarray:
    return np.array([np.nan if e is None else e for e in v], dtype=np.float64)


def write_png(path: str | os.PathLike, diagnosis: Diagnosis, *, width_in: float = 10.0, dpi: int = 120) -> Path:
    """Draw the main figure (the axis of the most significant jump) to ``path`` and return the path."""
    require("matplotlib", "report")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    d = diagnosis
    axes = fig.axes_in_order(d.run, d)
    if not axes:
        raise InputError(d.run.source.path, "has no series to draw", "check that the log holds numeric series")
    charts = fig.axis_charts(d.run, d, axes[0], "png", {})
    heights = [c["height"] for c in charts]
    figure, axs = plt.subplots(len(charts), 1, sharex=True, squeeze=False,
                               figsize=(width_in, 0.5 + sum(heights) / 80.0),
                               gridspec_kw={"height_ratios": heights})
    for ax, c in zip(axs[:, 0], charts):
        x = _arr(c["x"])
        for m in c["marks"]:
            if m["from"] < m["at"]:
                ax.axvspan(m["from"], m["at"], color="#d62728", alpha=0.12, lw=0)
            ax.axvline(m["at"], color="#d62728", lw=1.0, ls="--", alpha=0.8)
        for s in c["series"]:
            y = _arr(s["y"])
            ok = np.isfinite(y)  # the HTML joins over points a series does not have; so does the PNG
            if c["log"]:
                ok &= y > 0
            ax.plot(x[ok], y[ok], color=s["color"], lw=s.get("width", 1.25), label=s["label"])
        if c["log"]:
            ax.set_yscale("log")
        ax.set_ylabel(c["title"])
        ax.grid(True, alpha=0.25)
        ax.legend(loc="best", fontsize=8, frameon=False)
    axs[-1, 0].set_xlabel(fig.unit(axes[0]))
    top = d.spikes[0] if d.spikes and d.spikes[0].axis == axes[0] else None
    cause = (top.causes[0].id if top.causes else "unknown") if top is not None else ""
    title = d.run.source.path if top is None else \
        f"{top.metric} {top.direction} at {fig.unit(top.axis)} {top.at:g}: {cause}"
    axs[0, 0].set_title(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi)
    except OSError as exc:
        raise InputError(path, f"cannot be written ({exc.strerror or exc})", "choose another output path") from None
    finally:
        plt.close(figure)
    return path


__all__ = ["write_png"]

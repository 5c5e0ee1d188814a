"""Assembling the one self-contained HTML page: sections, chart data and the inlined assets.

Nothing is loaded from anywhere when the page opens: uPlot, the report's script and its styles are read from
``assets/`` and written into the page, and a Content-Security-Policy forbids every fetch, so the file works
offline, from an e-mail attachment, or behind a firewall, and cannot leak anything by loading a URL.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from ... import __version__
from ...diagnosis import Diagnosis
from . import _figures as fig
from . import _inputs as inp
from . import _sections as sec
from ._sections import esc

UPLOT_VERSION = "1.6.32"
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
       "font-src data:; connect-src 'none'; frame-src 'none'; form-action 'none'; base-uri 'none'")


def asset(name: str) -> str:
    return (resources.files(__package__) / "assets" / name).read_text(encoding="utf-8")


def script_json(data: Any) -> str:
    """JSON safe inside a <script> element: no '</script>', '<!--' or line separators can end it early."""
    s = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def build(d: Diagnosis, *, probes: Any = None, landscape: Any = None, report_name: str = "report.html") -> str:
    """The page for diagnosis ``d`` (its run included), with the optional probe and landscape documents."""
    run = d.run
    probes = inp.read_probes(probes)
    landscape = inp.read_landscape(landscape)
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())

    colors: dict[str, str] = {}
    groups, charts = [], {}
    for axis in fig.axes_in_order(run, d):
        gid = f"g-{axis}"
        panels = fig.axis_charts(run, d, axis, gid, colors)
        if panels:
            groups.append({"id": gid, "axis": axis, "main": not groups, "charts": [c["id"] for c in panels],
                           "constants": fig.constants(run, axis)})
            charts.update({c["id"]: c for c in panels})
    marked = {k: f"spike-{k}" for k, s in enumerate(d.spikes)
              if any(m["id"] == f"spike-{k}" for c in charts.values() for m in c["marks"])}

    probe_notes: list[str] = []
    if probes is not None:
        pc = fig.probe_chart(probes, probe_notes)
        if pc is not None:
            spike = probes.get("spike") if isinstance(probes.get("spike"), dict) else {}
            pc["xlabel"] = inp.text(spike.get("axis"), "epoch")
            charts["probe"] = pc
    land_notes: list[str] = []
    heatmaps: dict[str, Any] = {}
    above: list[float] = []
    if landscape is not None:
        ic = fig.interpolation_chart(landscape.get("interpolation"), land_notes)
        if ic is not None:
            charts["interpolation"] = ic
        cc, above = fig.curvature_chart(landscape.get("curvature"), land_notes)
        if cc is not None:
            charts["curvature"] = cc
        sp = fig.surface_spec(landscape.get("surface"), land_notes)
        if sp is not None:
            heatmaps["surface"] = sp
    have = {"interpolation": "interpolation" in charts, "curvature": "curvature" in charts,
            "surface": "surface" in heatmaps,
            "curvature_compared": " ".join(s["label"] for s in charts["curvature"]["series"])
            if "curvature" in charts else ""}

    title = f"whyspike report — {Path(run.source.path).name or run.source.path}"
    body = [
        sec.verdict(d, marked),
        _curves(groups, charts),
        sec.evidence(d),
        sec.probes(probes, "probe" in charts, probe_notes),
        sec.landscape(landscape, have, above, land_notes),
        sec.findings(d),
        sec.reproduce(d, report_name, generated),
    ]
    body = [b for b in body if b]
    toc = "".join(f'<a href="#{sid}">{esc(name)}</a>' for sid, name in _toc(body))
    png_name = (Path(run.source.path).stem or "run") + "-whyspike.png"
    data = {"groups": groups, "charts": charts, "heatmaps": heatmaps, "png_name": png_name,
            "title": title}
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="whyspike {esc(__version__)}">
<title>{esc(title)}</title>
<style>{asset("uPlot.min.css")}</style>
<style>{asset("report.css")}</style>
</head>
<body>
<header><h1>{esc(title)}</h1>
<p class="muted"><code>{esc(run.source.path)}</code> · {esc(run.source.format)} · {esc(generated)} · whyspike
{esc(__version__)}</p><nav>{toc}</nav></header>
<main>
{"".join(body)}
</main>
<footer>Written by whyspike {esc(__version__)}. One self-contained file: it loads nothing from the network. Charts:
uPlot {UPLOT_VERSION} (MIT license, © Leon Sorokin).</footer>
<script id="ws-data" type="application/json">{script_json(data)}</script>
<script>{asset("uPlot.iife.min.js")}</script>
<script>{asset("report.js")}</script>
</body>
</html>
"""


_TITLES = {"verdict": "Verdict", "curves": "Curves", "evidence": "Evidence", "probes": "Probes",
           "landscape": "Landscape", "findings": "Findings", "reproduce": "Reproduce"}


def _toc(body: list[str]) -> list[tuple[str, str]]:
    out = []
    for b in body:
        sid = b.split('id="', 1)[1].split('"', 1)[0]
        out.append((sid, _TITLES.get(sid, sid)))
    return out


def _constants_line(g: dict) -> str:
    if not g["constants"]:
        return ""
    return f'<p class="note">Constant through the run: {esc(", ".join(g["constants"]))}.</p>'


def _curves(groups: list[dict], charts: dict[str, dict]) -> str:
    if not groups:
        return ""
    parts = []
    for g in groups:
        heading = f"by {g['axis']}" if len(groups) > 1 else ""
        boxes = []
        for cid in g["charts"]:
            c = charts[cid]
            note = f'<p class="note">{esc(c["note"])}</p>' if c["note"] else ""
            boxes.append(f'<div class="ws-chart" data-chart="{esc(cid)}"></div>{note}')
        main = " ws-main" if g["main"] else ""
        parts.append(
            f'<div class="ws-figure ws-group{main}" data-group="{esc(g["id"])}">'
            f'<div class="toolbar">{f"<h3>{esc(heading)}</h3>" if heading else ""}'
            '<span class="hint">drag across a chart to zoom · double-click to zoom out · hover for values</span>'
            '<button type="button" class="ws-reset">zoom out</button>'
            '<button type="button" class="ws-png">download PNG</button></div>'
            f'{"".join(boxes)}{_constants_line(g)}</div>')
    marked = sum(len(charts[g["charts"][0]]["marks"]) for g in groups)
    intro = ("The logged curves, with each significant jump marked (the line at the jump, the shaded span where it "
             "happens); the learning rate and the other logged optimizer signals underneath on the same axis."
             if marked else "The logged curves; no significant jump was found to mark.")
    return sec.section("curves", "Curves", "".join(parts)
                       + '<noscript><p class="muted">The charts need JavaScript.</p></noscript>', intro)


__all__ = ["CSP", "UPLOT_VERSION", "build", "script_json"]

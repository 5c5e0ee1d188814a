"""The report's sections as HTML. Every text from the run (metric names, paths, evidence) goes through ``esc``.

Text is written into the page here, on the Python side, so that it reads (and tests) the same with or without
JavaScript; only the charts are drawn by the script. A section whose input is absent returns ``""`` and is left
out of the page and of its table of contents.
"""

from __future__ import annotations

import html
import json
import shlex
import sys
from typing import Any

from ... import __version__
from ...detect import Spike
from ...diagnosis import Diagnosis
from ...explain.cause import fmt
from ..text import group_spikes
from . import _inputs as inp
from ._figures import cause_label, unit

MAX_VERDICTS = 20
MAX_CARDS = 12
VERDICT_CLASS = {"removed": "ok", "moved": "info", "unchanged": "muted", "error": "bad"}


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def num(v: Any) -> str:
    """A number for a table cell: readable (0.0125, 1.2e-31, 92.7), '—' when absent."""
    f = inp.num(v)
    return "—" if f is None else esc(fmt(f))


def pvalue(v: Any) -> str:
    f = inp.num(v)
    return "—" if f is None else esc(f"{f:.2g}")


def section(sid: str, title: str, body: str, intro: str = "") -> str:
    lead = f'<p class="intro">{intro}</p>' if intro else ""
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{lead}{body}</section>'


# ----------------------------------------------------------------------------------------------------- verdict


def verdict_sentence(s: Spike) -> str:
    """One sentence: what moved, where, how much above the noise, and the most likely cause with its best evidence."""
    if s.shape == "transient":
        verb = "spiked up" if s.direction == "up" else "dipped"
        what = f"from {fmt(s.before)} to {fmt(s.after)} and back"
    else:
        verb = "jumped up" if s.direction == "up" else "dropped"
        what = f"from {fmt(s.before)} to {fmt(s.after)}"
    head = f"{s.metric} {verb} {what} at {unit(s.axis)} {fmt(s.at)} ({s.significance:.1f}× the noise)"
    if not s.causes:
        return head + " — no known cause fits the evidence."
    top = s.causes[0]
    tail = f": {top.evidence[0]}" if top.evidence else ""
    return f"{head} — most likely {cause_label(top.id)} ({top.confidence:.0%}){tail}."


def verdict(d: Diagnosis, marks: dict[int, str]) -> str:
    items = []
    for k, s in enumerate(d.spikes[:MAX_VERDICTS]):
        mid = marks.get(k)
        zoom = (f' <button type="button" class="ws-zoom" data-mark="{esc(mid)}" title="zoom the curves into this jump">'
                "zoom in</button>") if mid else ""
        cause = s.causes[0].id if s.causes else "unknown"
        items.append(f'<li class="ws-verdict" data-metric="{esc(s.metric)}" data-at="{esc(fmt(s.at))}" '
                     f'data-cause="{esc(cause)}">{esc(verdict_sentence(s))}{zoom}</li>')
    if items:
        more = len(d.spikes) - MAX_VERDICTS
        tail = f'<p class="muted">… and {more} more jump(s), listed under Evidence.</p>' if more > 0 else ""
        body = f'<ol class="verdicts">{"".join(items)}</ol>{tail}'
    else:
        searched = ", ".join(d.metrics[:6]) + (" …" if len(d.metrics) > 6 else "")
        body = f'<p class="ws-verdict none">No significant jump in {esc(searched or "any metric")}.</p>'
    if d.findings:
        ids = ", ".join(f'<a href="#finding-{k}">{esc(f.id)}</a>' for k, f in enumerate(d.findings))
        body += f'<p class="findings-line">Run-level findings: {ids}.</p>'
    return section("verdict", "Verdict", body)


# ---------------------------------------------------------------------------------------------------- evidence


def evidence(d: Diagnosis) -> str:
    groups = group_spikes(d.spikes)
    if not groups:
        return ""
    cards = [_card(g, k) for k, g in enumerate(groups)]
    body = "".join(cards[:MAX_CARDS])
    if len(cards) > MAX_CARDS:
        body += (f'<details><summary>{len(cards) - MAX_CARDS} more position(s)</summary>'
                 f'{"".join(cards[MAX_CARDS:])}</details>')
    return section("evidence", "Evidence", body, "For each jump, every candidate cause, best first: the evidence "
                   "from the run that supports it, what would refute it, and the probe that settles it.")


def _card(g: list[Spike], k: int) -> str:
    s0 = g[0]
    moves = "".join(f"<li>{esc(s.metric)} {esc(s.direction)} {esc(fmt(s.before))} → {esc(fmt(s.after))} "
                    f"<span class=\"muted\">({esc(s.shape)}, {s.significance:.1f}× noise)</span></li>" for s in g)
    causes = "".join(_cause(c, rank) for rank, c in enumerate(s0.causes))
    top = s0.causes[0].id if s0.causes else "unknown"
    return (f'<article class="card" id="jump-{k}"><h3>{esc(unit(s0.axis))} {esc(fmt(s0.at))} '
            f'<span class="cause-id">{esc(top)}</span></h3><ul class="moves">{moves}</ul>'
            f'{causes or "<p class=muted>No candidate cause.</p>"}</article>')


def _cause(c, rank: int) -> str:
    pct = max(0.0, min(1.0, float(c.confidence)))
    ev = "".join(f"<li>{esc(e)}</li>" for e in c.evidence) or "<li class=\"muted\">no evidence sentence</li>"
    cls = "cause top" if rank == 0 else "cause"
    return (f'<div class="{cls}"><h4><span class="cause-id">{esc(c.id)}</span> {esc(cause_label(c.id))} '
            f'<span class="conf"><meter min="0" max="1" value="{pct:.2f}"></meter> {pct:.0%}</span></h4>'
            f'<p class="label">Evidence for</p><ul class="evidence">{ev}</ul>'
            f'<p><span class="label">Refuted if</span> {esc(c.refuted_if)}</p>'
            f'<p><span class="label">Probe</span> <code>{esc(c.probe)}</code></p></div>')


# ------------------------------------------------------------------------------------------------------ probes


def probes(p: dict | None, has_chart: bool, notes: list[str]) -> str:
    if p is None:
        return ""
    rows = []
    for k, iv in enumerate(p.get("interventions") if isinstance(p.get("interventions"), list) else []):
        if not isinstance(iv, dict):
            continue
        v = inp.text(iv.get("verdict"), "—")
        rows.append(f'<tr><td>{esc(inp.text(iv.get("name"), f"intervention {k + 1}"))}</td>'
                    f'<td>{esc(inp.text(iv.get("description")))}</td>'
                    f'<td><span class="badge {VERDICT_CLASS.get(v, "muted")}">{esc(v)}</span></td>'
                    f'<td class="n">{num(iv.get("shift"))}</td><td class="n">{num(iv.get("effect_size"))}</td>'
                    f'<td class="n">{pvalue(iv.get("p_value"))}</td><td>{esc(inp.text(iv.get("message")))}</td></tr>')
    if not rows and not has_chart:
        return ""
    spike = p.get("spike") if isinstance(p.get("spike"), dict) else {}
    at = inp.num(spike.get("at"))
    intro = (f"Counterfactual re-runs of {esc(inp.text(p.get('metric'), 'the metric'))}"
             + (f" around the jump at {esc(fmt(at))}" if at is not None else "")
             + ": the original configuration over several seeds (the band) and each intervention on top. An "
               "intervention that removes the jump confirms the cause it targets.")
    chart = ('<div class="ws-figure"><div class="ws-chart" data-chart="probe"></div></div>' if has_chart else "")
    table = ('<table class="probes"><thead><tr><th>intervention</th><th>what it changes</th><th>verdict</th>'
             '<th>shift</th><th>effect size</th><th>p-value</th><th>message</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>') if rows else ""
    return section("probes", "Probe results", chart + table + _notes(notes), intro)


# --------------------------------------------------------------------------------------------------- landscape


def landscape(ls: dict | None, charts: dict[str, Any], above: list[float], notes: list[str]) -> str:
    if ls is None:
        return ""
    parts = []
    interp = ls.get("interpolation") if isinstance(ls.get("interpolation"), dict) else {}
    if charts.get("interpolation"):
        barrier = inp.num(interp.get("barrier"))
        b = f" Barrier: <b>{esc(fmt(barrier))}</b>." if barrier is not None else ""
        ends = ""
        if inp.num(interp.get("from")) is not None and inp.num(interp.get("to")) is not None:
            ends = f" (epoch {esc(fmt(inp.num(interp['from'])))} → epoch {esc(fmt(inp.num(interp['to'])))})"
        parts.append(f'<h3>1-D interpolation</h3><p class="muted">Loss on the straight line from one checkpoint '
                     f'(alpha 0) to the next (alpha 1){ends}.{b}</p>'
                     '<div class="ws-figure"><div class="ws-chart" data-chart="interpolation"></div></div>')
    if charts.get("surface"):
        surf = ls.get("surface") if isinstance(ls.get("surface"), dict) else {}
        kind = {"pca": " spanned by the trajectory's two main directions (PCA)",
                "random": " along two random, filter-normalized directions",
                "checkpoints": " through three checkpoints"}.get(str(surf.get("kind")), " through the weights")
        ev = surf.get("explained_variance")
        if isinstance(ev, list) and len(ev) >= 2 and all(inp.num(v) is not None for v in ev[:2]):
            kind += f" (explaining {inp.num(ev[0]):.0%} and {inp.num(ev[1]):.0%} of its variance)"
        parts.append(f'<h3>2-D loss surface</h3><p class="muted">Loss on a plane{esc(kind)}, with the '
                     'training trajectory projected on it (hover for values).</p>'
                     '<div class="ws-figure"><div class="ws-heatmap" data-heatmap="surface"></div></div>')
    if charts.get("curvature"):
        which = "the preconditioned λ_max" if "preconditioned" in str(charts.get("curvature_compared", "")) \
            else "λ_max"
        where = (f" Here {which} reached the threshold at epoch {', '.join(esc(fmt(e)) for e in above[:8])}: the step "
                 "is too large for the curvature there (edge of stability)." if above else
                 f" Here {which} stays below the threshold throughout.")
        parts.append(f'<h3>Curvature vs 2/η</h3><p class="muted">Gradient descent is stable while the sharpness '
                     'λ_max stays below 2/η (with Adam: the preconditioned λ_max below its own threshold).'
                     f'{where}</p>'
                     '<div class="ws-figure"><div class="ws-chart" data-chart="curvature"></div></div>')
    ns = ls.get("noise_scale")
    if isinstance(ns, dict) and ns:
        parts.append(f'<h3>Gradient noise scale</h3>{_kv_table(ns)}')
    found = [e for e in ls.get("evidence", []) if isinstance(e, dict)] if isinstance(ls.get("evidence"), list) else []
    if found and parts:
        items = []
        for e in found:
            delta = inp.num(e.get("confidence_delta"))
            sign = f" ({delta:+.2f} confidence)" if delta is not None else ""
            said = e.get("evidence") if isinstance(e.get("evidence"), list) else []
            items.append(f'<li><span class="cause-id">{esc(inp.text(e.get("cause"), "?"))}</span>{esc(sign)}: '
                         f'{esc("; ".join(map(str, said)))}</li>')
        parts.append(f'<h3>What the landscape says about the causes</h3><ul>{"".join(items)}</ul>')
    if not parts:
        return ""
    for w in ls.get("warnings", []) if isinstance(ls.get("warnings"), list) else []:
        notes.append(str(w))
    for e in ls.get("errors", []) if isinstance(ls.get("errors"), list) else []:
        if isinstance(e, dict):
            done = f" ({e['finished']} finished)" if e.get("finished") else ""
            notes.append(f"{inp.text(e.get('part'), 'landscape')} failed: {inp.text(e.get('message'))}{done}")
    return section("landscape", "Loss landscape", "".join(parts) + _notes(notes))


def _kv_table(d: dict) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            cell = num(v)
        elif isinstance(v, (dict, list)):
            cell = f"<code>{esc(json.dumps(v, default=str)[:400])}</code>"
        else:
            cell = esc(v)
        rows.append(f"<tr><th>{esc(k)}</th><td>{cell}</td></tr>")
    return f'<table class="kv">{"".join(rows)}</table>'


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in notes[:20]) + "</ul>"


# ---------------------------------------------------------------------------------------------------- findings


def findings(d: Diagnosis) -> str:
    parts = []
    if d.findings:
        items = "".join(
            f'<li id="finding-{k}" class="finding {esc(f.severity)}"><span class="cause-id">{esc(f.id)}</span> '
            f'{esc(f.message)}</li>' for k, f in enumerate(d.findings))
        parts.append(f'<ul class="findings">{items}</ul>')
    if d.missing:
        items = "".join(f"<li><b>{esc(m.signal)}</b> — {esc(m.why)}; {esc(m.how)}</li>" for m in d.missing)
        parts.append(f'<h3>Signals the log lacks</h3><ul class="missing">{items}</ul>')
    if d.run.warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in d.run.warnings[:30])
        more = f"<li>… {len(d.run.warnings) - 30} more</li>" if len(d.run.warnings) > 30 else ""
        parts.append(f'<h3>Read warnings</h3><ul class="warnings">{items}{more}</ul>')
    if not parts:
        return ""
    return section("findings", "Run-level findings", "".join(parts))


# --------------------------------------------------------------------------------------------------- reproduce


def reproduce(d: Diagnosis, report_name: str, generated: str) -> str:
    run = d.run
    cfg = run.setup.config or {}
    rows = [("source", f"<code>{esc(run.source.path)}</code> ({esc(run.source.format)})"),
            ("whyspike", esc(__version__)), ("report written", esc(generated)),
            ("python (report)", esc(sys.version.split()[0]))]
    versions = cfg.get("framework_versions")
    if isinstance(versions, dict):
        rows.append(("versions (training)", esc(", ".join(f"{k} {v}" for k, v in versions.items()))))
    seeds = cfg.get("seeds")
    if isinstance(seeds, dict) and seeds:
        rows.append(("seeds", esc(", ".join(f"{k}={v}" for k, v in seeds.items()))))
    elif cfg.get("seed") is not None:
        rows.append(("seed", esc(cfg["seed"])))
    for key in ("command", "argv", "script"):
        if cfg.get(key):
            v = cfg[key]
            rows.append((key, f"<code>{esc(' '.join(map(str, v)) if isinstance(v, list) else v)}</code>"))
    setup = {k: v for k, v in vars(run.setup).items() if k not in ("config", "eval_size_inferred") and v is not None}
    if "eval_size" in setup and run.setup.eval_size_inferred:
        setup["eval_size"] = f"{setup['eval_size']} (inferred)"
    for k, v in setup.items():
        rows.append((k.replace("_", " "), esc(json.dumps(v, default=str) if isinstance(v, (dict, list)) else v)))
    table = '<table class="kv">' + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    path = shlex.quote(run.source.path)
    metric = f" --metric {shlex.quote(d.metrics[0])}" if len(d.metrics) == 1 and len(run.metric_series) > 1 else ""
    cmds = [f"whyspike diagnose {path}{metric}", f"whyspike report {path}{metric} -o {shlex.quote(report_name)}"]
    seen = set()
    for s in d.spikes:
        for c in s.causes[:1]:
            if c.probe and c.probe not in seen:
                seen.add(c.probe)
                cmds.append(c.probe)
    cmd_html = "".join(f"<li><code>{esc(c)}</code></li>" for c in cmds[:10])
    raw = {k: v for k, v in cfg.items() if k not in ("framework_versions", "seeds")}
    facts = (f'<details><summary>everything the log recorded about the setup</summary><pre>'
             f'{esc(json.dumps(raw, indent=2, default=str, sort_keys=True)[:20000])}</pre></details>') if raw else ""
    return section("reproduce", "How to reproduce", f'{table}<h3>Commands</h3><ul class="commands">{cmd_html}</ul>'
                   f"{facts}")


__all__ = ["esc", "evidence", "findings", "landscape", "probes", "reproduce", "verdict", "verdict_sentence"]

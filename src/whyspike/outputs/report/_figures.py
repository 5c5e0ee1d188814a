"""The report's charts as plain data: one spec per chart, drawn by ``assets/report.js`` (uPlot) and by ``_png``.

A chart spec is a dict: ``x`` (one shared x array), ``series`` (each a ``y`` aligned to ``x``, ``None`` where the
series has no value there), ``marks`` (the spikes: a vertical line at ``at`` and a shaded span ``from``..``at``),
``bands`` (a filled range between two series), ``log`` (log-scaled y) and ``group`` (charts of one group share
their x range: zooming one zooms all). Series are decimated per pixel bucket (``_decimate``) before they are put
here, so a 100 000-step run fits in a few hundred kilobytes and every spike's extreme is still drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...detect import Spike
from ...diagnosis import Diagnosis
from ...explain.cause import fmt
from ...run import Run, Series
from . import _inputs as inp
from ._decimate import BUCKETS, decimate

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]
# panels in the order they are stacked: the curves first, then the series that explain them
PANELS = [("accuracy", "accuracy", 220), ("loss", "loss", 220), ("metric", "other metrics", 200),
          ("lr", "learning rate", 170), ("momentum", "momentum", 150), ("weight_decay", "weight decay", 150),
          ("grad_norm", "gradient norm", 170), ("weight_norm", "weight norm", 170)]
FOLDABLE = {"momentum", "weight_decay"}  # a panel of these that never change becomes one line of text
MAX_SERIES = 8  # per panel; the rest is named in the panel's note
MAX_MARKS = 30  # spikes marked per axis (the most significant)
MAX_WINDOWS = 10  # spikes per axis whose surroundings are kept at full resolution
CAUSE_LABELS = {
    "lr_schedule": "a learning-rate schedule change",
    "lr_warmup": "the end of the learning-rate warmup",
    "batchnorm_statistics": "BatchNorm statistics",
    "stochastic": "noise (seed, data order)",
    "grokking": "grokking (delayed generalization)",
    "optimization_instability": "an optimization instability (step too large for the curvature)",
    "plateau_escape": "an escape from a plateau",
    "running_average": "the epoch-averaged training metric (an artifact)",
    "eval_noise": "the evaluation set's sampling noise (not a real change)",
    "resume": "a checkpoint resume that lost state",
    "data_pipeline": "a data-pipeline change",
    "unknown": "an unknown cause",
}


def unit(axis: str) -> str:
    return "epoch" if axis == "epoch" else "step"


def values(y: np.ndarray, digits: int = 6) -> list:
    """JSON-ready numbers: ``digits`` significant digits, None for NaN/inf (a gap in the line)."""
    out: list = []
    for v in np.asarray(y, dtype=np.float64).tolist():
        out.append(float(f"{v:.{digits}g}") if v == v and v not in (float("inf"), float("-inf")) else None)
    return out


def xs(x: np.ndarray) -> list:
    x = np.asarray(x, dtype=np.float64)
    if len(x) and np.all(x == np.round(x)) and np.abs(x).max() < 2**53:
        return [int(v) for v in x]
    return values(x, 9)


def align(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One shared x (the union) and each y on it, NaN where that series has no point."""
    if not parts:
        return np.zeros(0), []
    x = np.unique(np.concatenate([p[0] for p in parts])) if len(parts) > 1 else np.asarray(parts[0][0], float)
    ys = []
    for px, py in parts:
        y = np.full(len(x), np.nan)
        y[np.searchsorted(x, px)] = py
        ys.append(y)
    return x, ys


def _log_scale(ys: list[np.ndarray], ratio: float) -> bool:
    """Log y when every finite value is positive and they span more than ``ratio``."""
    v = np.concatenate([y[np.isfinite(y)] for y in ys]) if ys else np.zeros(0)
    return bool(len(v) and v.min() > 0 and v.max() / v.min() > ratio)


def spike_start(run: Run, s: Spike) -> float:
    """Where the shading of a spike begins: its first point, or the point before a step."""
    start = s.start if s.start is not None else s.at
    if start < s.at:
        return float(start)
    series = run.series.get(s.metric)
    if series is not None and len(series):
        i = int(np.searchsorted(series.x, s.at))
        if i > 0:
            return float(series.x[i - 1])
    return float(s.at)


def cause_label(cause_id: str) -> str:
    return CAUSE_LABELS.get(cause_id, cause_id)


def mark(run: Run, s: Spike, k: int) -> dict:
    top = s.causes[0] if s.causes else None
    why = f" — {top.id} {top.confidence:.0%}" if top else ""
    return {"id": f"spike-{k}", "at": float(s.at), "from": spike_start(run, s), "metric": s.metric,
            "direction": s.direction, "cause": top.id if top else "unknown",
            "label": f"{s.metric} {s.direction} at {unit(s.axis)} {fmt(s.at)}{why}"}


def _windows(run: Run, spikes: list[Spike]) -> list[tuple[float, float]]:
    out = []
    for s in spikes[:MAX_WINDOWS]:
        series = run.series.get(s.metric)
        spacing = float(np.median(np.diff(series.x))) if series is not None and len(series) > 1 else 1.0
        lo = spike_start(run, s)
        r = max(40 * spacing, 2 * (float(s.at) - lo))
        out.append((lo - r, float(s.at) + r))
    return out


def _priority(s: Series, spiked: set[str], focus: str | None) -> tuple:
    return (s.name != focus, s.name not in spiked, {"val": 0, "train": 1}.get(s.role.split or "", 2), s.name)


def _constant(s: Series) -> float | None:
    y = s.y[np.isfinite(s.y)]
    return float(y[0]) if len(y) and len(y) == len(s.y) and np.all(y == y[0]) else None


def constants(run: Run, axis: str) -> list[str]:
    """'name = value' for the foldable series of ``axis`` that never change (drawn as text, not as a flat line)."""
    out = []
    for s in run.series.values():
        if s.axis == axis and s.role.kind in FOLDABLE and len(s) and _constant(s) is not None:
            out.append(f"{s.name} = {fmt(_constant(s))}")
    return out


def axis_charts(run: Run, d: Diagnosis, axis: str, group: str, colors: dict[str, str]) -> list[dict]:
    """The stacked, x-synced panels of one axis: metrics first, then LR and the other event series."""
    spikes = [s for s in d.spikes if s.axis == axis]
    spiked = {s.metric for s in spikes}
    focus = d.metrics[0] if len(d.metrics) == 1 else None
    windows = _windows(run, spikes)
    marks = [mark(run, s, k) for k, s in enumerate(d.spikes) if s.axis == axis][:MAX_MARKS]
    charts = []
    for kind, title, height in PANELS:
        members = [s for s in run.series.values() if s.axis == axis and s.role.kind == kind and len(s)]
        if kind in FOLDABLE:
            members = [s for s in members if _constant(s) is None]
        if not members:
            continue
        members.sort(key=lambda s: _priority(s, spiked, focus))
        shown, hidden = members[:MAX_SERIES], members[MAX_SERIES:]
        parts = []
        for s in shown:
            keep = decimate(s.x, s.y, BUCKETS, windows)
            parts.append((np.asarray(s.x, float)[keep], s.y[keep]))
        x, ys = align(parts)
        # a decayed LR reads best in decades; a loss only when it spans orders of magnitude
        log = _log_scale(ys, {"lr": 3.0, "grad_norm": 10.0, "weight_norm": 10.0}.get(kind, 50.0))
        for s in shown:
            colors.setdefault(s.name, PALETTE[len(colors) % len(PALETTE)])
        charts.append({
            "id": f"{group}-{kind}", "kind": kind, "title": title, "height": height, "log": log,
            "xlabel": unit(axis), "group": group, "x": xs(x), "marks": marks,
            "series": [{"label": s.name, "y": values(y), "color": colors[s.name],
                        "width": 2.0 if s.name in spiked else 1.25} for s, y in zip(shown, ys)],
            "note": (f"{len(hidden)} more series not drawn: {', '.join(h.name for h in hidden[:6])}"
                     f"{' …' if len(hidden) > 6 else ''}") if hidden else "",
        })
    return charts


def axes_in_order(run: Run, d: Diagnosis) -> list[str]:
    """The axes to draw, the main one first: the axis of the most significant jump, else the epoch axis."""
    present = [a for a in ("epoch", "step") if any(s.axis == a and len(s) for s in run.series.values())]
    if d.spikes and d.spikes[0].axis in present:
        present.remove(d.spikes[0].axis)
        present.insert(0, d.spikes[0].axis)
    return present


# ------------------------------------------------------------------------------------------------------ probes


def probe_chart(p: dict, notes: list[str]) -> dict | None:
    """The original curve's seed band (lo..hi, median) with the baseline runs and each intervention's runs."""
    base = p.get("baseline") if isinstance(p.get("baseline"), dict) else {}
    parts, series, bands = [], [], []
    band = base.get("band") if isinstance(base.get("band"), dict) else None
    if band is not None:
        for key, label, color, dash in (("hi", "seed band", "#9ecae1", None),
                                        ("lo", "seed band (low end)", "#9ecae1", None),
                                        ("median", "seed median", "#222222", [6, 4])):
            got = inp.xy(band, notes, f"baseline band {key}", "x", key)
            if got is not None:
                parts.append(got)
                series.append({"label": label, "color": color, "width": 1.0 if key != "median" else 1.5,
                               "dash": dash, "legend": key != "lo", "role": key})
    for k, (name, x, y) in enumerate(inp.runs(base.get("runs"), notes, "baseline")):
        parts.append(_thin(x, y, p))
        series.append({"label": f"baseline: {name}", "color": "#555555", "width": 1.0, "legend": k == 0,
                       "legend_label": "original config (each seed)"})
    interventions = p.get("interventions") if isinstance(p.get("interventions"), list) else []
    for k, iv in enumerate(interventions):
        if not isinstance(iv, dict):
            continue
        name = inp.text(iv.get("name"), f"intervention {k + 1}")
        color = PALETTE[(k + 1) % len(PALETTE)]
        for j, (run_name, x, y) in enumerate(inp.runs(iv.get("runs"), notes, name)):
            parts.append(_thin(x, y, p))
            series.append({"label": f"{name}: {run_name}", "color": color, "width": 1.5, "legend": j == 0,
                           "legend_label": name})
    if not parts:
        return None
    x, ys = align(parts)
    for s, y in zip(series, ys):
        s["y"] = values(y)
    roles = [s.get("role") for s in series]
    if "hi" in roles and "lo" in roles:
        bands.append([roles.index("hi"), roles.index("lo"), "rgba(158,202,225,0.45)"])
    at = inp.num((p.get("spike") or {}).get("at")) if isinstance(p.get("spike"), dict) else None
    metric = inp.text(p.get("metric"), "metric")
    marks = [] if at is None else [{"id": "probe-spike", "at": at, "from": at, "metric": metric, "direction": "",
                                    "cause": "", "label": f"the jump at {fmt(at)}"}]
    return {"id": "probe", "kind": "probe", "title": metric, "height": 300, "log": False, "xlabel": "x",
            "group": "probe", "x": xs(x), "series": series, "bands": bands, "marks": marks, "note": ""}


def _thin(x: np.ndarray, y: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray]:
    at = inp.num((p.get("spike") or {}).get("at")) if isinstance(p.get("spike"), dict) else None
    span = (x[-1] - x[0]) if len(x) > 1 else 0.0
    keep = decimate(x, y, 800, [] if at is None else [(at - 0.02 * span, at + 0.02 * span)])
    return x[keep], y[keep]


# --------------------------------------------------------------------------------------------------- landscape


def interpolation_chart(interp: Any, notes: list[str]) -> dict | None:
    if not isinstance(interp, dict):
        return None
    parts, series = [], []
    akey = "alpha" if "alpha" in interp else "alphas"  # the brief's name, and the one `whyspike landscape` writes
    for key, label, color in (("train_loss", "train loss", PALETTE[0]), ("val_loss", "validation loss", PALETTE[1])):
        got = inp.xy(interp, notes, f"interpolation {key}", akey, key)
        if got is not None:
            parts.append(got)
            series.append({"label": label, "color": color, "width": 2.0})
    if not parts:
        return None
    x, ys = align(parts)
    for s, y in zip(series, ys):
        s["y"] = values(y)
    return {"id": "interpolation", "kind": "interpolation", "title": "loss along the straight line between the "
            "checkpoints", "height": 240, "log": False, "xlabel": "alpha", "group": None, "x": xs(x),
            "series": series, "marks": [], "note": ""}


def curvature_chart(curv: Any, notes: list[str]) -> tuple[dict | None, list[float]]:
    """lambda_max per checkpoint against the stability threshold 2/lr; also the epochs where it is above."""
    rows = [r for r in curv if isinstance(r, dict)] if isinstance(curv, list) else []
    pts = []
    for r in rows:
        e, lam = inp.num(r.get("epoch")), inp.num(r.get("lambda_max"))
        pre = inp.num(r.get("preconditioned_lambda_max"))  # Adam: the preconditioned sharpness is what is compared
        thr = inp.num(r.get("threshold"))
        lr = inp.num(r.get("lr"))
        if thr is None and lr:
            thr = 2.0 / lr
        if e is not None and (lam is not None or pre is not None):
            pts.append((e, *(np.nan if v is None else v for v in (lam, pre, thr))))
    if len(rows) > len(pts):
        notes.append(f"curvature: {len(rows) - len(pts)} of {len(rows)} rows without epoch and lambda_max skipped")
    if not pts:
        return None, []
    pts.sort()
    e = np.array([p[0] for p in pts])
    lam, pre, thr = (np.array([p[k] for p in pts]) for k in (1, 2, 3))
    compared = np.where(np.isfinite(pre), pre, lam)
    above = [float(a) for a, lv, tv in zip(e, compared, thr) if np.isfinite(lv) and np.isfinite(tv) and lv >= tv]
    series = [{"label": "λ_max", "y": values(lam), "color": PALETTE[3], "width": 2.0, "points": True}]
    if np.isfinite(pre).any():
        series.append({"label": "preconditioned λ_max", "y": values(pre), "color": PALETTE[4], "width": 2.0,
                       "points": True})
    threshold_label = "threshold (2/η)" if not any(isinstance(r.get("threshold_rule"), str) for r in rows) else \
        f"threshold ({next(r['threshold_rule'] for r in rows if isinstance(r.get('threshold_rule'), str))})"
    series.append({"label": threshold_label, "y": values(thr), "color": "#444444", "width": 1.5, "dash": [6, 4]})
    chart = {"id": "curvature", "kind": "curvature", "title": "sharpness (largest Hessian eigenvalue) vs 2/η",
             "height": 240, "log": _log_scale([lam, pre, thr], 10.0), "xlabel": "epoch", "group": None, "x": xs(e),
             "series": series, "marks": [], "note": ""}
    return chart, above


MAX_GRID = 201


def surface_spec(surf: Any, notes: list[str]) -> dict | None:
    """The 2-D loss surface as a grid ``z[iy][ix]`` (rows along y), with the trajectory projected on it."""
    if not isinstance(surf, dict):
        return None
    x, y = inp.nums(surf.get("x")), inp.nums(surf.get("y"))
    raw = surf.get("loss", surf.get("train_loss"))  # the brief's name, and the one `whyspike landscape` writes
    if not isinstance(raw, list) or not raw or not len(x) or not len(y):
        return None
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        notes.append("surface: the grid coordinates x / y are not all numbers; the surface is not drawn")
        return None
    z = np.array([inp.nums(r) if isinstance(r, list) else np.full(0, np.nan) for r in raw], dtype=object)
    widths = {len(r) for r in z}
    if len(widths) != 1:
        notes.append("surface: the rows of loss differ in length; the surface is not drawn")
        return None
    z = np.vstack(list(z)).astype(np.float64)
    if z.shape == (len(x), len(y)) and z.shape != (len(y), len(x)):
        z = z.T  # written as loss[ix][iy]
    if z.shape != (len(y), len(x)):
        notes.append(f"surface: loss is {z.shape[0]}x{z.shape[1]} but x has {len(x)} and y {len(y)} values; "
                     "the surface is not drawn")
        return None
    sy, sx = max(1, -(-len(y) // MAX_GRID)), max(1, -(-len(x) // MAX_GRID))
    x, y, z = x[::sx], y[::sy], z[::sy, ::sx]
    spec = {"x": values(x), "y": values(y), "z": [values(r, 5) for r in z],
            "log": _log_scale([z.ravel()], 10.0)}
    traj = surf.get("trajectory")
    if isinstance(traj, list):  # [{"label", "x", "y"}, ...] as `whyspike landscape` writes it
        points = [t for t in traj if isinstance(t, dict)]
        traj = {"x": [t.get("x") for t in points], "y": [t.get("y") for t in points],
                "labels": [t.get("label", "") for t in points]}
    if isinstance(traj, dict):
        tx, ty = inp.nums(traj.get("x")), inp.nums(traj.get("y"))
        n = min(len(tx), len(ty))
        labels = traj.get("labels") if isinstance(traj.get("labels"), list) else []
        if n:
            spec["trajectory"] = {"x": values(tx[:n]), "y": values(ty[:n]),
                                  "labels": [inp.text(v) for v in labels[:n]] + [""] * max(0, n - len(labels))}
    return spec


__all__ = ["CAUSE_LABELS", "axes_in_order", "axis_charts", "cause_label", "curvature_chart", "interpolation_chart",
           "probe_chart", "surface_spec", "unit"]

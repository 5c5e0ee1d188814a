"""The HTML report as assembled text: sections present or left out, escaping, decimation, size, CLI.

What the page does in a browser is tested in test_report_chromium.py.
"""

from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest

import whyspike
from whyspike.cli import main
from whyspike.diagnosis import diagnose
from whyspike.errors import InputError
from whyspike.outputs.report import render_report, write_report
from whyspike.outputs.report._decimate import decimate
from whyspike.record.store import RunWriter

SEED_CSV = Path(__file__).resolve().parents[1] / "data" / "seed" / "ex1_lr_decay.csv"
HOSTILE = "val_acc</script><script>window.__pwned=1</script>&\"'<b>"


def page_data(page: str) -> dict:
    m = re.search(r'<script id="ws-data" type="application/json">(.*?)</script>', page, re.S)
    assert m, "the chart data block is missing"
    return json.loads(m.group(1))


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', page)


# --------------------------------------------------------------------------------------------------- sections


def test_every_section_is_there_when_every_input_is(make_run, make_probes, make_landscape, tmp_path):
    run = make_run(tmp_path / "run")
    d = diagnose(run)
    page = render_report(run, d, probes=make_probes(), landscape=make_landscape())
    assert section_ids(page) == ["verdict", "curves", "evidence", "probes", "landscape", "findings", "reproduce"]
    # the table of contents lists exactly the sections present
    assert re.findall(r'<nav>(.*?)</nav>', page)[0].count("<a ") == 7
    spike = next(s for s in d.spikes if s.metric == "val_accuracy")
    assert spike.at == 20 and spike.causes[0].id == "lr_schedule"
    # verdict: one sentence per jump, naming the metric, the move, the epoch and the cause
    verdicts = re.findall(r'<li class="ws-verdict"[^>]*>(.*?)<button', page)
    assert len(verdicts) == len(d.spikes)
    assert any(v.startswith("val_accuracy jumped up from 0.6") and "at epoch 20" in v
               and "most likely a learning-rate schedule change (" in v for v in verdicts)
    # evidence: each candidate cause with its evidence, what refutes it, the probe
    for c in spike.causes:
        assert f'<span class="cause-id">{c.id}</span>' in page
        assert c.refuted_if.replace("'", "&#x27;").replace('"', "&quot;") in page
    # probes: a table row per intervention with its verdict, readable numbers
    rows = re.findall(r"<tr><td>(.*?)</td>.*?<span class=\"badge (\w+)\">(\w+)</span></td>"
                      r"<td class=\"n\">(.*?)</td><td class=\"n\">(.*?)</td><td class=\"n\">(.*?)</td>", page)
    assert rows == [("lr.shift=+5", "info", "moved", "5", "12.5", "0.0004"),
                    ("lr.hold", "ok", "removed", "—", "14.1", "1.2e-05"),
                    ("bn.precise", "bad", "error", "—", "—", "—")]
    assert "&lt;recomputed BN stats&gt;" in page
    # landscape: curvature reached 2/lr only at epoch 15 (lambda 20 = 2/0.1)
    assert "Here λ_max reached the threshold at epoch 15:" in page
    assert "Barrier: <b>0.3</b>" in page and "<th>b_simple</th><td>812.5</td>" in page
    data = page_data(page)
    assert {"probe", "interpolation", "curvature"} <= set(data["charts"]) and "surface" in data["heatmaps"]
    # reproduce: versions, seeds and commands from meta.json
    assert "torch 2.13.0" in page and "torch_initial_seed=1234" in page
    assert f"whyspike diagnose {run.source.path}" in page and "lr.shift" in page


def test_sections_without_input_are_left_out(tmp_path):
    run = whyspike.load_run(SEED_CSV)
    d = diagnose(run)
    assert not d.spikes and {f.id for f in d.findings} >= {"lr_vanished", "schedule_units"}
    page = render_report(run, d)
    assert section_ids(page) == ["verdict", "curves", "findings", "reproduce"]
    assert 'id="probes"' not in page and 'id="landscape"' not in page and 'id="evidence"' not in page
    assert '<p class="ws-verdict none">No significant jump in accuracy, loss.</p>' in page
    assert '<a href="#finding-0">lr_vanished</a>' in page
    # the curves are drawn even without a jump: accuracy, loss and the LR (log scale: it falls to 1e-31)
    charts = page_data(page)["charts"]
    assert [c["kind"] for c in charts.values()] == ["accuracy", "loss", "lr"]
    assert charts["g-epoch-lr"]["log"] is True and all(not c["marks"] for c in charts.values())


def test_an_empty_landscape_document_adds_no_section(make_run, tmp_path):
    run = make_run(tmp_path / "run")
    page = render_report(run, diagnose(run), landscape={"schema": "whyspike/landscape-v1"},
                         probes={"schema": "whyspike/probe-v1", "interventions": []})
    assert "probes" not in section_ids(page) and "landscape" not in section_ids(page)


# --------------------------------------------------------------------------------------------------- escaping


def test_names_with_markup_are_escaped_everywhere(make_run, make_probes, tmp_path):
    run = make_run(tmp_path / "run", metric=HOSTILE)
    d = diagnose(run)
    assert any(s.metric == HOSTILE for s in d.spikes)
    page = render_report(run, d, probes=make_probes(HOSTILE))
    assert HOSTILE not in page and "<script>window.__pwned" not in page and "'<b>" not in page
    escaped = "val_acc&lt;/script&gt;&lt;script&gt;window.__pwned=1&lt;/script&gt;&amp;&quot;&#x27;&lt;b&gt;"
    assert f'data-metric="{escaped}"' in page  # an attribute
    assert f"<li class=\"ws-verdict\" data-metric=\"{escaped}\"" in page
    assert re.search(rf'<li class="ws-verdict"[^>]*>{re.escape(escaped)} jumped up', page)
    # the chart data survives the escaping of the JSON block exactly
    data = page_data(page)
    labels = [s["label"] for c in data["charts"].values() for s in c["series"]]
    assert HOSTILE in labels
    assert data["charts"]["probe"]["title"] == HOSTILE
    # the script block holds no sequence that could end it or open a comment
    block = page.split('<script id="ws-data" type="application/json">')[1].split("</script>")[0]
    assert "<" not in block and ">" not in block


def test_the_page_loads_nothing_from_the_network(make_run, tmp_path):
    run = make_run(tmp_path / "run")
    page = render_report(run, diagnose(run))
    assert "Content-Security-Policy" in page and "connect-src 'none'" in page and "default-src 'none'" in page
    for pattern in (r"<link\b", r"<script[^>]+src=", r"<img[^>]+src=\"http", r"@import", r"url\(\s*['\"]?http",
                    r"<iframe", r"fetch\(", r"XMLHttpRequest"):
        assert not re.search(pattern, page), pattern


# ------------------------------------------------------------------------------------------------- decimation


def test_decimation_keeps_every_bucket_min_and_max():
    rng = np.random.default_rng(1)
    n, buckets = 50_000, 300
    x = np.cumsum(rng.integers(1, 4, n)).astype(float)
    y = rng.standard_normal(n)
    y[31_337] = 40.0
    y[7] = np.nan
    keep = set(decimate(x, y, buckets).tolist())
    assert len(keep) <= 2 * buckets + 3
    assert {31_337, 7, 0, n - 1} <= keep
    # ground truth, bucket by bucket with a plain loop: its lowest and highest value are kept
    edges = x[0] + (x[-1] - x[0]) * np.arange(buckets + 1) / buckets
    for b in range(buckets):
        inside = [i for i in range(n) if edges[b] <= x[i] < edges[b + 1] or (b == buckets - 1 and x[i] == x[-1])] \
            if b % 37 == 0 else None  # a sample of buckets: the loop is slow
        if inside:
            finite = [i for i in inside if np.isfinite(y[i])]
            assert max(y[i] for i in finite) in {y[i] for i in keep if i in inside}
            assert min(y[i] for i in finite) in {y[i] for i in keep if i in inside}


def test_decimation_keeps_raw_points_around_a_jump_and_short_series_whole():
    x = np.arange(10_000.0)
    y = np.sin(x / 50)
    keep = decimate(x, y, 200, windows=[(4_900, 5_100)])
    assert set(range(4_900, 5_101)) <= set(keep.tolist())
    assert len(keep) <= 400 + 201 + 2
    assert len(decimate(x[:300], y[:300], 200)) == 300


def test_a_100k_step_run_fits_in_2_mb_and_keeps_its_spike(tmp_path):
    rng = np.random.default_rng(0)
    n, spike = 100_000, 54_321
    step = np.arange(n)
    loss = 2.0 * np.exp(-step / 30_000) + 0.05 * rng.standard_normal(n)
    loss[spike] = 9.75
    lr = 0.1 * 0.5 ** (step // 25_000)
    acc = np.ma.masked_array(np.clip(0.3 + 0.6 * (1 - np.exp(-step / 20_000)) + 0.02 * rng.standard_normal(n), 0, 1),
                             mask=step % 8 != 0)
    w = RunWriter(tmp_path / "run", flush_seconds=1e9, flush_rows=10**6)
    w.write_meta(optimizer="SGD", momentum=0.9, steps_per_epoch=1000)
    w.steps({"step": step, "epoch": step // 1000, "loss": loss, "lr": lr, "momentum": np.full(n, 0.9),
             "grad_norm": np.abs(1 + 0.3 * rng.standard_normal(n)), "accuracy": acc})
    for e in range(100):
        w.epoch(e, val_accuracy=0.3 + 0.6 * (1 - np.exp(-e / 20)) + 0.003 * rng.standard_normal(),
                val_loss=2.0 * np.exp(-e / 30) + 0.01 * rng.standard_normal(), lr=0.1 * 0.5 ** (e // 25))
    w.close()
    run = whyspike.load_run(tmp_path / "run")
    d = diagnose(run)
    assert any(s.metric == "step/loss" and s.at == spike for s in d.spikes)
    t0 = time.perf_counter()
    path = write_report(tmp_path / "report.html", run, d)
    took = time.perf_counter() - t0
    size = path.stat().st_size
    print(f"100k-step report: {size / 1e6:.2f} MB written in {took:.2f} s")
    assert size <= 2_000_000
    assert took < 10
    chart = page_data(path.read_text())["charts"]["g-step-loss"]
    y = dict(zip(chart["x"], next(s["y"] for s in chart["series"] if s["label"] == "step/loss")))
    assert y[spike] == 9.75  # the one-step spike is drawn, at its step, at full height
    assert len(chart["x"]) < 10_000  # decimated, not the 100k points


# ------------------------------------------------------------------------------------------- tolerant inputs


def test_malformed_but_recognisable_documents_render_what_they_can(make_run, tmp_path):
    run = make_run(tmp_path / "run")
    probes = {"schema": "whyspike/probe-v1", "metric": "val_accuracy", "spike": {"at": "twenty"},
              "baseline": {"runs": [{"name": "s0", "x": [0, 1, 2], "y": [0.5, 0.6]}, {"x": "nope"}]},
              "interventions": [{"name": "lr.hold", "verdict": "removed", "p_value": "n/a", "runs": None}, 7]}
    landscape = {"schema": "whyspike/landscape-v1",
                 "surface": {"x": [0, 1, 2], "y": [0, 1], "loss": [[1, 2], [3, 4], [5, 6]]},
                 "curvature": [{"epoch": 1, "lambda_max": 3.0, "lr": 0.5}, {"lambda_max": 2}],
                 "interpolation": "not a dict"}
    page = render_report(run, diagnose(run), probes=probes, landscape=landscape)
    assert "baseline run 1: x has 3 values and y 2; the first 2 are drawn" in page
    assert "curvature: 1 of 2 rows without epoch and lambda_max skipped" in page
    data = page_data(page)
    # loss written as loss[ix][iy] (3 x 2 for 3 x-values and 2 y-values) is turned to rows along y
    assert data["heatmaps"]["surface"]["z"] == [[1, 3, 5], [2, 4, 6]]
    # threshold from the LR when it is not given: 2 / 0.5
    assert data["charts"]["curvature"]["series"][1]["y"] == [4.0]
    assert "interpolation" not in data["charts"]


@pytest.mark.parametrize("doc, problem", [
    ({"schema": "whyspike/diagnosis-v1"}, "has schema 'whyspike/diagnosis-v1', not whyspike/probe-v1"),
    ({"hello": 1}, "has neither a schema nor any of the keys interventions, baseline"),
    ([1, 2], "the probe results document is a list, not a JSON object"),
])
def test_documents_of_another_kind_are_refused(make_run, tmp_path, doc, problem):
    run = make_run(tmp_path / "run")
    with pytest.raises(InputError, match=re.escape(problem)):
        render_report(run, diagnose(run), probes=doc)


# ---------------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_the_report_and_the_png(make_run, make_probes, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    make_run(tmp_path / "run")
    (tmp_path / "probes.json").write_text(json.dumps(make_probes()))
    rc = main(["report", str(tmp_path / "run"), "-o", str(tmp_path / "out" / "r.html"), "--probes",
               str(tmp_path / "probes.json"), "--png", str(tmp_path / "fig.png")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"wrote {tmp_path / 'out' / 'r.html'}" in out and "jump(s)" in out
    page = (tmp_path / "out" / "r.html").read_text()
    assert "probes" in section_ids(page) and "whyspike report" in page and " -o r.html" in page
    png = (tmp_path / "fig.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", png[16:24])
    assert w == 1200 and h > 600  # 10 in x 120 dpi; three stacked panels


def test_cli_bad_inputs_end_in_one_line(make_run, tmp_path, capsys):
    make_run(tmp_path / "run")
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["report", str(tmp_path / "run"), "-o", str(tmp_path / "r.html"), "--landscape",
                 str(tmp_path / "bad.json")]) == 1
    err = capsys.readouterr().err
    assert "bad.json: is not valid JSON" in err and "Traceback" not in err
    assert main(["report", str(tmp_path / "run"), "--metric", "nope", "-o", str(tmp_path / "r.html")]) == 2
    assert not (tmp_path / "r.html").exists()


def test_the_document_whyspike_landscape_writes_renders(make_run, tmp_path):
    """`whyspike landscape --format json` names some keys differently from the brief (alphas, train_loss, a list of
    trajectory points) and adds the preconditioned sharpness, evidence and errors: all are drawn or listed."""
    run = make_run(tmp_path / "run")
    doc = {
        "schema": "whyspike/landscape-v1", "run": str(tmp_path / "run"), "spike": None,
        "curvature": [{"epoch": 10, "lambda_max": 3.0, "preconditioned_lambda_max": 30.0, "lr": 0.1, "threshold": 20.0,
                       "threshold_rule": "38/lr (Adam)", "compared": "preconditioned_lambda_max"},
                      {"epoch": 11, "lambda_max": 2.0, "preconditioned_lambda_max": 10.0, "lr": 0.1, "threshold": 20.0,
                       "threshold_rule": "38/lr (Adam)", "compared": "preconditioned_lambda_max"}],
        "interpolation": {"alphas": [-0.5, 0, 0.5, 1, 1.5], "train_loss": [1.2, 1.0, 1.4, 0.8, 1.1], "val_loss": None,
                          "barrier": 0.5, "from": 10, "to": 11},
        "surface": {"kind": "pca", "x": [0, 1, 2], "y": [0, 1], "train_loss": [[1, 2, 3], [4, None, 6]],
                    "trajectory": [{"label": "epoch 8", "x": 0.1, "y": 0.2}, {"label": "epoch 9", "x": 1.5, "y": 0.9}],
                    "explained_variance": [0.93, 0.05]},
        "noise_scale": None,
        "evidence": [{"cause": "optimization_instability", "confidence_delta": 0.45,
                      "evidence": ["preconditioned lambda_max 30 at epoch 10 was above 38/lr = 20"]}],
        "warnings": ["BatchNorm in train mode"], "errors": [{"part": "gns", "message": "out of memory"}],
    }
    page = render_report(run, diagnose(run), landscape=doc)
    data = page_data(page)
    assert data["charts"]["interpolation"]["x"] == [-0.5, 0, 0.5, 1, 1.5]
    assert [s["label"] for s in data["charts"]["interpolation"]["series"]] == ["train loss"]
    assert data["heatmaps"]["surface"]["z"] == [[1, 2, 3], [4, None, 6]]
    assert data["heatmaps"]["surface"]["trajectory"] == {"x": [0.1, 1.5], "y": [0.2, 0.9],
                                                         "labels": ["epoch 8", "epoch 9"]}
    labels = [s["label"] for s in data["charts"]["curvature"]["series"]]
    assert labels == ["λ_max", "preconditioned λ_max", "threshold (38/lr (Adam))"]
    # the compared quantity is the preconditioned one: above the threshold at epoch 10 only
    assert "Here the preconditioned λ_max reached the threshold at epoch 10:" in page
    assert "(epoch 10 → epoch 11)" in page and "explaining 93% and 5% of its variance" in page
    assert "optimization_instability</span> (+0.45 confidence)" in page
    assert "gns failed: out of memory" in page and "BatchNorm in train mode" in page


def test_png_without_matplotlib_says_how_to_install_it(make_run, tmp_path, capsys, monkeypatch):
    import sys

    make_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["report", str(tmp_path / "run"), "-o", str(tmp_path / "r.html"), "--png",
                 str(tmp_path / "f.png")]) == 1
    assert "pip install 'whyspike[report]'" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "f.png").exists()

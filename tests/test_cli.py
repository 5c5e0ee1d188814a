"""The command line as a user meets it: exit codes, one-line errors, JSON on stdout and nothing else."""

import json
import os
import subprocess
import sys

import pytest

from whyspike.cli import main

KERAS_HEADER = "epoch,accuracy,loss,val_accuracy,val_loss\n"


def _keras_csv(tmp_path, rows, name="log.csv", header=KERAS_HEADER):
    p = tmp_path / name
    p.write_text(header + "".join(rows))
    return p


def _jump_rows(n=60, at=30):
    rows = []
    for e in range(n):
        acc = 0.6 + 0.001 * e + (0.2 if e >= at else 0) + 0.004 * ((e * 7919) % 5 - 2)
        rows.append(f"{e},{acc + 0.02:.4f},{1.5 - acc:.4f},{acc:.4f},{1.6 - acc:.4f}\n")
    return rows


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and "whyspike, version" in out
    code, out, _ = _run(["--help"], capsys)
    assert code == 0 and "diagnose" in out
    code, out, _ = _run(["diagnose", "--help"], capsys)
    assert code == 0 and "--fail-on-spike" in out


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "whyspike", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "whyspike" in r.stdout


def test_json_output_is_exactly_the_contract_on_stdout(tmp_path, capsys):
    p = _keras_csv(tmp_path, _jump_rows())
    code, out, _ = _run(["diagnose", str(p), "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)  # nothing but the document on stdout
    assert doc["schema"] == "whyspike/diagnosis-v1"
    assert doc["source"] == {"path": str(p), "format": "keras-csv"}
    spike = next(s for s in doc["spikes"] if s["metric"] == "val_accuracy")
    assert spike["at"] == 30 and spike["direction"] == "up" and spike["shape"] == "step"
    for key in ("size", "noise", "significance", "causes"):
        assert key in spike
    assert abs(spike["significance"] - spike["size"] / spike["noise"]) < 0.05
    c = spike["causes"][0]
    assert set(c) >= {"id", "confidence", "evidence", "refuted_if", "probe"}


def test_text_verdict_and_fail_on_spike(tmp_path, capsys):
    p = _keras_csv(tmp_path, _jump_rows())
    code, out, _ = _run(["diagnose", str(p)], capsys)
    assert code == 0 and "epoch 30" in out
    code, _, _ = _run(["diagnose", str(p), "--fail-on-spike"], capsys)
    assert code == 3
    flat = _keras_csv(tmp_path, [f"{e},0.5,1.0,0.5,1.0\n" for e in range(40)], name="flat.csv")
    code, _, _ = _run(["diagnose", str(flat), "--fail-on-spike"], capsys)
    assert code == 0


def test_metric_option_restricts_and_unknown_metric_is_usage_error(tmp_path, capsys):
    p = _keras_csv(tmp_path, _jump_rows())
    code, out, _ = _run(["diagnose", str(p), "--metric", "val_loss", "--format", "json"], capsys)
    assert code == 0 and {s["metric"] for s in json.loads(out)["spikes"]} == {"val_loss"}
    code, _, err = _run(["diagnose", str(p), "--metric", "nope"], capsys)
    assert code == 2 and "nope" in err and "val_loss" in err


def _one_line_error(code, err, path_part, expected_code=1):
    assert code == expected_code, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert path_part in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "name,content,fragment",
    [
        ("empty.csv", b"", "empty"),
        ("header.csv", KERAS_HEADER.encode(), "no numeric series"),
        ("garbage.bin", bytes(range(256)) * 64, "--input-format"),
        ("notes.txt", b"just some words\nno numbers at all\n", "--input-format"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, capsys, name, content, fragment):
    p = tmp_path / name
    p.write_bytes(content)
    code, _, err = _run(["diagnose", str(p)], capsys)
    line = _one_line_error(code, err, name)
    assert fragment in line


def test_missing_path_directory_without_logs_and_unknown_input_format(tmp_path, capsys):
    code, _, err = _run(["diagnose", str(tmp_path / "nothere.csv")], capsys)
    _one_line_error(code, err, "nothere.csv")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_dir" / "README").write_text("hello")
    code, _, err = _run(["diagnose", str(tmp_path / "empty_dir")], capsys)
    _one_line_error(code, err, "empty_dir")
    p = _keras_csv(tmp_path, _jump_rows())
    code, _, err = _run(["diagnose", str(p), "--input-format", "nope"], capsys)
    assert code == 2 and "nope" in err


def test_non_numeric_cells_and_nan_values_warn_but_diagnose(tmp_path, capsys):
    rows = _jump_rows()
    rows[5] = "5,oops,1.0,0.6,1.0\n"
    rows[40] = "40,0.8,nan,0.8,inf\n"
    p = _keras_csv(tmp_path, rows)
    code, out, _ = _run(["diagnose", str(p), "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert any("accuracy" in w for w in doc["warnings"])
    assert any(f["id"] == "nan_or_inf" and f["at"] == 40 for f in doc["findings"])
    assert any(s["metric"] == "val_accuracy" and s["at"] == 30 for s in doc["spikes"])


def test_duplicated_and_unsorted_steps(tmp_path, capsys):
    rows = _jump_rows()
    rows = rows[:20] + rows[15:]  # a resume that re-logged epochs 15-19
    p = _keras_csv(tmp_path, rows)
    code, out, _ = _run(["diagnose", str(p), "--format", "json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert any(f["id"] == "resume_detected" for f in doc["findings"])


def test_huge_sparse_file_is_rejected_without_reading_it(tmp_path, capsys):
    p = tmp_path / "huge.log"
    with open(p, "wb") as fh:
        fh.truncate(2 * 1024**3)  # 2 GiB of zeros, sparse on disk
    code, _, err = _run(["diagnose", str(p)], capsys)
    _one_line_error(code, err, "huge.log")


def test_real_log_text_output_names_the_cause(real_logs, capsys):
    path = real_logs / "wide-residual-networks" / "wide-resnet_1121914561.log.txt"
    code, out, _ = _run(["diagnose", str(path)], capsys)
    assert code == 0 and "lr_schedule" in out and "epoch 60" in out


@pytest.mark.skipif(os.name != "posix", reason="uses a POSIX pipe")
def test_cli_subprocess_error_has_no_traceback(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    r = subprocess.run([sys.executable, "-m", "whyspike", "diagnose", str(p)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stdout == ""

"""`whyspike demo` through the CLI entry point: the list, one scenario end to end, the seed article's tour, errors."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from whyspike import scenarios
from whyspike.cli import main
from whyspike.cli import demo as demo_module

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_KERAS = HAS_TORCH and importlib.util.find_spec("keras") is not None


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps at the terminal width


def test_list_names_every_scenario_with_its_ground_truth(capsys):
    assert main(["demo", "--list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for sc in scenarios.REGISTRY.values():
        row = next(line for line in lines if line.split()[:1] == [sc.name])
        assert row.split()[1] == sc.truth
    assert max(len(line) for line in lines) <= 80  # readable in 80 columns (pytest's captured console is 80 wide)


@pytest.mark.skipif(not HAS_TORCH, reason="torch is needed")
def test_one_scenario_end_to_end_records_diagnoses_and_checks(tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(demo_module, "HOOKS", [lambda sc, run_dir, d, console: seen.append((sc.name, run_dir))])
    out_dir = tmp_path / "demo"
    assert main(["demo", "deep-linear-plateau", "--size", "ci", "--out", str(out_dir)]) == 0
    text = flat(capsys.readouterr().out)
    run_dir = out_dir / "deep-linear-plateau"
    assert json.loads((run_dir / "meta.json").read_text())["schema"].startswith("whyspike/run")
    assert "plateau_escape" in text and "ground truth: plateau_escape (cause) whyspike agrees" in text
    assert re.search(r"step/loss down 1\d(\.\d+)? -> \d(\.\d+)? at step 1\d\d", text)  # the first escape
    assert "settled by: seeds, init.scale=3" in text
    assert f"run directory: {run_dir}" in text
    assert seen == [("deep-linear-plateau", run_dir)]  # the place probes and the report plug in
    # run again: the earlier recording is replaced, not appended to (steps would repeat)
    assert main(["demo", "deep-linear-plateau", "--size", "ci", "--out", str(out_dir)]) == 0
    import pyarrow.parquet as pq

    steps = pq.read_table(run_dir / "steps").column("step").to_pylist()
    assert len(steps) == len(set(steps)) == scenarios.get("deep-linear-plateau").config("ci").steps


@pytest.mark.skipif(not HAS_KERAS, reason="keras and torch are needed")
def test_the_seed_tour_says_what_the_article_predicted_what_happened_and_why(tmp_path, capsys):
    assert main(["demo", "--size", "ci", "--out", str(tmp_path)]) == 0
    text = flat(capsys.readouterr().out)
    for title, *_ in demo_module.SEED_TOUR:
        assert title in text
    assert text.count("The article predicted:") == 3 and text.count("What happened:") == 3
    # Example 1: the per-step decay, the vanished LR, nothing at 10/20, the fix — with numbers from the run
    assert "The LR halves 3.2 times per epoch, not once every 10 epochs" in text and "0.00125 at the end of epoch 0" in text
    assert re.search(r"accuracy (\d\.\d+) -> \1 at epoch 10", text)
    assert "decay_steps = 10 x 32 = 320" in text
    assert "As its author intended (decay_steps=320): With decay_steps=320 the LR halves from epoch 10" \
        in text
    assert text.count("the article's prediction does not hold for its own code") >= 2
    for name in ("seed-ex1", "seed-ex1-intended", "seed-ex2", "seed-ex3"):
        assert (tmp_path / name / "meta.json").exists()
    assert (tmp_path / "seed-ex1" / "ex1_lr_decay.py").exists()  # what ran, beside what it recorded


def test_unknown_scenario_and_contradictory_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["demo", "no-such-thing", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no scenario named 'no-such-thing'" in err and "whyspike demo --list" in err
    assert main(["demo", "grokking", "--list"]) == 2
    assert "either NAME or --list" in capsys.readouterr().err


def test_an_out_dir_holding_something_else_is_never_deleted(tmp_path, capsys):
    precious = tmp_path / "deep-linear-plateau"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    assert main(["demo", "deep-linear-plateau", "--size", "ci", "--out", str(tmp_path)]) == 2
    assert "is not a whyspike run directory" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "do not delete"

"""Hugging Face ``Trainer`` state: ``trainer_state.json`` in every ``checkpoint-N`` directory.

``log_history`` interleaves training rows (``loss``, ``learning_rate``, ``grad_norm``) and evaluation rows
(``eval_loss``, ``eval_accuracy``, ...), each with the optimizer ``step`` and a fractional ``epoch``. Everything goes
on the step axis, numbered by ``step``; ``epoch`` becomes a series too, and the closing summary row
(``train_runtime``, ``train_loss`` averaged over the run) goes to ``Setup.config["summary"]``.

    >>> run = load_run("out/checkpoint-1500")               # doctest: +SKIP
    >>> run.setup.steps_per_epoch                            # doctest: +SKIP
    500.0
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError
from ..run import Run, Source
from ._hparams import fill_setup
from ._registry import Importer, Probe, register
from ._tabular import add_table_series, epoch_boundaries, flatten, read_json, steps_per_epoch, table_from_records

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WHAT = "a Hugging Face trainer_state.json (a JSON object with a 'log_history' list)"


def sniff(p: Probe) -> float:
    if p.is_dir:
        if "trainer_state.json" in p.entries:
            return 0.95
        return 0.6 if any(_CHECKPOINT.match(e) for e in p.entries) else 0.0
    t = p.text.lstrip("\ufeff").lstrip()
    if not t.startswith("{"):
        return 0.0
    if '"log_history"' in t:
        return 0.95
    return 0.5 if p.name == "trainer_state.json" else 0.0


def _resolve(path: Path) -> Path:
    if not path.is_dir():
        return path
    if (path / "trainer_state.json").is_file():
        return path / "trainer_state.json"
    ckpts = [(int(m.group(1)), d) for d in path.iterdir()
             if (m := _CHECKPOINT.match(d.name)) and (d / "trainer_state.json").is_file()]
    if ckpts:
        return max(ckpts)[1] / "trainer_state.json"  # the latest checkpoint's history holds all earlier ones
    raise InputError(path, "holds no trainer_state.json (nor checkpoint-N/trainer_state.json)",
                     "point at a Trainer output or checkpoint directory, or at its trainer_state.json")


def load(path: Path) -> Run:
    state_path = _resolve(path)
    state = read_json(state_path, _WHAT)
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise InputError(state_path, f"is JSON but not {_WHAT}",
                         "point at the trainer_state.json the Trainer saves in each checkpoint-N directory")
    run = Run(Source(str(state_path), "hf-trainer-state"))
    records = []
    summary: dict = {}
    for i, row in enumerate(state["log_history"]):
        if not isinstance(row, dict):
            continue
        if "train_runtime" in row or "total_flos" in row:
            summary.update(row)  # one row of averages over the whole run, not a point on a curve
            continue
        records.append((f"log_history[{i}]", flatten(row)))
    table, _ = table_from_records(records, run.warnings)
    step = table.find(("step",))
    if step is not None:
        add_table_series(run, table, mode="step", step_col=step)
    config = {k: v for k, v in state.items() if k != "log_history"}
    if summary:
        config["summary"] = summary
    run.setup.config = config
    bs = state.get("train_batch_size")
    if isinstance(bs, int) and not isinstance(bs, bool) and bs > 0:
        run.setup.batch_size = bs
    epochs = state.get("num_train_epochs")
    if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) and float(epochs).is_integer() and epochs > 0:
        run.setup.epochs = int(epochs)
    if isinstance(state.get("trial_params"), dict):
        fill_setup(run.setup, state["trial_params"])  # a hyper-parameter search records the values it tried
    if step is not None and "epoch" in table.columns:
        s, e = table.columns[step], table.columns["epoch"]
        both = s.mask() & e.mask()
        run.setup.steps_per_epoch = steps_per_epoch(s.values[both], e.values[both])
        run.events.extend(epoch_boundaries(s.values[both], e.values[both], "epoch"))
    return run


register(Importer("hf-trainer-state", "Hugging Face Trainer trainer_state.json (file or checkpoint directory)",
                  sniff, load))

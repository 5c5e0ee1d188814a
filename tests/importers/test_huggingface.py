"""Hugging Face trainer_state.json, written as TrainerState.save_to_json writes it (indent=2, sorted keys)."""

import json

import pytest

from whyspike.errors import CorruptLogError, EmptyLogError, InputError, UnknownFormatError
from whyspike.importers import load_run

STEPS_PER_EPOCH = 125  # 8000 examples / batch 64


def trainer_state(epochs=3, logging_steps=25, **extra):
    log = []
    max_steps = epochs * STEPS_PER_EPOCH
    for step in range(logging_steps, max_steps + 1, logging_steps):
        lr = 5e-5 * min(1.0, step / 100) * (1 - step / max_steps)  # warmup then linear decay
        log.append({"epoch": round(step / STEPS_PER_EPOCH, 2), "grad_norm": 1.0 + step / 1000,
                    "learning_rate": lr, "loss": 2.0 - step / max_steps, "step": step})
        if step % STEPS_PER_EPOCH == 0:
            log.append({"epoch": step / STEPS_PER_EPOCH, "eval_accuracy": 0.5 + 0.1 * step / STEPS_PER_EPOCH,
                        "eval_loss": 1.2 - 0.2 * step / STEPS_PER_EPOCH, "eval_runtime": 3.1,
                        "eval_samples_per_second": 645.2, "eval_steps_per_second": 10.1, "step": step})
    log.append({"epoch": float(epochs), "step": max_steps, "total_flos": 1.2e15, "train_loss": 1.5,
                "train_runtime": 812.4, "train_samples_per_second": 29.5, "train_steps_per_second": 0.46})
    state = {"best_metric": None, "best_model_checkpoint": None, "epoch": float(epochs), "eval_steps": 500,
             "global_step": max_steps, "is_hyper_param_search": False, "is_local_process_zero": True,
             "is_world_process_zero": True, "log_history": log, "logging_steps": logging_steps,
             "max_steps": max_steps, "num_input_tokens_seen": 0, "num_train_epochs": epochs, "save_steps": 500,
             "stateful_callbacks": {"TrainerControl": {"args": {"should_save": True}, "attributes": {}}},
             "total_flos": 1.2e15, "train_batch_size": 64, "trial_name": None, "trial_params": None}
    state.update(extra)
    return state


def write_state(path, state):
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def test_trainer_state_file(tmp_path):
    p = tmp_path / "trainer_state.json"
    write_state(p, trainer_state())
    run = load_run(p)
    assert run.source.format == "hf-trainer-state"
    loss, acc, lr = run.series["loss"], run.series["eval_accuracy"], run.series["learning_rate"]
    assert loss.axis == acc.axis == lr.axis == "step"
    assert list(loss.x[:3]) == [25, 50, 75] and len(loss) == 15
    assert list(acc.x) == [125, 250, 375] and acc.value_at(250) == pytest.approx(0.7)
    assert acc.role.split == "val" and run.series["eval_loss"].role.kind == "loss"
    assert lr.value_at(100) == pytest.approx(5e-5 * (1 - 100 / 375))
    assert run.series["grad_norm"].role.kind == "grad_norm"
    assert "train_loss" not in run.series and run.setup.config["summary"]["train_runtime"] == 812.4
    assert run.series["epoch"].value_at(250) == 2.0
    assert run.warnings == []  # epoch repeated on the train and eval rows of one step is not a conflict


def test_setup_from_state(tmp_path):
    p = tmp_path / "trainer_state.json"
    write_state(p, trainer_state(trial_params={"learning_rate": 3e-5, "weight_decay": 0.01}))
    s = load_run(p).setup
    assert s.batch_size == 64 and s.epochs == 3
    assert s.steps_per_epoch == pytest.approx(STEPS_PER_EPOCH)
    assert s.config["max_steps"] == 375 and s.config["logging_steps"] == 25
    assert s.learning_rate == 3e-5 and s.weight_decay == 0.01


def test_checkpoint_and_output_directories(tmp_path):
    out = tmp_path / "out"
    for step, epochs in ((125, 1), (250, 2)):
        d = out / f"checkpoint-{step}"
        d.mkdir(parents=True)
        write_state(d / "trainer_state.json", trainer_state(epochs=epochs))
    run = load_run(out / "checkpoint-125")
    assert run.source.format == "hf-trainer-state" and run.series["loss"].x[-1] == 125
    run = load_run(out)  # the latest checkpoint holds the whole history so far
    assert run.source.path.endswith("checkpoint-250/trainer_state.json") and run.series["loss"].x[-1] == 250
    with pytest.raises(InputError, match="no trainer_state.json"):
        load_run(tmp_path, format="hf-trainer-state")


def test_not_a_trainer_state(tmp_path):
    p = tmp_path / "trainer_state.json"
    p.write_text(json.dumps({"global_step": 3}))
    with pytest.raises(InputError, match="not a Hugging Face trainer_state.json"):
        load_run(p)
    q = tmp_path / "history.json"
    q.write_text(json.dumps({"loss": [1.0, 0.5]}))
    with pytest.raises(InputError, match="not a Hugging Face trainer_state.json"):
        load_run(q, format="hf-trainer-state")
    r = tmp_path / "x.json"
    r.write_text('{"log_history": [{"loss": 1.0, "step": 1}')
    with pytest.raises(CorruptLogError):
        load_run(r)


def test_empty_log_history(tmp_path):
    p = tmp_path / "trainer_state.json"
    write_state(p, trainer_state() | {"log_history": []})
    with pytest.raises(EmptyLogError):
        load_run(p)


def test_unknown_json_object_is_not_sniffed(tmp_path):
    p = tmp_path / "state.json"
    p.write_text(json.dumps({"best_metric": None, "global_step": 10}, indent=2))
    with pytest.raises(UnknownFormatError):
        load_run(p)

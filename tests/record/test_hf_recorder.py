"""The Hugging Face Trainer callback on real tiny trainings (no downloads: models built from code or a config)."""

from __future__ import annotations

import io
import json
import math
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it
nn = torch.nn
F = torch.nn.functional

import whyspike  # noqa: E402
from whyspike.diagnosis import diagnose  # noqa: E402
from whyspike.record.huggingface import WhyspikeTrainerCallback  # noqa: E402


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():  # the frameworks' own deprecation chatter
        warnings.simplefilter("ignore")
        yield


class Classifier(nn.Module):
    """A plain module the Trainer accepts: returns {"loss", "logits"}; keeps each training loss by its own hand."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        self.losses = []

    def forward(self, x=None, labels=None):
        logits = self.net(x)
        loss = F.cross_entropy(logits, labels)
        if self.training:
            self.losses.append(loss.item())
        return {"loss": loss, "logits": logits}


class Rows(torch.utils.data.Dataset):
    def __init__(self, n, seed, key="x"):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(6, 3, generator=torch.Generator().manual_seed(99))
        self.x = torch.randn(n, 6, generator=g)
        self.y = (self.x @ w).argmax(1)
        self.key = key

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {self.key: self.x[i], "labels": self.y[i]}


class HandCheck(transformers.TrainerCallback):
    """Independent witnesses: the scheduler's get_last_lr() before each step, and the gradient norm from
    per-parameter post-accumulate hooks (so before the Trainer clips)."""

    def __init__(self, model):
        self.lrs, self.norms, self._sq = [], [], {}
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(self._grad)

    def _grad(self, p):
        self._sq[id(p)] = float(p.grad.norm()) ** 2

    def on_step_begin(self, args, state, control, lr_scheduler=None, **kw):
        self.lrs.append(lr_scheduler.get_last_lr()[0])

    def on_pre_optimizer_step(self, args, state, control, **kw):
        self.norms.append(math.sqrt(sum(self._sq.values())))
        self._sq = {}


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=3, learning_rate=0.05,
                warmup_steps=4, lr_scheduler_type="linear", max_grad_norm=0.1, logging_steps=1, report_to=[],
                use_cpu=True, disable_tqdm=True, seed=7, weight_decay=0.01, save_strategy="no", eval_strategy="epoch")
    base.update(kw)
    return transformers.TrainingArguments(**base)


def test_trainer_records_applied_lr_preclip_norm_and_true_loss(tmp_path):
    model = Classifier()
    hand = HandCheck(model)
    out = io.StringIO()
    run_dir = tmp_path / "run"
    trainer = transformers.Trainer(model=model, args=args(tmp_path, save_strategy="epoch"),
                                   train_dataset=Rows(64, 0), eval_dataset=Rows(40, 1),
                                   callbacks=[hand, WhyspikeTrainerCallback(run_dir, out=out)])
    trainer.train()
    run = whyspike.load_run(run_dir)
    logged = [h for h in trainer.state.log_history if "loss" in h and "grad_norm" in h]

    steps = run.series["step/lr"].x
    assert steps.tolist() == list(range(24))
    linear = [0.05 * (s / 4 if s < 4 else max(0.0, (24 - s) / 20)) for s in steps]
    np.testing.assert_allclose(run.series["step/lr"].y, linear, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(run.series["step/lr"].y, hand.lrs, rtol=1e-12)
    np.testing.assert_allclose(run.series["step/lr"].y, [h["learning_rate"] for h in logged], rtol=1e-9)
    np.testing.assert_allclose(run.series["step/grad_norm"].y, hand.norms, rtol=1e-5)
    np.testing.assert_allclose(run.series["step/grad_norm"].y, [h["grad_norm"] for h in logged], rtol=1e-5)
    assert min(hand.norms) > 0.1  # max_grad_norm=0.1 clipped every step: the recorded norm is the one before
    np.testing.assert_allclose(run.series["step/loss"].y, model.losses, rtol=1e-6)
    np.testing.assert_allclose(run.series["step/loss"].y, [h["loss"] for h in logged], rtol=1e-4)
    np.testing.assert_allclose(run.series["step/beta2"].y, 0.999)

    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert run.series["eval_loss"].x.tolist() == [1, 2, 3]
    np.testing.assert_allclose(run.series["eval_loss"].y, [h["eval_loss"] for h in evals], rtol=1e-6)
    np.testing.assert_allclose(run.series["loss"].y, np.mean(np.reshape(model.losses, (3, 8)), axis=1), rtol=1e-6)

    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["recorder"] == "huggingface" and meta["optimizer"] == "AdamW"
    assert meta["batch_size"] == 8 and meta["learning_rate"] == 0.05 and meta["weight_decay"] == 0.01
    assert meta["lr_schedule"]["type"] == "linear" and meta["lr_schedule"]["warmup_steps"] == 4
    assert meta["max_steps"] == 24 and meta["epochs"] == 3 and meta["steps_per_epoch"] == 8
    assert meta["seeds"]["trainer_seed"] == 7 and meta["eval_size"] == 40 and meta["train_size"] == 64
    assert [os.path.basename(p) for p in meta["trainer_checkpoints"]] == ["checkpoint-8", "checkpoint-16",
                                                                          "checkpoint-24"]
    assert all(os.path.isdir(p) for p in meta["trainer_checkpoints"])
    assert f"run recorded in {run_dir}" in out.getvalue()
    d = diagnose(run)
    assert d.run.setup.batch_size == 8 and d.run.setup.steps_per_epoch == 8


def test_tiny_bert_with_accumulation_and_step_evaluation(tmp_path):
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.ids = torch.randint(1, 40, (n, 8), generator=g)
            self.labels = (self.ids[:, 0] > 20).long()

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.labels[i]}

    micro = []
    model.register_forward_hook(lambda m, a, out: micro.append(out.loss.item()) if m.training else None)
    run_dir = tmp_path / "run"
    trainer = transformers.Trainer(
        model=model,
        args=args(tmp_path, num_train_epochs=2, gradient_accumulation_steps=2, eval_strategy="steps", eval_steps=2,
                  warmup_steps=0, lr_scheduler_type="constant", learning_rate=1e-3, max_grad_norm=1.0),
        train_dataset=Tokens(32, 0), eval_dataset=Tokens(16, 1),
        callbacks=[WhyspikeTrainerCallback(run_dir, live=False)])
    trainer.train()
    run = whyspike.load_run(run_dir)
    logged = [h for h in trainer.state.log_history if "loss" in h and "grad_norm" in h]
    assert run.series["step/loss"].x.tolist() == list(range(4))
    # the mean of the two micro-batches' losses (the Trainer logs their sum for this head: see the module doc)
    np.testing.assert_allclose(run.series["step/loss"].y, np.mean(np.reshape(micro, (4, 2)), axis=1), rtol=1e-6)
    np.testing.assert_allclose(run.series["step/grad_norm"].y, [h["grad_norm"] for h in logged], rtol=1e-5)
    assert np.all((run.series["step/accuracy"].y >= 0) & (run.series["step/accuracy"].y <= 1))
    assert run.series["step/eval_loss"].x.tolist() == [2, 4]
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    np.testing.assert_allclose(run.series["step/eval_loss"].y, evals, rtol=1e-6)
    assert run.series["loss"].x.tolist() == [1, 2]  # epoch rows without per-epoch evaluation
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["batch_size"] == 16 and meta["steps_per_epoch"] == 2 and meta["model_class"] == \
        "BertForSequenceClassification"
    assert meta["has_dropout"] is True and meta["has_batchnorm"] is False


def test_causal_lm_micro_batch_losses_add_up_to_the_step_loss(tmp_path):
    config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
                                     eos_token_id=0, loss_type="ForCausalLM")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)

    class Text(torch.utils.data.Dataset):
        def __init__(self, n):
            self.ids = torch.randint(1, 40, (n, 10), generator=torch.Generator().manual_seed(0))

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.ids[i]}

    run_dir = tmp_path / "run"
    trainer = transformers.Trainer(
        model=model, args=args(tmp_path, num_train_epochs=1, gradient_accumulation_steps=2, eval_strategy="no",
                               per_device_train_batch_size=4, warmup_steps=0, learning_rate=1e-3),
        train_dataset=Text(32), callbacks=[WhyspikeTrainerCallback(run_dir, live=False)])
    trainer.train()
    run = whyspike.load_run(run_dir)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h and "grad_norm" in h]
    assert run.series["step/loss"].x.tolist() == list(range(4))
    # tokens of the whole step normalize each micro-batch's loss: the step loss is their sum, near ln(40) = 3.7 at
    # the start (their mean would be half of it)
    np.testing.assert_allclose(run.series["step/loss"].y, logged, rtol=1e-4)
    assert 0.75 * math.log(40) < run.series["step/loss"].y[0] < 1.25 * math.log(40)


def test_unwritable_run_dir_does_not_break_the_trainer(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    model = Classifier()
    trainer = transformers.Trainer(model=model, args=args(tmp_path, num_train_epochs=1), train_dataset=Rows(32, 0),
                                   eval_dataset=Rows(16, 1), callbacks=[WhyspikeTrainerCallback(blocker / "run")])
    trainer.train()
    assert trainer.state.global_step == 4
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("whyspike")]
    assert len(err) == 1 and "cannot write the run directory" in err[0]

"""Hugging Face ``Trainer`` callback: one line to record a ``trainer.train()`` into a whyspike run directory.

    from whyspike.record.huggingface import WhyspikeTrainerCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds, eval_dataset=val,
                      callbacks=[WhyspikeTrainerCallback()])       # records into <output_dir>/whyspike/<script>-<time>
    trainer.train()                                                # the diagnosis is printed at the end

Where each signal comes from:

- per step, from the torch optimizer inside the Trainer's (accelerate) wrapper, through its step hooks: the LR,
  momentum/betas and weight decay the step applies. The Trainer's scheduler sets them before the step, so ``lr`` is
  the value ``lr_scheduler.get_last_lr()`` gives in ``on_step_begin`` — the LR applied at that step, not the one
  logged after the scheduler moved on.
- the global gradient norm before clipping: the value ``clip_grad_norm_`` returns when the Trainer calls it (it
  does at every step, with ``max_grad_norm`` or with ``inf``), which is also the ``grad_norm`` the Trainer logs.
- the true per-step loss: the ``loss`` of the model's output (a forward hook in training mode). Under gradient
  accumulation the micro-batches of one optimizer step are averaged — except for language-model heads
  (``*ForCausalLM``, ``*LMHeadModel``, ``*ForMaskedLM``, ...), which divide by the Trainer's ``num_items_in_batch``
  (the token count of the whole step), so that their micro-batch losses are summed. (transformers 5.x also passes
  ``num_items_in_batch`` to heads that ignore it, e.g. sequence classification, then neither divides the loss by
  the accumulation count nor normalizes it: the loss it logs — and back-propagates — is then the *sum* over the
  micro-batches; the recorded loss stays the mean.) A model that returns no
  loss (a custom ``compute_loss``) falls back to the loss the Trainer logs in ``on_log`` (a mean over
  ``logging_steps``; meta.json says so). Sequence-classification logits (2-D) with integer labels also give the batch
  accuracy. Other numbers the Trainer logs go to the step axis under their own names.
- ``on_evaluate``: the eval metrics (``eval_loss``, ``eval_accuracy``, ...) on the epoch axis when evaluation runs
  per epoch (numbered as the Trainer numbers epochs: 1 after the first), on the step axis otherwise.
- meta from ``TrainingArguments`` and ``TrainerState``: batch size (per device × devices × accumulation), LR,
  warmup, scheduler type, max steps, epochs, weight decay, clipping, seed; the paths of the Trainer's own
  checkpoints (``on_save``) — the Trainer's saves are the checkpoints, this callback writes none.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO

from ..errors import require

_CLASS: list[type] = []
_SKIP_LOG = {"loss", "grad_norm", "learning_rate", "epoch", "total_flos", "step"}
_SKIP_EVAL = ("_runtime", "_samples_per_second", "_steps_per_second")
# heads whose loss (transformers.loss.loss_utils) is normalized by the Trainer's num_items_in_batch
_SUMMED_HEADS = ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration", "ForSemanticSegmentation")


def _strategy(value) -> str:
    return str(getattr(value, "value", value))


class _WhyspikeTrainerLogic:
    def __init__(self, run_dir=None, *, tier: str = "default", every: int = 1, flush_every: int | None = None,
                 live: bool = True, out: TextIO | None = None, **recorder_options: Any):
        from .torch import TIERS

        if tier not in TIERS:
            from ..errors import UsageError

            raise UsageError(f"WhyspikeTrainerCallback(tier={tier!r}): the tier must be one of {', '.join(TIERS)}")
        self.run_dir = run_dir
        self.tier, self.every, self.flush_every, self.live, self.out = tier, every, flush_every, live, out
        self.recorder_options = recorder_options
        self.recorder = None
        self._hook = None
        self._saw_loss = False
        self._pending_epoch: int | None = None
        self._per_epoch_eval = False
        self._checkpoints: list[str] = []

    # -- set-up
    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None,
                       train_dataloader=None, eval_dataloader=None, **kwargs):
        try:
            self._start(args, state, model, optimizer, lr_scheduler, train_dataloader)
        except Exception as exc:  # noqa: BLE001 - never break training
            print(f"whyspike: the Trainer recorder could not start ({type(exc).__name__}: {exc}); training "
                  "continues unrecorded", file=sys.stderr)
            self.recorder = None

    def _start(self, args, state, model, optimizer, lr_scheduler, train_dataloader) -> None:
        from .torch import Recorder, new_run_dir

        run_dir = self.run_dir if self.run_dir is not None else new_run_dir(Path(args.output_dir) / "whyspike", "huggingface")
        first_epoch = int(state.epoch or 0) + 1
        self.recorder = rec = Recorder(optimizer, model, run_dir, tier=self.tier, every=self.every,
                                       flush_every=self.flush_every, checkpoints=0, live=self.live,
                                       scheduler=lr_scheduler, hooks=optimizer is not None, out=self.out,
                                       first_epoch=first_epoch, framework="huggingface", **self.recorder_options)
        self._per_epoch_eval = _strategy(getattr(args, "eval_strategy", "no")) == "epoch"
        if model is not None:
            self._hook = model.register_forward_hook(self._on_forward, with_kwargs=True)
        rec.writer.write_meta(**self._facts(args, state, lr_scheduler, train_dataloader))

    def _facts(self, args, state, lr_scheduler, train_dataloader) -> dict:
        rec = self.recorder
        accumulate = int(args.gradient_accumulation_steps or 1)
        per_step = int(getattr(state, "train_batch_size", None) or args.per_device_train_batch_size)
        facts: dict[str, Any] = {
            "batch_size": per_step * accumulate * int(getattr(args, "world_size", 1) or 1),
            "learning_rate": args.learning_rate,
            "weight_decay": args.weight_decay,
            "seeds": {**rec.writer.meta.get("seeds", {}), "trainer_seed": args.seed},
            "gradient_accumulation_steps": accumulate,
            "max_grad_norm": args.max_grad_norm,
            "eval_strategy": _strategy(getattr(args, "eval_strategy", None)),
            "logging_steps": args.logging_steps,
        }
        max_steps = getattr(state, "max_steps", None) or None
        epochs = getattr(state, "num_train_epochs", None) or args.num_train_epochs
        if isinstance(epochs, (int, float)) and float(epochs).is_integer() and epochs > 0:
            facts["epochs"] = int(epochs)
        if max_steps:
            facts["max_steps"] = int(max_steps)
        if train_dataloader is not None:
            try:
                n = len(train_dataloader)
                facts["steps_per_epoch"] = max(n // accumulate + int(n % accumulate > 0), 1)
                facts["train_size"] = len(train_dataloader.dataset)
            except (TypeError, AttributeError):
                pass
        sched = dict(rec.writer.meta.get("lr_schedule") or {})
        sched["type"] = _strategy(args.lr_scheduler_type)
        if max_steps:
            try:
                sched["warmup_steps"] = int(args.get_warmup_steps(max_steps))
            except Exception:  # noqa: BLE001
                pass
        sched["max_steps"] = max_steps
        if getattr(args, "lr_scheduler_kwargs", None):
            from .torch import _json_safe

            sched["kwargs"] = _json_safe(dict(args.lr_scheduler_kwargs))
        facts["lr_schedule"] = sched
        try:
            import transformers

            facts["framework_versions"] = {**rec.writer.meta.get("framework_versions", {}),
                                           "transformers": transformers.__version__}
        except ImportError:
            pass
        return facts

    # -- per step
    def _on_forward(self, module, args, kwargs, output) -> None:
        rec = self.recorder
        if rec is None or not module.training:
            return
        try:
            import torch

            if not torch.is_grad_enabled():
                return
            loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
            if loss is None:
                return
            step = rec._n_updates
            if step % rec.every:
                return
            self._saw_loss = True
            logits = output.get("logits") if isinstance(output, dict) else getattr(output, "logits", None)
            labels = kwargs.get("labels")
            use = logits is not None and labels is not None and logits.dim() == 2
            # language-model heads divide the summed token loss by the Trainer's `num_items_in_batch`, the count
            # over all the micro-batches of the step: their micro-batch losses add up to the step's loss
            parts = kwargs.get("num_items_in_batch") is not None and type(module).__name__.endswith(_SUMMED_HEADS)
            rec._add(step, loss, logits if use else None, labels if use else None, {}, loss_parts=parts)
        except Exception as exc:  # noqa: BLE001
            rec._problem("the forward hook", exc)

    def on_log(self, args, state, control, logs=None, **kwargs):
        rec = self.recorder
        if rec is None or not logs:
            return
        try:
            step = max(state.global_step - 1, 0)  # logged after the step was taken
            values = {k: v for k, v in logs.items() if k not in _SKIP_LOG and not k.startswith(("eval_", "train_"))
                      and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if not self._saw_loss and isinstance(logs.get("loss"), (int, float)):
                values["loss"] = logs["loss"]
                if "loss_source" not in rec.writer.meta:
                    rec.writer.write_meta(loss_source=f"the Trainer's logged loss (mean over logging_steps="
                                                      f"{args.logging_steps})")
            if values:
                rec._add(step, values.pop("loss", None), None, None, values)
        except Exception as exc:  # noqa: BLE001
            rec._problem("on_log", exc)

    # -- per epoch / evaluation
    def on_epoch_begin(self, args, state, control, **kwargs):
        self._close_pending_epoch()

    def on_epoch_end(self, args, state, control, **kwargs):
        rec = self.recorder
        if rec is None:
            return
        epoch = int(round(state.epoch or 0))
        if self._per_epoch_eval:
            self._pending_epoch = epoch  # its evaluation comes right after this hook
        else:
            rec.epoch_end(epoch=epoch)

    def on_evaluate(self, args, state, control, metrics=None, eval_dataloader=None, **kwargs):
        rec = self.recorder
        if rec is None or not metrics:
            return
        try:
            values = {k: float(v) for k, v in metrics.items() if k != "epoch" and not k.endswith(_SKIP_EVAL)
                      and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if rec.writer.meta.get("eval_size") is None and eval_dataloader is not None:
                try:
                    rec.writer.write_meta(eval_size=len(eval_dataloader.dataset))
                except (TypeError, AttributeError):
                    pass
            if self._pending_epoch is not None:
                epoch, self._pending_epoch = self._pending_epoch, None
                rec.epoch_end(epoch=epoch, **values)
            else:
                rec.writer.step(state.global_step, epoch=state.epoch, **values)
        except Exception as exc:  # noqa: BLE001
            rec._problem("on_evaluate", exc)

    def _close_pending_epoch(self) -> None:
        if self.recorder is not None and self._pending_epoch is not None:
            epoch, self._pending_epoch = self._pending_epoch, None
            self.recorder.epoch_end(epoch=epoch)

    def on_save(self, args, state, control, **kwargs):
        rec = self.recorder
        if rec is None:
            return
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        self._checkpoints.append(path)
        rec.writer.write_meta(trainer_checkpoints=list(self._checkpoints))

    # -- the end
    def on_train_end(self, args, state, control, **kwargs):
        self._close_pending_epoch()
        rec, self.recorder = self.recorder, None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if rec is not None:
            rec.close(verdict=self.live)


def _build() -> type:
    if not _CLASS:
        transformers = require("transformers", "huggingface")
        _CLASS.append(type("WhyspikeTrainerCallback", (_WhyspikeTrainerLogic, transformers.TrainerCallback), {
            "__doc__": "Records a Hugging Face ``Trainer`` run into a whyspike run directory; see "
                       "whyspike.record.huggingface.",
            "__module__": __name__,
        }))
    return _CLASS[0]


def __getattr__(name: str):
    if name == "WhyspikeTrainerCallback":
        return _build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["WhyspikeTrainerCallback"]

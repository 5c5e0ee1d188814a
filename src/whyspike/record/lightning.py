"""PyTorch Lightning callback: one line to record a ``Trainer.fit`` into a whyspike run directory.

    from whyspike.record.lightning import WhyspikeLightningCallback

    trainer = L.Trainer(max_epochs=30, callbacks=[WhyspikeLightningCallback("runs/exp1")])
    trainer.fit(model, train_loader, val_loader)        # one line per new jump; the diagnosis at the end

(``WhyspikePytorchLightningCallback`` is the same for code that imports ``pytorch_lightning``.)

Where each signal comes from:

- ``on_before_optimizer_step``: the LR, momentum / betas and weight decay the coming step applies, and the global
  gradient norm. Lightning calls this hook after the closure (forward + backward; under AMP after the gradients were
  unscaled) and *before* it clips the gradients (``Precision._after_closure`` calls the hooks, then
  ``_clip_gradients``): the recorded ``grad_norm`` is the norm before clipping, also with ``gradient_clip_val``.
  The step number is ``trainer.global_step`` (optimizer steps taken).
- ``on_train_batch_end``: the true loss of the batch, ``outputs["loss"]``; Lightning hands it divided by
  ``accumulate_grad_batches`` under automatic optimization, which is undone here. Micro-batches accumulated into one
  optimizer step are averaged. If ``training_step`` returns ``logits``/``output`` and ``target``/``y`` in its
  dict, the batch accuracy is recorded too.
- ``on_validation_epoch_end`` / ``on_train_epoch_end``: ``trainer.callback_metrics`` at the epoch's end (skipping the
  ``*_step`` copies) become the epoch row, numbered by ``trainer.current_epoch`` (0-based, as Lightning's CSV logger
  numbers it); validation metrics only for epochs in which validation ran.
- meta: optimizer and scheduler (class, ``state_dict()`` scalars, ``interval``), steps per epoch, batch and dataset
  sizes, gradient clipping, precision, model facts, versions, seeds. Checkpoints of the LightningModule's and the
  optimizer's state at each epoch end (``load_checkpoint`` from :mod:`whyspike.record.torch` reads them back with
  ``weights_only=True``). The verdict is printed in ``on_fit_end``.

Costs are those of :class:`whyspike.record.torch.Recorder` (``tier="detailed"`` adds train-set evaluation in eval
mode, per-example validation correctness and PreciseBN validation using the trainer's own dataloaders).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TextIO

from ..errors import require

_CLASSES: dict[str, type] = {}


class _WhyspikeLightningLogic:
    """The callback's behaviour; mixed into the ``Callback`` class of whichever Lightning package is used."""

    def __init__(self, run_dir=None, *, tier: str = "default", every: int = 1, flush_every: int | None = None,
                 checkpoints: int = 3, live: bool = True, out: TextIO | None = None, **recorder_options: Any):
        super().__init__()
        from .torch import TIERS

        if tier not in TIERS:
            from ..errors import UsageError

            raise UsageError(f"WhyspikeLightningCallback(tier={tier!r}): the tier must be one of {', '.join(TIERS)}")
        self.run_dir = run_dir
        self.tier, self.every, self.flush_every = tier, every, flush_every
        self.checkpoints, self.live, self.out = checkpoints, live, out
        self.recorder_options = recorder_options
        self.recorder = None
        self._trainer = None
        self._gs_at_batch_start = 0
        self._val_metrics: dict[str, float] | None = None
        self._post_handles: list = []

    # -- set-up
    def on_train_start(self, trainer, pl_module) -> None:
        try:
            self._start(trainer, pl_module)
        except Exception as exc:  # noqa: BLE001 - never break training
            import sys

            print(f"whyspike: the Lightning recorder could not start ({type(exc).__name__}: {exc}); training "
                  "continues unrecorded", file=sys.stderr)
            self.recorder = None

    def _start(self, trainer, pl_module) -> None:
        from .torch import Recorder, new_run_dir

        self._trainer = trainer
        run_dir = self.run_dir if self.run_dir is not None else new_run_dir(Path(trainer.default_root_dir) / "whyspike", "lightning")
        opts = list(trainer.optimizers)
        configs = list(getattr(trainer, "lr_scheduler_configs", []) or [])
        scheduler = configs[0].scheduler if configs else None
        train_dl = trainer.train_dataloader
        self.recorder = Recorder(opts[0] if opts else None, pl_module, run_dir, tier=self.tier, every=self.every,
                                 flush_every=self.flush_every, checkpoints=self.checkpoints, live=self.live,
                                 scheduler=scheduler, hooks=False, out=self.out, first_epoch=trainer.current_epoch,
                                 framework="lightning", **self.recorder_options)
        rec = self.recorder
        facts = self._facts(trainer, configs, train_dl)
        rec.writer.write_meta(**facts)
        if rec.detailed and rec.optimizer is not None:
            self._post_handles.append(rec.optimizer.register_step_post_hook(self._post_step))

    def _facts(self, trainer, configs, train_dl) -> dict:
        facts: dict[str, Any] = {}
        try:
            import importlib.metadata as md

            versions = dict(self.recorder.writer.meta.get("framework_versions", {}))
            for pkg in ("lightning", "pytorch-lightning"):
                try:
                    versions[pkg] = md.version(pkg)
                except md.PackageNotFoundError:
                    pass
            facts["framework_versions"] = versions
        except Exception:  # noqa: BLE001
            pass
        if configs:
            sched = dict(self.recorder.writer.meta.get("lr_schedule") or {})
            sched["interval"] = getattr(configs[0], "interval", None)
            sched["frequency"] = getattr(configs[0], "frequency", None)
            facts["lr_schedule"] = sched
        accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        nb = trainer.num_training_batches
        if isinstance(nb, (int, float)) and nb != float("inf") and nb > 0:
            facts["steps_per_epoch"] = -(-int(nb) // accumulate)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            facts["epochs"] = trainer.max_epochs
        if train_dl is not None:
            bs = getattr(train_dl, "batch_size", None)
            if isinstance(bs, int):
                facts["batch_size"] = bs * accumulate
            try:
                facts["train_size"] = len(train_dl.dataset)
            except (AttributeError, TypeError):
                pass
        val = trainer.val_dataloaders
        val = val[0] if isinstance(val, (list, tuple)) and val else val
        if val is not None:
            try:
                facts["eval_size"] = len(val.dataset)
            except (AttributeError, TypeError):
                pass
        facts["accumulate_grad_batches"] = accumulate
        if trainer.gradient_clip_val:
            facts["grad_clip"] = {"value": trainer.gradient_clip_val,
                                  "algorithm": str(trainer.gradient_clip_algorithm or "norm")}
        facts["precision"] = str(getattr(trainer, "precision", None))
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is not None:
            facts["seeds"] = {**self.recorder.writer.meta.get("seeds", {}), "PL_GLOBAL_SEED": seed}
        return facts

    # -- per step
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        rec = self.recorder
        if rec is None:
            return
        from .torch import _unwrap_optimizer

        opt = _unwrap_optimizer(optimizer)
        suffix = ""
        if opt is not rec.optimizer:
            opts = [_unwrap_optimizer(o) for o in trainer.optimizers]
            k = next((i for i, o in enumerate(opts) if o is opt), len(opts))
            suffix = f"/opt{k}"
        rec._before_update(opt, trainer.global_step, suffix)

    def _post_step(self, optimizer, args, kwargs) -> None:
        if self.recorder is not None and self._trainer is not None:
            self.recorder._after_update(optimizer, self._trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._gs_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        rec = self.recorder
        if rec is None or outputs is None:
            return
        try:
            gs = trainer.global_step
            # the batch belongs to the optimizer step that consumed its gradients: the one just taken, or the
            # coming one while gradients are still being accumulated
            step = gs - 1 if gs > self._gs_at_batch_start else gs
            if step % rec.every:
                return
            loss, output, target = outputs, None, None
            if isinstance(outputs, dict):
                loss = outputs.get("loss")
                output = next((outputs[k] for k in ("logits", "output", "preds", "y_hat") if k in outputs), None)
                target = next((outputs[k] for k in ("target", "targets", "y", "labels") if k in outputs), None)
            if loss is not None and getattr(pl_module, "automatic_optimization", True):
                k = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
                if k > 1:
                    loss = loss * k
            rec._add(step, loss, output, target, {})
        except Exception as exc:  # noqa: BLE001
            rec._problem("on_train_batch_end", exc)

    # -- per epoch
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.recorder is None or trainer.sanity_checking:
            return
        from ..run.roles import classify

        self._val_metrics = {k: v for k, v in _scalars(trainer.callback_metrics).items()
                             if classify(k).split == "val"}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        rec = self.recorder
        if rec is None:
            return
        try:
            from ..run.roles import classify

            metrics = _scalars(trainer.callback_metrics)
            # a metric logged on_step and on_epoch appears as X, X_step and X_epoch: keep X_epoch, the name
            # Lightning's own loggers write
            values = {k: v for k, v in metrics.items() if classify(k).split != "val" and not k.endswith("_step")
                      and f"{k}_epoch" not in metrics}
            values.update(self._val_metrics or {})
            self._val_metrics = None
            if rec.detailed:
                rec.train_loader = trainer.train_dataloader
                val = trainer.val_dataloaders
                rec.val_loader = val[0] if isinstance(val, (list, tuple)) and val else val
            rec.epoch_end(epoch=trainer.current_epoch, **values)
        except Exception as exc:  # noqa: BLE001
            rec._problem("on_train_epoch_end", exc)

    # -- the end
    def _finish(self, verdict: bool) -> None:
        rec, self.recorder = self.recorder, None
        for h in self._post_handles:
            h.remove()
        self._post_handles = []
        if rec is not None:
            rec.close(verdict=verdict)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._finish(verdict=self.live)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._finish(verdict=False)


def _scalars(metrics) -> dict[str, float]:
    out = {}
    for k, v in dict(metrics).items():
        try:
            if hasattr(v, "numel") and v.numel() != 1:
                continue
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _build(package: str) -> type:
    if package not in _CLASSES:
        mod = require(package, "lightning")
        name = "WhyspikeLightningCallback" if package == "lightning.pytorch" else "WhyspikePytorchLightningCallback"
        _CLASSES[package] = type(name, (_WhyspikeLightningLogic, mod.Callback), {
            "__doc__": f"Records ``Trainer.fit`` into a whyspike run directory ({package} flavour); see "
                       "whyspike.record.lightning.",
            "__module__": __name__,
        })
    return _CLASSES[package]


def __getattr__(name: str):
    if name == "WhyspikeLightningCallback":
        return _build("lightning.pytorch")
    if name == "WhyspikePytorchLightningCallback":
        return _build("pytorch_lightning")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["WhyspikeLightningCallback", "WhyspikePytorchLightningCallback"]

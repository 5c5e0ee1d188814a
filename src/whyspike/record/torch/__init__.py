"""Recorder for hand-written PyTorch loops, and the global hooks behind ``whyspike run``.

One call per step and one per epoch::

    from whyspike.record.torch import Recorder

    rec = Recorder(optimizer, model, run_dir="runs/exp1", scheduler=scheduler)
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            rec.step(loss=loss, output=logits, target=y)     # before or after optimizer.step(): both work
        scheduler.step()
        rec.epoch_end(val_loss=val_loss, val_accuracy=val_acc)
    rec.close()                                               # prints the diagnosis

``Recorder(optimizer, model)`` alone, with no ``rec.step`` call, still records through the optimizer's step hooks:
the learning rate, momentum / betas and weight decay actually applied (parameter group 0; meta.json notes when the
groups differ) and the global gradient norm before clipping. ``torch.nn.utils.clip_grad_norm_`` is wrapped while a
recorder is open, so the recorded norm is the one it returns (the pre-clip total norm); without clipping the norm is
computed in the optimizer's step pre-hook. Call it as ``torch.nn.utils.clip_grad_norm_`` (or ``nn.utils.…``): a
reference taken with ``from torch.nn.utils import clip_grad_norm_`` *before* the recorder was created is not seen,
and the norm recorded is then the clipped one.

Step numbering: the step axis counts the optimizer's steps (from 0). ``rec.step()`` attaches its values to the step
the optimizer is on: to the coming step when called before ``optimizer.step()`` (as detected at the first call),
to the step just taken when called after it; several calls per optimizer step (gradient accumulation) are averaged.
Epochs are numbered from 0 (``first_epoch``) in the order of ``rec.epoch_end()`` calls, which matches the
``last_epoch`` counter of a scheduler stepped once per epoch.

What each tier costs:

- ``default``: per recorded step, on the host, the LR, momentum / betas and weight decay read from parameter group 0
  as plain Python floats, put in the row only when they changed (the drain fills the steps between; a tensor LR is
  copied every step) and the true per-batch loss: ``loss.item()`` on the CPU (no device to wait for), else
  ``loss.detach()`` kept on the device until the drain. Sampled, at every step when steps take 1.5 ms or more and
  ``(1.5 ms / step time)²`` steps apart below (every ~127th on a 0.13 ms micro-step; ``sample_every`` fixes it): the
  global gradient norm before clipping (one ``torch._foreach_norm`` over the gradients, per-tensor norms kept) and,
  when ``output``/``target`` are given, the batch accuracy (``argmax(-1) == target``, the vector of hits kept); the
  other rows have no value there (null, not logged). When the loop calls ``torch.nn.utils.clip_grad_norm_``, the
  pre-clip norm it returns is free and recorded at every step. Nothing is synchronised with an accelerator per step:
  at each drain (every ``flush_every`` steps; by default about every 0.5 s of training, 16 to 2048 steps) the drain
  stacks what the buffered steps kept, computes each step's global gradient norm and hit count with one vectorised
  op per column, copies everything to the host in one transfer per device, and hands the rows to the run writer as
  one block of columns (``RunWriter.steps``); they go to Parquet (a part per ``RunWriter`` flush). An epoch's row
  (mean batch loss and accuracy, last LR, the values given to ``epoch_end``) follows the drain of its last step; a
  mean is written only when every recorded step of the epoch has the value (a sampled accuracy has no epoch mean:
  the mean of a few sampled batches would swing with the sample). Per epoch one checkpoint of model + optimizer
  state is written (``checkpoints`` newest kept, plus those around detected jumps; the run writer skips epochs to
  keep them within its time budget).
- ``detailed`` (opt-in): the gradient norm and accuracy at every recorded step; additionally, every
  ``detail_every`` steps a copy of all parameters (one model's worth of
  memory, briefly) to measure the update-to-weight ratio per layer, and the batch's label histogram; per epoch the
  weight norm per layer, and when ``train_loader`` / ``val_loader`` are given: eval-mode metrics on
  ``train_eval_batches`` training batches (exposes the running-average artifact), validation metrics plus
  per-example correctness (one byte per eval example per epoch on disk) and, when the model has BatchNorm, a
  validation with BatchNorm statistics recomputed on ``bn_batches`` training batches (PreciseBN: a deep copy of the
  model and ``bn_batches`` extra forward passes per epoch).

Measured (``benchmarks/recording_overhead.md``, recorder on vs off side by side in one process, CPU time): on the
seed's 10-128-10 MLP (a 0.13 ms step of ~30 small torch ops) every Python statement the recorder runs per step
costs several times what it costs in a tight loop, because the training's own ops leave the caches cold; the
gradient norm (``foreach_norm``) and the ``argmax`` cost ~30 µs there, hence their sampling. So the common
per-step path builds no row: the optimizer's pre-hook appends the step number to a list and reads the
hyper-parameters (a row only when one changed), ``rec.step`` stores the loss in a dict (read at once on the CPU,
kept as a tensor on an accelerator), and the drain builds the columns. The time added is roughly fixed per step,
so it falls under 5% once steps take a few milliseconds. Per epoch the checkpoint and the live explanation keep
within their time budgets (0.5% each of wall time, the expected cost of the next one included).

Not done, on purpose: computing the accuracy at the drain from kept references to the logits and labels would save
~5 µs a step on the MLP, but labels and outputs are often rewritten without PyTorch noticing (a reused label buffer
filled through NumPy, a CUDA graph's static output), which would record wrong accuracies silently.

The recorder never raises into training: a problem is reported once on stderr and recording goes on without the
signal concerned. NaN losses are recorded as NaN.
"""

from __future__ import annotations

from ._checkpoint import CHECKPOINT_FILE, CHECKPOINT_FORMAT, load_checkpoint
from ._facts import _json_safe, _unwrap_optimizer  # noqa: F401 - for the Lightning and Hugging Face callbacks
from ._global_hooks import GlobalHooks, install_global_hooks
from ._recorder import TIERS, Recorder
from ._support import new_run_dir

__all__ = ["CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "GlobalHooks", "Recorder", "TIERS", "install_global_hooks",
           "load_checkpoint", "new_run_dir"]

"""Per-epoch evaluations (detailed tier, or called by hand): weight norms, train-set metrics in eval mode,
validation metrics with per-example correctness, and validation with recomputed BatchNorm statistics."""

from __future__ import annotations

from ._batch import _logits, _split_batch, _to
from ._support import _device_of, _guarded, _t, _to_floats


class _EvaluateMixin:
    def _detailed_epoch(self) -> dict[str, float]:
        row: dict[str, float] = {}
        if self.model is not None:
            row.update(self.weight_norms() or {})
        if self.train_loader is not None:
            row.update(self.evaluate_train(self.train_loader, queue=False) or {})
        if self.val_loader is not None:
            row.update(self.evaluate(self.val_loader, queue=False) or {})
            if self.train_loader is not None:
                row.update(self.evaluate_precise_bn(self.train_loader, self.val_loader, queue=False) or {})
        return row

    @_guarded(default=dict)
    def weight_norms(self) -> dict[str, float]:
        """The global weight norm and one per layer (``weight_norm``, ``weight_norm/<layer>``)."""
        torch = _t()
        named = list(self.model.named_parameters())
        if not named:
            return {}
        norms = torch._foreach_norm([p.detach() for _, p in named])
        layers: dict[str, list] = {}
        for (name, _), n in zip(named, norms):
            layers.setdefault(name.rsplit(".", 1)[0] if "." in name else name, []).append(n)
        keys = ["weight_norm"] + [f"weight_norm/{k}" for k in layers]
        vals = [torch.stack(list(norms)).square().sum().sqrt()] + \
               [torch.stack(v).square().sum().sqrt() for v in layers.values()]
        return dict(zip(keys, _to_floats(vals)))

    def _run_eval(self, model, loader, *, loss_fn=None, max_batches=None, per_example=False):
        """(mean loss or None, accuracy or None, n examples, correctness vector or None) in eval mode."""
        torch = _t()
        loss_fn = loss_fn or self.loss_fn
        device = _device_of(model)
        was_training = model.training
        model.eval()
        loss_sum = correct = None
        n = n_loss = 0
        hits = []
        try:
            with torch.no_grad():
                for i, batch in enumerate(loader):
                    if max_batches is not None and i >= max_batches:
                        break
                    x, y, kw = _split_batch(_to(batch, device))
                    out = model(**x) if kw else model(x)
                    logits = _logits(out)
                    if logits is None:
                        continue
                    bs = int(logits.shape[0])
                    loss = None
                    if loss_fn is not None and y is not None:
                        loss = loss_fn(out if kw else logits, y)
                    elif getattr(out, "loss", None) is not None or (isinstance(out, dict) and "loss" in out):
                        loss = out["loss"] if isinstance(out, dict) else out.loss
                    elif y is not None and not y.is_floating_point() and logits.dim() == y.dim() + 1:
                        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                                 y.reshape(-1), ignore_index=-100)
                    if loss is not None:
                        loss_sum = loss.detach().float() * bs if loss_sum is None else loss_sum + loss.detach() * bs
                        n_loss += bs
                    if y is not None and not y.is_floating_point() and logits.dim() == y.dim() + 1:
                        hit = logits.argmax(-1) == y
                        if hit.dim() > 1:
                            hit = hit.all(dim=tuple(range(1, hit.dim())))
                        correct = hit.sum() if correct is None else correct + hit.sum()
                        if per_example:
                            hits.append(hit.cpu())
                    n += bs
        finally:
            model.train(was_training)
        mean_loss = float(loss_sum) / n_loss if loss_sum is not None and n_loss else None
        acc = float(correct) / n if correct is not None and n else None
        vec = torch.cat(hits).numpy() if per_example and hits else None
        return mean_loss, acc, n, vec

    def _queue(self, values: dict, queue: bool) -> dict:
        if queue:
            self._epoch_extra.update(values)
        return values

    @_guarded(default=dict)
    def evaluate_train(self, loader, *, max_batches: int | None = None, loss_fn=None, queue: bool = True) -> dict:
        """Training-set loss/accuracy in eval mode on the first ``max_batches`` batches (``train_eval_*``).

        Unlike the mean of batch losses over the epoch, this measures the model as it is at the epoch's end.
        """
        mb = self.train_eval_batches if max_batches is None else max_batches
        loss, acc, _, _ = self._run_eval(self.model, loader, loss_fn=loss_fn, max_batches=mb)
        out = {k: v for k, v in (("train_eval_loss", loss), ("train_eval_accuracy", acc)) if v is not None}
        return self._queue(out, queue)

    @_guarded(default=dict)
    def evaluate(self, loader, *, name: str = "val", loss_fn=None, per_example: bool | None = None,
                 max_batches: int | None = None, queue: bool = True) -> dict:
        """Eval-mode ``<name>_loss`` / ``<name>_accuracy`` on ``loader``; per-example correctness (detailed tier
        by default) goes to ``examples/<name>-eNNNN.npy`` for McNemar tests between epochs (keep the loader
        unshuffled so the examples line up)."""
        per_example = self.detailed if per_example is None else per_example
        loss, acc, n, vec = self._run_eval(self.model, loader, loss_fn=loss_fn, max_batches=max_batches,
                                           per_example=per_example)
        if n and self.writer.meta.get("eval_size") is None and name == "val":
            self.writer.write_meta(eval_size=n)
        if vec is not None:
            self.writer.examples(self._epoch, name, vec)
        out = {k: v for k, v in ((f"{name}_loss", loss), (f"{name}_accuracy", acc)) if v is not None}
        return self._queue(out, queue)

    @_guarded(default=dict)
    def evaluate_precise_bn(self, train_loader, loader, *, name: str = "val", bn_batches: int | None = None,
                            loss_fn=None, queue: bool = True) -> dict:
        """Eval-mode metrics after recomputing BatchNorm statistics on ``bn_batches`` training batches (PreciseBN)
        on a copy of the model (``<name>_precise_bn_loss``, ``<name>_precise_bn_accuracy``).

        If these stay steady while the plain eval-mode metrics swing, the swings came from running statistics
        that lag the weights. A model without BatchNorm is said so once and gives nothing.
        """
        import copy

        torch = _t()
        bns = [m for m in self.model.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not bns:
            if not self._bn_warned:
                self._bn_warned = True
                self._say_once("precise_bn", "the model has no BatchNorm layers with running statistics: "
                                             "validation with recomputed BatchNorm statistics is skipped (nothing "
                                             "to recompute)")
            return {}
        model = copy.deepcopy(self.model)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the batches below
        device = _device_of(model)
        model.train()
        nb = self.bn_batches if bn_batches is None else bn_batches
        with torch.no_grad():
            for i, batch in enumerate(train_loader):
                if i >= nb:
                    break
                x, _, kw = _split_batch(_to(batch, device))
                model(**x) if kw else model(x)
        loss, acc, _, _ = self._run_eval(model, loader, loss_fn=loss_fn)
        del model
        out = {k: v for k, v in ((f"{name}_precise_bn_loss", loss), (f"{name}_precise_bn_accuracy", acc))
               if v is not None}
        return self._queue(out, queue)

"""Detailed tier, per sampled step: the update-to-weight ratio per layer and the batch's label histogram."""

from __future__ import annotations

from ._support import _guarded, _t

_MAX_HIST_CLASSES = 100


class _DetailMixin:
    """Every ``detail_every`` steps: a copy of the weights before the update, compared with them after it."""

    def _snapshot_due(self, step: int) -> bool:
        return self.detailed and step % self.detail_every == 0

    @_guarded()
    def _snapshot(self, optimizer, step: int) -> None:
        """The weights before the update of ``step``, for the update-to-weight ratio (detailed tier)."""
        params = [p for p in self._params_of(optimizer) if p.requires_grad]
        self._snap = (step, params, [p.detach().clone() for p in params])

    @_guarded()
    def _after_update(self, optimizer, step: int) -> None:
        if self._pending_clip:  # a clip whose step was skipped (GradScaler found inf) must not leak into the next
            self._take_clip(self._view(optimizer))
        snap, self._snap = self._snap, None
        if snap is None or snap[0] != step:
            return
        torch = _t()
        _, params, before = snap
        deltas = torch._foreach_sub([p.detach() for p in params], before)
        dn, wn = torch._foreach_norm(deltas), torch._foreach_norm(before)
        layers: dict[str, list[int]] = {}
        for i, p in enumerate(params):
            layers.setdefault(self._layer_name(p, i), []).append(i)
        row = self._row(step)

        def ratio(idx):
            d = torch.stack([dn[i] for i in idx]).square().sum().sqrt()
            w = torch.stack([wn[i] for i in idx]).square().sum().sqrt()
            return d / w.clamp_min(1e-12)

        for name, idx in layers.items():
            row[f"update_ratio/{name}"] = ratio(idx)
        row["update_ratio"] = ratio(range(len(params)))

    def _layer_name(self, p, i: int) -> str:
        if not self._layer_of and self.model is not None:
            for name, q in self.model.named_parameters():
                self._layer_of[id(q)] = name.rsplit(".", 1)[0] if "." in name else name
        return self._layer_of.get(id(p), f"param{i}")

    def _label_histogram(self, row: dict, logits, target) -> None:
        torch = _t()
        if target.is_floating_point() or logits.dim() != target.dim() + 1:
            return
        c = int(logits.shape[-1])
        if c > _MAX_HIST_CLASSES:
            self._say_once("hist", f"label histogram skipped: {c} classes (the histogram is kept for <= "
                                   f"{_MAX_HIST_CLASSES})")
            return
        t = target.reshape(-1)
        valid = ((t >= 0) & (t < c)).to(torch.float32)
        hist = torch.zeros(c, device=t.device).scatter_add_(0, t.clamp(0, c - 1), valid)
        for k, v in enumerate(hist.unbind()):
            row[f"labels/{k}"] = v

"""What a batch and a model output look like: the logits, the labels, correct predictions."""

from __future__ import annotations

from ._stepbuffer import Count
from ._support import _t

_LABEL_KEYS = ("labels", "label", "target", "targets", "y")


def _logits(output):
    """The prediction tensor of a model output: a tensor, ``.logits``, ``["logits"]`` or the first element."""
    torch = _t()
    if isinstance(output, torch.Tensor):
        return output
    lg = getattr(output, "logits", None)
    if isinstance(lg, torch.Tensor):
        return lg
    if isinstance(output, dict):
        for k in ("logits", "output", "outputs", "preds", "y_hat"):
            if isinstance(output.get(k), torch.Tensor):
                return output[k]
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _hits(output, target):
    """(correct, counted) of class logits against integer labels (negatives such as -100 not counted), None when
    not applicable. For one label per example: the vector of hits, counted at the drain (:class:`Count`), and an
    int; for sequences, whose padding is only known on the device: two 0-d tensors."""
    td = target.dim()
    if td == 1 and output.dim() == 2:  # the common case, checked with the fewest calls
        if output.shape[0] != target.shape[0] or target.is_floating_point():
            return None
        # argmax makes no autograd node: no need to detach the logits first
        return Count(output.argmax(-1) == target), target.shape[0]
    if target.is_floating_point() or output.dim() != td + 1 or output.shape[:-1] != target.shape:
        return None
    hit = output.argmax(-1) == target
    if td > 1:
        valid = target >= 0
        return (hit & valid).sum(), valid.sum()
    return hit.sum(), 1  # a single example


def _split_batch(batch):
    """(inputs, target, call-with-kwargs) from a batch: ``(x, y, ...)``, a dict with a label key, or ``x``."""
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1], False
    if isinstance(batch, dict):
        target = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
        return batch, target, True
    return batch, None, False


def _to(obj, device):
    torch = _t()
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj

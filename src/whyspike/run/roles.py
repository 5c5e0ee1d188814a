"""What a series is, from its name (and values): train or validation, accuracy-like or loss-like, LR, norms.

Names come from every logger there is (``val_accuracy``, ``Valid Acc.``, ``validation/epoch_accuracy``,
``eval_loss``, ``lr-SGD``, ``train/grad_norm``), so matching works on lower-cased word tokens.

    >>> classify("Valid Acc.").split, classify("Valid Acc.").kind
    ('val', 'accuracy')
    >>> classify("lr-SGD").kind
    'lr'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_VAL = {"val", "valid", "validation", "eval", "evaluation", "test", "dev", "holdout"}
_TRAIN = {"train", "training", "trn"}
_ACC = {"acc", "accuracy", "top1", "top5", "acc1", "acc5", "f1", "precision", "recall", "auc", "auroc", "map",
        "iou", "miou", "dice", "bleu", "rouge", "r2", "correct", "exact", "match", "em", "score", "ap"}
_LOSS = {"loss", "error", "err", "mse", "mae", "rmse", "perplexity", "ppl", "nll", "xent", "ce", "wer", "cer",
         "crossentropy", "bpc", "bpd"}
# settings of the data pipeline a loop may log next to its metrics (an augmentation strength, a frozen flag, an
# image size): levels a person set, not measurements, so they are evidence (data_pipeline) and never jumps themselves
_PIPELINE = {"aug", "augment", "augmentation", "augmentations", "mosaic", "mixup", "cutmix", "freeze", "frozen",
             "unfreeze", "unfrozen", "imgsz", "resolution", "curriculum"}
_META = {"epoch", "step", "steps", "iteration", "iter", "time", "timestamp", "runtime", "walltime", "wall",
         "samples", "tokens", "flos", "global", "per", "second", "sec"}


@dataclass(frozen=True)
class Role:
    """``kind``: accuracy | loss | lr | weight_norm | grad_norm | momentum | weight_decay | pipeline | meta | metric.

    ``split``: train | val | None (unknown). ``percent``: an accuracy logged on a 0-100 scale.
    """

    kind: str
    split: str | None
    higher_is_better: bool | None
    percent: bool = False

    @property
    def scale(self) -> float:
        """Value of a perfect accuracy on this series' scale (100 for percent, 1 otherwise)."""
        return 100.0 if self.percent else 1.0


def tokens(name: str) -> list[str]:
    """Lower-case word tokens; camelCase split; digits kept with their word (``top1``)."""
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def _split_of(toks: list[str]) -> str | None:
    for t in toks:
        if t in _VAL:
            return "val"
        if t in _TRAIN:
            return "train"
    return None


def classify(name: str, values: np.ndarray | None = None) -> Role:
    """Role of a series named ``name``; ``values`` (optional) settle percent vs fraction."""
    toks = tokens(name)
    tset = set(toks)
    joined = "_".join(toks)
    split = _split_of(toks)
    if tset & {"momentum", "beta1", "betas"} or "beta_1" in joined:  # before lr: Lightning logs "lr-SGD-momentum"
        return Role("momentum", split, None)
    if tset & {"lr", "learning"} or "learning_rate" in joined or "learningrate" in tset:
        return Role("lr", split, None)
    if "norm" in tset or "norms" in tset:
        if tset & {"grad", "gradient", "grads", "gradients"}:
            return Role("grad_norm", split, None)
        if tset & {"weight", "weights", "param", "params", "parameter", "w"}:
            return Role("weight_norm", split, None)
    if "weight_decay" in joined or "wd" in tset:
        return Role("weight_decay", split, None)
    if tset & _LOSS:
        # an "error rate" on a 0-100 scale is still lower-is-better
        return Role("loss", split or "train", False, percent=_looks_percent(values) and "err" in joined)
    if tset & _ACC:
        return Role("accuracy", split or "train", True, percent=_looks_percent(values))
    if tset & _PIPELINE:
        return Role("pipeline", split, None)
    if tset and tset <= _META | {"s", "lrs"} or tset & {"epoch", "step", "time", "runtime", "timestamp"}:
        return Role("meta", split, None)
    return Role("metric", split, None)


def _looks_percent(values: np.ndarray | None) -> bool:
    if values is None or len(values) == 0:
        return False
    v = values[np.isfinite(values)]
    return bool(len(v) and v.max() > 1.5 and v.max() <= 100.0 + 1e-9)

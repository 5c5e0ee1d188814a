"""Interventions: ``NAME=VALUE`` strings that change exactly one factor of a training.

The same vocabulary serves both engines: the in-process PyTorch engine applies an intervention to a
``ReplicaSpec`` here (:func:`apply`); the black-box engine passes it to the re-run script (``whyspike.record.inject``).

==================  ==========================================================================================
``seed.init=N``     the initialisation seed (``seed.data``: data order, ``seed.noise``: dropout); ``seed=N`` all
``lr.shift=K``      the whole LR schedule delayed by K epochs (K < 0: advanced): a milestone at m moves to m + K
``lr.decay=off``    the LR held at its initial value (the schedule removed)
``lr.hold=E``       the LR constant from epoch E on, at its value then
``lr.scale=F``      every LR times F
``lr.warmup=F``     the warmup (the ramp up to the schedule's peak) F times longer; the rest follows it
``momentum=off``    no momentum, the LR scaled by 1/(1 - beta) (the same effective step); ``momentum=V`` sets it
``adam.eps=V``      Adam's epsilon (``adam.beta2=V``: its beta2)
``wd=off``          no weight decay (``wd.scale=F``: times F)
``batch.scale=F``   the batch size times F, the LR times F (the linear scaling rule)
``shuffle=fixed``   the same data order every epoch (``shuffle=reshuffle``: another order)
``bn.momentum=V``   BatchNorm's running-statistics momentum (PyTorch convention: the weight of the new batch)
``bn.norm=group``   BatchNorm replaced by a batch-independent GroupNorm, retrained
``skip=K``          the K batches just before the jump skipped (no forward, no update)
``bn.recompute``    evaluation only, no retraining: BN statistics recomputed on training batches (PreciseBN)
``bn.train_mode``   evaluation only: the model evaluated with batch statistics (train-mode BN)
==================  ==========================================================================================
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

from ..errors import UsageError
from .spec import ReplicaError, ReplicaSpec, TrainingSpec

# evaluation-only interventions: they re-evaluate the baseline's checkpoints, nothing is retrained
EVALUATION_ONLY = ("bn.recompute", "bn.train_mode")

NAMES = ("seed", "seed.init", "seed.data", "seed.noise", "lr.shift", "lr.decay", "lr.hold", "lr.scale", "lr.warmup",
         "momentum", "adam.eps", "adam.beta2", "wd", "wd.scale", "batch.scale", "shuffle", "bn.momentum", "bn.norm",
         "skip") + EVALUATION_ONLY


@dataclass(frozen=True)
class Intervention:
    name: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.name}={self.value}" if self.value else self.name

    @property
    def evaluation_only(self) -> bool:
        return self.name in EVALUATION_ONLY

    def expected_shift(self) -> float | None:
        """By how many epochs this intervention moves the jump if its supposed cause is the one it changes."""
        return float(self.value) if self.name == "lr.shift" else None


def parse(text: str) -> Intervention:
    """``"lr.shift=+5"`` -> Intervention("lr.shift", "+5"); a one-line UsageError for what is not one."""
    name, _, value = text.strip().partition("=")
    name, value = name.strip(), value.strip()
    if name not in NAMES:
        raise UsageError(f"--intervene {text!r}: unknown intervention {name!r}; known: {', '.join(NAMES)}")
    needs_number = {"seed", "seed.init", "seed.data", "seed.noise", "lr.shift", "lr.hold", "lr.scale", "lr.warmup",
                    "adam.eps", "adam.beta2", "wd.scale", "batch.scale", "bn.momentum", "skip"}
    choices = {"lr.decay": ("off",), "wd": ("off",), "shuffle": ("fixed", "reshuffle"), "bn.norm": ("group",),
               "momentum": ("off",)}
    if name in needs_number or (name == "momentum" and value != "off"):
        try:
            v = float(value)
        except ValueError:
            raise UsageError(f"--intervene {text!r}: {name} needs a number (e.g. {name}=2)") from None
        if not math.isfinite(v):
            raise UsageError(f"--intervene {text!r}: {name} needs a finite number")
        if name in ("seed", "seed.init", "seed.data", "seed.noise", "lr.shift", "lr.hold", "skip") and v != int(v):
            raise UsageError(f"--intervene {text!r}: {name} needs a whole number")
    elif name in choices and value not in choices[name]:
        raise UsageError(f"--intervene {text!r}: {name} takes {' or '.join(choices[name])}")
    elif name in EVALUATION_ONLY and value:
        raise UsageError(f"--intervene {text!r}: {name} takes no value")
    return Intervention(name, value)


def _shifted(schedule: Callable, k: int, spe: int) -> Callable:
    def shifted(step: int, epoch: int) -> float:
        if k >= 0:
            return schedule(max(0, step - k * spe), max(0, epoch - k))
        return schedule(step - k * spe, epoch - k)

    shifted.__name__ = f"shift({getattr(schedule, '__name__', 'schedule')}, {k:+d} epochs)"
    return shifted


def _held(schedule: Callable, epoch0: int, spe: int) -> Callable:
    def held(step: int, epoch: int) -> float:
        return schedule(step, epoch) if epoch < epoch0 else schedule(epoch0 * spe, epoch0)

    held.__name__ = f"hold({getattr(schedule, '__name__', 'schedule')} from epoch {epoch0})"
    return held


def _warmup_stretched(schedule: Callable, factor: float, spe: int, epochs: int) -> Callable:
    total = max(1, epochs * spe)
    values = [schedule(s, s // spe) for s in range(total)]
    peak = max(range(total), key=lambda s: values[s])  # the first step at the schedule's maximum
    if peak == 0:
        raise ReplicaError("lr.warmup: the schedule has no warmup (its LR is highest at the first step)")
    new_peak = int(round(peak * factor))

    def stretched(step: int, epoch: int) -> float:
        if step < new_peak:
            s = int(step / factor)
        else:
            s = step - new_peak + peak
        return schedule(s, s // spe)

    stretched.__name__ = f"warmup x{factor:g}"
    return stretched


def _set_bn_momentum(value: float) -> Callable:
    def transform(model):
        import torch

        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = value
        return model

    transform.__name__ = f"bn.momentum={value:g}"
    return transform


def _group_norm(model):
    """Every BatchNorm replaced by a GroupNorm over the same channels (groups: the largest divisor <= 8)."""
    import torch

    def groups(c: int) -> int:
        return max(g for g in range(1, min(8, c) + 1) if c % g == 0)

    def swap(parent):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, torch.nn.GroupNorm(groups(child.num_features), child.num_features,
                                                         eps=child.eps, affine=child.affine))
            else:
                swap(child)

    swap(model)
    return model


def apply(iv: Intervention, spec: TrainingSpec, replica: ReplicaSpec, spike_epoch: int | None = None) -> ReplicaSpec:
    """``replica`` with ``iv`` applied (in-process engine); ReplicaError when the training cannot take it."""
    v = iv.value
    ov = dict(replica.overrides)
    cfg_lr = ov.get("lr", spec.lr)
    spe = spec.steps_per_epoch
    schedule = replica.schedule or spec.schedule
    new = dataclasses.replace(replica, overrides=ov)
    name = iv.name
    if name == "seed":
        return dataclasses.replace(new, init_seed=int(float(v)), data_seed=int(float(v)), noise_seed=int(float(v)))
    if name in ("seed.init", "seed.data", "seed.noise"):
        return dataclasses.replace(new, **{name.split(".")[1] + "_seed": int(float(v))})
    if name.startswith("lr.") and name != "lr.scale" and schedule is None:
        raise ReplicaError(f"{iv}: the training has no LR schedule (a constant LR) to change")
    if name == "lr.shift":
        return dataclasses.replace(new, schedule=_shifted(schedule, int(float(v)), spe))
    if name == "lr.decay":
        return dataclasses.replace(new, schedule=lambda step, epoch: schedule(0, 0))
    if name == "lr.hold":
        return dataclasses.replace(new, schedule=_held(schedule, int(float(v)), spe))
    if name == "lr.warmup":
        return dataclasses.replace(new, schedule=_warmup_stretched(schedule, float(v), spe, spec.epochs))
    if name == "lr.scale":
        ov["lr"] = cfg_lr * float(v)
        return new
    opt = ov.get("optimizer", spec.optimizer)
    if name == "momentum":
        beta = ov.get("momentum", spec.momentum)
        if opt != "sgd":
            raise ReplicaError(f"{iv}: optimizer {opt} has no momentum (its beta1 is betas[0])")
        if v == "off":
            if not beta:
                raise ReplicaError(f"{iv}: the training already runs without momentum")
            ov.update(momentum=0.0, nesterov=False, lr=cfg_lr / (1.0 - beta))
        else:
            ov["momentum"] = float(v)
        return new
    if name in ("adam.eps", "adam.beta2"):
        if opt not in ("adam", "adamw"):
            raise ReplicaError(f"{iv}: optimizer {opt} is not Adam")
        if name == "adam.eps":
            ov["eps"] = float(v)
        else:
            ov["betas"] = (tuple(ov.get("betas", spec.betas))[0], float(v))
        return new
    if name == "wd":
        ov["weight_decay"] = 0.0
        return new
    if name == "wd.scale":
        ov["weight_decay"] = ov.get("weight_decay", spec.weight_decay) * float(v)
        return new
    if name == "batch.scale":
        b = int(round(ov.get("batch_size", spec.batch_size) * float(v)))
        if b < 1:
            raise ReplicaError(f"{iv}: the batch size would be {b}")
        ov.update(batch_size=b, lr=cfg_lr * b / ov.get("batch_size", spec.batch_size))
        return new
    if name == "shuffle":
        if v == "fixed":
            ov["shuffle"] = False
            return new
        return dataclasses.replace(new, data_seed=replica.data_seed + 7919)
    if name == "bn.momentum":
        return dataclasses.replace(new, model_transform=_compose(replica.model_transform or spec.model_transform,
                                                                 _set_bn_momentum(float(v))))
    if name == "bn.norm":
        return dataclasses.replace(new, model_transform=_compose(replica.model_transform or spec.model_transform,
                                                                 _group_norm))
    if name == "skip":
        if spike_epoch is None:
            raise ReplicaError(f"{iv}: needs the jump's epoch")
        k, start = int(float(v)), int(spike_epoch) * spe
        return dataclasses.replace(new, skip_steps=frozenset(range(max(0, start - k), start)))
    raise ReplicaError(f"{iv}: an evaluation-only intervention, not a retraining")


def fork_epoch(ivs: list[Intervention], spec: TrainingSpec, spike_epoch: int | None, branch_epoch: int,
               last_epoch: int) -> int:
    """The last epoch through which a replica with ``ivs`` trains exactly as the baseline replica of the same seeds
    does from the same state at the end of ``branch_epoch`` (-1: from scratch); at most ``last_epoch``: the
    :func:`shared_epoch` of ``ivs`` and the baseline's none."""
    return shared_epoch(ivs, [], spec, spike_epoch, branch_epoch, last_epoch)


def shared_epoch(a: list[Intervention], b: list[Intervention], spec: TrainingSpec, spike_epoch: int | None,
                 branch_epoch: int, last_epoch: int) -> int:
    """The last epoch through which a replica with interventions ``a`` and one with ``b`` (``[]``: the baseline)
    train exactly alike, with the same seeds, from the same state at the end of ``branch_epoch`` (-1: from
    scratch); at most ``last_epoch``.

    Only arms that change nothing but the LR multiplier schedule or the skipped steps (``lr.shift``, ``lr.decay``,
    ``lr.hold``, ``lr.warmup``, ``skip``) can train alike for a while: their multipliers and skips are compared
    step by step from the branch on, and they part at the end of the epoch before the first step that differs
    (data order and dropout masks are functions of the seeds and the step, so either may continue from the
    other's state there). Any other change (a seed, a hyper-parameter, the model) acts from the first step:
    ``branch_epoch``.
    """
    from .engines._common import schedule_value

    ra, rb = _steps_only(a, spec, spike_epoch), _steps_only(b, spec, spike_epoch)
    if ra is None or rb is None:
        return branch_epoch
    spe = spec.steps_per_epoch
    sa, sb = ra.schedule or spec.schedule, rb.schedule or spec.schedule
    try:
        for g in range((branch_epoch + 1) * spe, (last_epoch + 1) * spe):
            epoch = g // spe
            if ((g in ra.skip_steps) != (g in rb.skip_steps)
                    or schedule_value(sa, g, epoch) != schedule_value(sb, g, epoch)):
                return max(branch_epoch, epoch - 1)
    except Exception:  # noqa: BLE001 - a schedule that fails fails in the arm's replicas too, from the branch
        return branch_epoch
    return max(branch_epoch, last_epoch)


def _steps_only(ivs: list[Intervention], spec: TrainingSpec, spike_epoch: int | None) -> ReplicaSpec | None:
    """The baseline's replica with ``ivs`` applied when they change only its LR multiplier schedule or skipped
    steps; None when they change anything else, or cannot apply (the arm's replicas report why, from the branch)."""
    base = ReplicaSpec()
    arm = base
    try:
        for iv in ivs:
            arm = apply(iv, spec, arm, spike_epoch)
    except ReplicaError:
        return None
    return arm if dataclasses.replace(arm, schedule=None, skip_steps=frozenset()) == base else None


def _compose(first: Callable | None, then: Callable) -> Callable:
    if first is None:
        return then

    def both(model):
        return then(first(model))

    both.__name__ = f"{getattr(first, '__name__', 'transform')} + {getattr(then, '__name__', 'transform')}"
    return both

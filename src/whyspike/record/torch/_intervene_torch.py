"""Interventions applied to a hand-written PyTorch loop, from ``whyspike run``'s global optimizer hooks.

``WHYSPIKE_INTERVENE`` (see :mod:`whyspike.record._intervene`) reaches a plain PyTorch script through
:class:`~whyspike.record.torch._global_hooks.GlobalHooks`: just before every ``optimizer.step()`` the values the
user's code (or scheduler) set in each parameter group are kept, the intervened ones are written, and after the step
the user's values are put back. A scheduler thus keeps computing from its own values, and the recorder reads the
applied (intervened) values. Every parameter group of every optimizer that steps is changed; an optimizer that
cannot take an intervention stops the script at its first step with :class:`InterventionError` (one line, as for
Keras). Steps are counted per optimizer; epochs are the global hooks' (a ``DataLoader`` that runs out after
training steps), and an optimizer's steps per epoch are those it took in the first epoch it stepped in.

- ``lr.scale=F``: each step's LR times F.
- ``lr.decay=off``: the LR held at the value the user's schedule gives at the first step.
- ``lr.hold=E``: from epoch E on, the LR held at the user's LR of E's first step.
- ``lr.shift=K`` (K > 0 epochs): LR(t) = LR_user(t - K * steps_per_epoch), the user's LR history of this run (its
  first value for t < K * steps_per_epoch); K < 0 would need the schedule's future: an error. Both need epochs: a
  loop that iterates no ``DataLoader`` is refused.
- ``momentum=off`` (momentum 0 and LR x 1/(1 - momentum), the same effective step) / ``momentum=V``: optimizers
  with a ``momentum`` hyper-parameter (SGD, RMSprop); Adam's beta1 is not one.
- ``adam.eps=V``, ``adam.beta2=V``: optimizers with ``betas`` and ``eps`` (Adam, AdamW and their kin).
- ``wd=off`` / ``wd.scale=F``: the groups' ``weight_decay`` (0, or times F); an optimizer without any is refused.
- ``seed=N`` is applied where the script seeds (:mod:`whyspike.record._intervene`). ``skip``, ``bn.*``,
  ``batch.scale``, ``shuffle``, ``seed.data``/``seed.noise``/``seed.init`` and ``lr.warmup`` need Keras' ``fit``:
  they stay unapplied (a probe replica reports them as such).

An intervention counts as applied once it acted: at the first step, or for ``lr.shift`` once the first epoch gave
the steps per epoch and for ``lr.hold`` once epoch E began (a shorter run leaves them unapplied).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from .._intervene_plan import InterventionError, Plan

TORCH_NAMES = ("lr.scale", "lr.decay", "lr.hold", "lr.shift", "momentum", "adam.eps", "adam.beta2", "wd", "wd.scale")
_KEYS = ("lr", "momentum", "betas", "eps", "weight_decay")  # what is written before a step and put back after it


class _Optimizer:
    """What one optimizer's intervention remembers between its steps."""

    __slots__ = ("name", "steps", "epoch_start", "spe", "first", "hold", "history", "saved")

    def __init__(self, name: str):
        self.name = name
        self.steps = 0  # steps this optimizer took
        self.epoch_start = 0  # its step count when the current epoch began
        self.spe: int | None = None  # its steps per epoch, once an epoch it stepped in ended
        self.first: list[float] = []  # per group: the user's LR at its first step
        self.hold: list[float] | None = None  # lr.hold: the user's LR at the first step of epoch E
        self.history: list = []  # lr.shift, per group: the user's recent LRs (a deque once spe is known)
        self.saved: list[dict] | None = None  # the user's group values during a step


class TorchIntervention:
    """One :class:`Plan` applied to every PyTorch optimizer step (see the module doc). ``before_step`` /
    ``after_step`` are called by the global hooks around each ``step()``, ``epoch_end`` when an epoch ends;
    ``on_applied(name)`` is told each intervention once it acted."""

    def __init__(self, plan: Plan, on_applied: Callable[[str], None] | None = None):
        self.plan = plan
        self.names = [k for k in plan.raw if k in TORCH_NAMES]
        self.applied: set[str] = set()
        self._on_applied = on_applied
        self._opts: dict[int, tuple[Any, _Optimizer]] = {}
        self.epoch = 0  # epochs ended so far

    @property
    def active(self) -> bool:
        return bool(self.names)

    def _applied(self, name: str) -> None:
        if name not in self.applied:
            self.applied.add(name)
            if self._on_applied is not None:
                self._on_applied(name)

    # -- the checks, at an optimizer's first step
    def _state(self, opt, loaders_seen: bool) -> _Optimizer:
        known = self._opts.get(id(opt))
        if known is not None and known[0] is opt:
            return known[1]
        s = _Optimizer(type(opt).__name__)
        self._check(opt, s.name, loaders_seen)
        self._opts[id(opt)] = (opt, s)
        return s

    def _check(self, opt, name: str, loaders_seen: bool) -> None:
        plan, raw = self.plan, self.plan.raw
        groups = opt.param_groups
        if plan.lr_shift < 0:
            raise InterventionError(f"lr.shift={raw['lr.shift']}: advancing a PyTorch script's schedule needs the LRs "
                                    "its scheduler has not computed yet — use lr.shift=K with K > 0 (or the "
                                    "in-process engine)")
        for key in ("lr.shift", "lr.hold"):
            if key in raw and not loaders_seen:
                raise InterventionError(f"{key}={raw[key]} counts epochs, and the script trains without iterating a "
                                        "torch DataLoader (whyspike ends an epoch where a DataLoader runs out)")
        if plan.momentum is not None:
            if not all("momentum" in g for g in groups):
                hint = " (its first-moment decay is betas[0], not a momentum)" if "betas" in groups[0] else ""
                raise InterventionError(f"momentum={raw['momentum']}: optimizer {name} has no momentum "
                                        f"hyper-parameter{hint}")
            if plan.momentum == "off" and all(float(g["momentum"]) == 0 for g in groups):
                raise InterventionError(f"momentum=off: optimizer {name} already runs without momentum")
        for key in ("adam.eps", "adam.beta2"):
            if key in raw and not all("betas" in g and "eps" in g for g in groups):
                raise InterventionError(f"{key}={raw[key]}: optimizer {name} has no betas and eps (adam.eps and "
                                        "adam.beta2 act on Adam, AdamW and their kin)")
        if (plan.wd_off or plan.wd_scale is not None) and not any(float(g.get("weight_decay") or 0) > 0
                                                                  for g in groups):
            key = "wd" if plan.wd_off else "wd.scale"
            raise InterventionError(f"{key}={raw[key]}: optimizer {name} has no weight decay (weight_decay=0 in "
                                    "every parameter group)")

    # -- around each step
    def before_step(self, opt, loaders_seen: bool = True) -> None:
        """Write the intervened values into ``opt``'s groups (the user's are kept for :meth:`after_step`)."""
        plan = self.plan
        s = self._state(opt, loaders_seen)
        if s.saved is not None:  # the last step raised before its post hook: the user's values first
            self._put_back(opt, s)
        groups = opt.param_groups
        s.saved = [{k: g[k] for k in _KEYS if k in g} for g in groups]
        user = [float(g["lr"]) for g in groups]
        while len(s.first) < len(groups):  # a group added later starts its own history at its first step
            s.first.append(user[len(s.first)])
            s.history.append(deque(maxlen=self._kept(s)) if s.spe else [])
        if plan.lr_hold is not None and s.hold is None and self.epoch >= plan.lr_hold:
            s.hold = list(user)
            self._applied("lr.hold")
        for i, g in enumerate(groups):
            lr = user[i]
            if plan.lr_decay_off:
                lr = s.first[i]
            elif s.hold is not None:
                lr = s.hold[i] if i < len(s.hold) else lr
            elif plan.lr_shift:
                h = s.history[i]
                h.append(user[i])
                # h holds the user's LRs up to this step; once K epochs are behind, its oldest is LR_user(t - K*spe)
                lr = h[0] if isinstance(h, deque) and len(h) == h.maxlen else s.first[i]
            factor = plan.lr_scale
            if plan.momentum == "off":
                factor /= 1.0 - float(g["momentum"])
                g["momentum"] = 0.0
            elif plan.momentum is not None:
                g["momentum"] = float(plan.momentum)
            if plan.adam_eps is not None:
                g["eps"] = float(plan.adam_eps)
            if plan.adam_beta2 is not None:
                g["betas"] = (g["betas"][0], float(plan.adam_beta2))
            if plan.wd_off:
                g["weight_decay"] = 0.0
            elif plan.wd_scale is not None:
                g["weight_decay"] = float(g["weight_decay"]) * plan.wd_scale
            lr *= factor
            if lr != user[i]:
                g["lr"] = _like(g["lr"], lr)
        for name in self.names:
            if name not in ("lr.shift", "lr.hold"):
                self._applied(name)

    def after_step(self, opt) -> None:
        """Put the user's values back (its scheduler computes the next LR from them)."""
        known = self._opts.get(id(opt))
        if known is None or known[0] is not opt:
            return
        s = known[1]
        if s.saved is not None:
            self._put_back(opt, s)
            s.steps += 1

    @staticmethod
    def _put_back(opt, s: _Optimizer) -> None:
        for g, keep in zip(opt.param_groups, s.saved):
            g.update(keep)
        s.saved = None

    def epoch_end(self) -> None:
        """An epoch ended: the steps per epoch of each optimizer that stepped in its first one."""
        self.epoch += 1
        for _, s in self._opts.values():
            if s.spe is None and s.steps > s.epoch_start:
                s.spe = s.steps - s.epoch_start
                if self.plan.lr_shift > 0:
                    # from now on only the last K*spe + 1 user LRs are needed (the oldest is the one applied)
                    s.history = [deque(h, maxlen=self._kept(s)) for h in s.history]
                    self._applied("lr.shift")
            s.epoch_start = s.steps

    def _kept(self, s: _Optimizer) -> int:
        return self.plan.lr_shift * s.spe + 1

    def note(self) -> dict:
        """What meta.json notes under ``probe``."""
        return {"interventions": dict(self.plan.raw), "applied": sorted(self.applied), "framework": "torch"}


def _like(old, value: float):
    """``value`` in the form of the group's LR: a float, or a tensor of the same dtype and device (a tensor LR)."""
    if isinstance(old, (int, float)):
        return float(value)
    import torch

    return torch.tensor(value, dtype=old.dtype, device=old.device)


__all__ = ["TORCH_NAMES", "TorchIntervention"]

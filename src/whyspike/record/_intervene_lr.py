"""Keras pieces of the black-box interventions: LR schedule and callback wrappers (shift, hold, decay off, scale,
warmup), and array helpers for the data interventions. Used by :class:`whyspike.record._intervene.Intervener`."""

from __future__ import annotations

import sys

from ._intervene_plan import InterventionError, Plan, derived_seed


def _lr_names(plan: Plan) -> str:
    return ", ".join(f"{k}={plan.raw[k]}" for k in ("lr.shift", "lr.decay", "lr.hold", "lr.warmup") if k in plan.raw)


def _stretched_warmup(schedule, plan: Plan):
    """The same schedule with its warmup (``warmup_steps`` in its config, as Keras' CosineDecay has) F times longer;
    what follows the warmup starts that much later."""
    try:
        cfg = dict(schedule.get_config())
    except Exception:
        cfg = {}
    steps = cfg.get("warmup_steps")
    if not isinstance(steps, (int, float)) or steps <= 0:
        raise InterventionError(f"lr.warmup={plan.raw['lr.warmup']}: the schedule {type(schedule).__name__} has no "
                                "warmup (whyspike stretches the warmup_steps of Keras schedules such as CosineDecay)")
    cfg["warmup_steps"] = max(1, int(round(steps * plan.lr_warmup)))
    return type(schedule).from_config(cfg)


def _adapt_scheduler(cb, plan: Plan, factor: float) -> None:
    """A LearningRateScheduler's ``schedule(epoch, lr)`` shifted / held / switched off / scaled."""
    if getattr(cb, "_whyspike_adapted", False):
        return
    cb._whyspike_adapted = True
    orig = cb.schedule

    def call(epoch, lr):
        try:
            return orig(epoch, lr)
        except TypeError:  # the one-argument form Keras accepts too
            return orig(epoch)

    def schedule(epoch, lr=None):
        base = None if lr is None else lr / factor
        if plan.lr_decay_off or (plan.lr_hold is not None and epoch >= plan.lr_hold):
            out = base
        else:
            e = epoch - plan.lr_shift
            out = base if e < 0 else call(e, base)
        if out is None:
            out = call(0, base)
        return float(out) * factor

    cb.schedule = schedule


def _adapt_plateau(cb, plan: Plan, factor: float) -> None:
    if getattr(cb, "_whyspike_adapted", False):
        return
    cb._whyspike_adapted = True
    cb.min_lr = float(cb.min_lr) * factor
    if plan.lr_decay_off or plan.lr_hold is not None:
        orig = cb.on_epoch_end
        hold = 0 if plan.lr_decay_off else plan.lr_hold

        def on_epoch_end(epoch, logs=None):
            if epoch < hold:
                return orig(epoch, logs)
            return None

        cb.on_epoch_end = on_epoch_end


def _array_data(x) -> bool:
    if isinstance(x, dict):
        return bool(x) and all(_array_data(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return bool(x) and all(hasattr(v, "shape") for v in x)
    return hasattr(x, "shape") and len(getattr(x, "shape", ())) > 0


def _rows(x) -> int:
    if isinstance(x, dict):
        return _rows(next(iter(x.values())))
    if isinstance(x, (list, tuple)):
        return _rows(x[0])
    return int(x.shape[0])


def _take(a, order):
    if isinstance(a, dict):
        return {k: _take(v, order) for k, v in a.items()}
    if isinstance(a, (list, tuple)):
        return type(a)(_take(v, order) for v in a)
    if hasattr(a, "detach"):  # a torch tensor
        import torch

        return a[torch.as_tensor(order, device=a.device)]
    if hasattr(a, "iloc"):  # a pandas frame or series: rows by position
        return a.iloc[order]
    return a[order]


def _ensure_built(model, args: dict, what: str) -> None:
    """Create the weights of a model built lazily (no input shape given) by calling it on one row of fit's data."""
    if model.built and model.weights:
        return
    x = args.get("x")
    if not _array_data(x):
        raise InterventionError(f"{what}: the model has no weights before fit and fit was given a dataset, not "
                                "arrays — give the model an Input shape")
    try:
        model(_first_rows(x))
    except Exception as exc:
        raise InterventionError(f"{what}: the model has no weights before fit and calling it on one row failed "
                                f"({type(exc).__name__}: {exc})") from None


def _first_rows(x):
    if isinstance(x, dict):
        return {k: _first_rows(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_first_rows(v) for v in x)
    return x[:1]


def _all_layers(model) -> list:
    from .keras import _all_layers as layers

    return layers(model)


def _module(name: str):
    return sys.modules.get(name)


_SCHEDULE = None
_CALLBACK = None


def _schedule_class(keras):
    """``InterventionSchedule``: a LearningRateSchedule evaluating the wrapped one at a moved step, times a factor."""
    global _SCHEDULE
    if _SCHEDULE is not None:
        return _SCHEDULE

    class InterventionSchedule(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, inner, plan: Plan, factor: float):
            self.inner, self.plan, self.factor = inner, plan, float(factor)
            self.steps_per_epoch: int | None = None
            self._lr0 = None

        def __call__(self, step):
            ops = keras.ops
            plan = self.plan
            t = ops.convert_to_tensor(step)
            if plan.lr_decay_off:
                t = t * 0
            else:
                spe = self.steps_per_epoch
                if (plan.lr_hold is not None or plan.lr_shift) and not spe:
                    raise InterventionError("the steps per epoch are not known yet (fit with a generator and no "
                                            "steps_per_epoch?): the schedule cannot be moved by whole epochs")
                if plan.lr_hold is not None:
                    t = ops.minimum(t, plan.lr_hold * spe)
                if plan.lr_shift > 0:
                    t = ops.maximum(t - plan.lr_shift * spe, 0)
                elif plan.lr_shift < 0:
                    t = t + (-plan.lr_shift) * spe
            value = self.inner(t)
            return value * self.factor if self.factor != 1.0 else value

        def get_config(self):
            try:
                inner = dict(self.inner.get_config())
            except Exception:
                inner = {}
            if isinstance(inner.get("initial_learning_rate"), (int, float)):
                inner["initial_learning_rate"] = float(inner["initial_learning_rate"]) * self.factor
            inner["whyspike_wrapped"] = type(self.inner).__name__
            inner["whyspike_interventions"] = {k: v for k, v in self.plan.raw.items() if k != "branch"}
            inner["whyspike_lr_factor"] = self.factor
            inner["steps_per_epoch"] = self.steps_per_epoch
            return inner

    _SCHEDULE = InterventionSchedule
    return _SCHEDULE


def _callback_class(keras):
    """The callback that does the per-epoch part: steps per epoch to the schedule, data order, noise seeds."""
    global _CALLBACK
    if _CALLBACK is not None:
        return _CALLBACK

    class InterventionCallback(keras.callbacks.Callback):
        def __init__(self, intervener: Intervener, schedule, noise: list):
            super().__init__()
            self._iv, self._schedule, self._noise = intervener, schedule, noise
            self._script = None  # torch's generator state of the script's own stream, while ours is in place
            self._first = False
            self._epoch = 0

        def on_train_begin(self, logs=None):
            steps = (self.params or {}).get("steps")
            if self._schedule is not None:
                self._schedule.steps_per_epoch = int(steps) if steps else None
                plan = self._iv.plan
                if (plan.lr_shift or plan.lr_hold is not None) and not steps:
                    raise InterventionError(f"{_lr_names(plan)}: fit does not know its steps per epoch (a "
                                            "generator without steps_per_epoch): the schedule cannot be moved by "
                                            "whole epochs")

        # torch's global generator, on the torch backend, draws the data order of an epoch (when its first batch is
        # fetched) and then the masks of unseeded Dropout layers (torch's own dropout) step after step: seed.data
        # and seed.noise each replace one of the two, keyed by epoch, and the script's own stream goes on as if
        # neither had drawn from it
        def on_epoch_begin(self, epoch, logs=None):
            plan = self._iv.plan
            self._epoch = int(epoch)
            self._first = True
            data = plan.seed_data is not None and plan.shuffle != "fixed"
            if data or plan.seed_noise is not None:
                import torch

                self._script = torch.random.get_rng_state()
                if data:
                    torch.manual_seed(derived_seed("data", plan.seed_data, self._epoch))
            if self._noise:
                self._iv.reseed_noise(self._noise, self._epoch)  # layers with their own seed generators

        def on_train_batch_begin(self, batch, logs=None):
            if not self._first:
                return
            self._first = False
            plan = self._iv.plan
            data = plan.seed_data is not None and plan.shuffle != "fixed"
            if not (data or plan.seed_noise is not None):
                return
            import torch

            if not data:
                self._script = torch.random.get_rng_state()  # after the order was drawn from the script's stream
            if plan.seed_noise is not None:
                torch.manual_seed(derived_seed("noise", plan.seed_noise, "torch", self._epoch))
            else:
                torch.random.set_rng_state(self._script)

        def on_epoch_end(self, epoch, logs=None):
            plan = self._iv.plan
            if plan.seed_noise is not None and getattr(self, "_script", None) is not None:
                import torch

                torch.random.set_rng_state(self._script)
            self._script = None

    _CALLBACK = InterventionCallback
    return _CALLBACK

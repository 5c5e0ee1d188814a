"""Facts written once (or rarely) into meta.json: optimizer, schedule, model, data loader."""

from __future__ import annotations

import math
from typing import Any

from ._support import _t


def _json_safe(value: Any, depth: int = 0) -> Any:
    """Numbers, strings, bools, None and lists/dicts of them (a Counter becomes its sorted keys); else None."""
    torch = _t()
    if depth > 4:
        return None
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value if not isinstance(value, float) or math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [_json_safe(v, depth + 1) for v in value]
        return items if all(i is not None or v is None for i, v in zip(items, value)) else None
    if isinstance(value, dict):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()) and \
                all(isinstance(k, (int, float)) for k in value):
            return sorted(value)  # MultiStepLR's milestones are a Counter {epoch: count}
        out = {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None or value.get(k) is None}
    return None


def _unwrap_optimizer(opt):
    """The torch optimizer inside a Lightning / accelerate wrapper."""
    torch = _t()
    for _ in range(4):
        inner = getattr(opt, "optimizer", None) or getattr(opt, "_optimizer", None)
        if isinstance(inner, torch.optim.Optimizer) and inner is not opt:
            opt = inner
        else:
            break
    return opt


def _model_facts(model) -> dict:
    torch = _t()
    bn = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
          and m.track_running_stats]
    dropout = any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())
    params = list(model.parameters())
    return {"has_batchnorm": bool(bn), "batchnorm_layers": len(bn), "has_dropout": dropout,
            "n_params": int(sum(p.numel() for p in params)),
            "n_trainable_params": int(sum(p.numel() for p in params if p.requires_grad)),
            "model_class": type(model).__name__}


def _optimizer_facts(opt) -> dict:
    g = opt.param_groups[0]
    facts: dict[str, Any] = {"optimizer": type(opt).__name__,
                             "optimizer_defaults": _json_safe({k: v for k, v in opt.defaults.items()
                                                               if k != "params"})}
    lr = g.get("initial_lr", g.get("lr"))
    facts["learning_rate"] = _json_safe(lr)
    if "momentum" in g:
        facts["momentum"] = _json_safe(g["momentum"])
    elif "betas" in g:
        facts["momentum"] = _json_safe(g["betas"][0])
    if "weight_decay" in g:
        facts["weight_decay"] = _json_safe(g["weight_decay"])
    groups = [{k: _json_safe(v) for k, v in grp.items() if k != "params" and isinstance(v, (int, float, tuple))}
              for grp in opt.param_groups]
    if len(groups) > 1 and any(gr != groups[0] for gr in groups[1:]):
        facts["param_groups"] = groups
        facts["param_groups_note"] = ("the parameter groups differ; lr/momentum/weight_decay columns follow group 0 "
                                      f"of {len(groups)}")
    return facts


def _scheduler_facts(sched) -> dict:
    state = sched.state_dict() if hasattr(sched, "state_dict") else {}
    conf = {"class": type(sched).__name__}
    for k, v in state.items():
        if k.startswith("_") and k not in ("_step_count",):
            continue
        safe = _json_safe(v)
        if safe is not None:
            conf[k] = safe
    return conf


def _loader_facts(loader, known: dict) -> dict:
    facts = {}
    bs = getattr(loader, "batch_size", None)
    if isinstance(bs, int) and "batch_size" not in known:
        facts["batch_size"] = bs
    try:
        if "steps_per_epoch" not in known:
            facts["steps_per_epoch"] = len(loader)
        if "train_size" not in known:
            facts["train_size"] = len(loader.dataset)
    except (TypeError, AttributeError):
        pass
    return facts

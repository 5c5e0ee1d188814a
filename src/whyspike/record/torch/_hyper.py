"""What the recorder reads of an optimizer at each step: the hyper-parameters of parameter group 0 (LR, momentum
or betas, weight decay) and the list of parameters, with everything that does not change between steps cached."""

from __future__ import annotations

import operator


def _frozen(v):
    """A hyper-parameter value as it is now (a tensor LR is updated in place by schedulers: copy it)."""
    if isinstance(v, (int, float)):
        return v
    return v.detach().clone()


def _plain(v) -> bool:
    """Whether ``v`` is plain numbers (an int or float, or a tuple / list of them, nested once): values that equal
    themselves only while unchanged, and compare without a device."""
    if v.__class__ in (int, float, bool):
        return True
    return isinstance(v, (tuple, list)) and all(x.__class__ in (int, float, bool) or (
        isinstance(x, (tuple, list)) and all(y.__class__ in (int, float, bool) for y in x)) for x in v)


def hyper_columns(g: dict, suffix: str) -> tuple[tuple[str, str, int], ...]:
    """(column, group key, index in a tuple value or -1) for the hyper-parameters group ``g`` holds."""
    cols = [("lr" + suffix, "lr", -1)]
    if "momentum" in g:
        cols.append(("momentum" + suffix, "momentum", -1))
    elif "betas" in g:
        cols += [("beta1" + suffix, "betas", 0), ("beta2" + suffix, "betas", 1)]
    if "weight_decay" in g:
        cols.append(("weight_decay" + suffix, "weight_decay", -1))
    return tuple(cols)


class OptimizerView:
    """One optimizer as seen at each step: its parameters and, per column suffix, the hyper-parameter columns of
    its group 0. Refreshed when a parameter group is added or group 0 is replaced (``load_state_dict``)."""

    __slots__ = ("n_groups", "group0", "params", "ids", "fast_norm", "_cols", "values", "seen")

    def __init__(self, opt):
        groups = opt.param_groups
        self.n_groups = len(groups)
        self.group0 = groups[0]
        self.params = [p for g in groups for p in g["params"]]
        self.ids = {id(p) for p in self.params}
        # one device and dtype: torch._foreach_norm takes them all in one call (no grouping by device)
        self.fast_norm = len({(p.device, p.dtype) for p in self.params}) <= 1
        self._cols: dict[str, tuple] = {}
        # the hyper-parameter values of group 0 in one C call, and those last compared: while they are equal, nothing
        # changed (the per-step check of the common case; None when a value is a tensor: compared per column)
        self.values = operator.itemgetter(*dict.fromkeys(k for _, k, _ in hyper_columns(self.group0, "")))
        self.seen = None

    def current(self, opt) -> bool:
        groups = opt.param_groups
        return len(groups) == self.n_groups and groups[0] is self.group0

    def changed_hyper(self, suffix: str, last: dict) -> dict | None:
        """:meth:`read_hyper` into a new dict, or None when nothing changed (the common case: no row needed)."""
        g = self.group0
        cols = self._cols.get(suffix)
        if cols is None:
            cols = self._cols[suffix] = hyper_columns(g, suffix)
        out = None
        for col, key, i in cols:
            v = g[key]
            if i >= 0:
                v = v[i]
            cls = v.__class__
            if cls is float or cls is int:  # plain numbers: recorded when they change (an int 0 weight decay too)
                prev = last.get(col)
                if prev is v or prev == v:
                    continue
                last[col] = v
            else:
                v = _frozen(v)
                last.pop(col, None)
            if out is None:
                out = {}
            out[col] = v
        seen = self.values(g)
        self.seen = seen if _plain(seen) else None  # a tensor (an LR, betas) can change in place: compared per step
        return out

    def read_hyper(self, row: dict, suffix: str, last: dict) -> None:
        """Put group 0's hyper-parameters that changed since the last step into ``row`` (``last`` holds, per
        column, the number recorded last; the drain fills the steps in between, see ``StepBuffer.hyper``). Plain
        numbers are compared as they are, no tensor op; a tensor LR is copied every step (schedulers update it in
        place)."""
        changed = self.changed_hyper(suffix, last)
        if changed:
            row.update(changed)

"""What the recorder reads of an optimizer at each step: the hyper-parameters of parameter group 0 (LR, momentum
or betas, weight decay) and the list of parameters, with everything that does not change between steps cached."""

from __future__ import annotations


def _frozen(v):
    """A hyper-parameter value as it is now (a tensor LR is updated in place by schedulers: copy it)."""
    if isinstance(v, (int, float)):
        return v
    return v.detach().clone()


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

    __slots__ = ("n_groups", "group0", "params", "ids", "fast_norm", "_cols")

    def __init__(self, opt):
        groups = opt.param_groups
        self.n_groups = len(groups)
        self.group0 = groups[0]
        self.params = [p for g in groups for p in g["params"]]
        self.ids = {id(p) for p in self.params}
        # one device and dtype: torch._foreach_norm takes them all in one call (no grouping by device)
        self.fast_norm = len({(p.device, p.dtype) for p in self.params}) <= 1
        self._cols: dict[str, tuple] = {}

    def current(self, opt) -> bool:
        groups = opt.param_groups
        return len(groups) == self.n_groups and groups[0] is self.group0

    def read_hyper(self, row: dict, suffix: str, last: dict) -> None:
        """Put group 0's hyper-parameters that changed since the last step into ``row`` (``last`` holds, per
        column, the float recorded last; the drain fills the steps in between, see ``StepBuffer.hyper``). Plain
        floats are compared by identity, no tensor op; a tensor LR is copied every step (schedulers update it in
        place)."""
        g = self.group0
        cols = self._cols.get(suffix)
        if cols is None:
            cols = self._cols[suffix] = hyper_columns(g, suffix)
        for col, key, i in cols:
            v = g[key]
            if i >= 0:
                v = v[i]
            if v.__class__ is float:
                if last.get(col) is not v:
                    row[col] = last[col] = v
            else:
                row[col] = _frozen(v)
                last.pop(col, None)

"""SGD (momentum, Nesterov, weight decay), Adam and AdamW on R replicas' parameters at once.

All trainable parameters of all replicas live in one (R, P) tensor (replica-major, each parameter a view of it),
so an update is a dozen elementwise ops on that tensor whatever the model, and per-replica hyper-parameters are
(R, 1) columns. The arithmetic follows torch's single-tensor implementations operation by operation
(``torch/optim/sgd.py``, ``adam.py``): same formulas, same order, bias corrections in float64 as torch computes
them in Python; results agree with ``torch.optim`` to float32 rounding.
"""

from __future__ import annotations

from ._common import _t


class StackedOptimizer:
    """Optimizer state for the rows of ``flat`` (R, P); ``kind`` is 'sgd', 'adam' or 'adamw'."""

    def __init__(self, kind: str, cfgs: list, flat):
        torch = _t()
        self.kind = kind
        self.R = len(cfgs)
        dev, dt = flat.device, flat.dtype

        def col(vals, dtype=dt):
            return torch.tensor(vals, dtype=dtype, device=dev).view(-1, 1)

        def same(vals):
            """The common value when every replica has it (then torch's scalar code path is followed exactly)."""
            return vals[0] if all(v == vals[0] for v in vals) else None

        wd = [float(c.weight_decay) for c in cfgs]
        self.wd, self.wd64, self.wd_s = col(wd), col(wd, torch.float64), same(wd)
        self.any_wd = any(v != 0 for v in wd)
        if kind == "sgd":
            mom = [float(c.momentum) for c in cfgs]
            self.momentum, self.momentum_s = col(mom), same(mom)
            self.any_momentum = any(v != 0 for v in mom)
            self.nesterov = col([bool(c.nesterov) for c in cfgs], torch.bool)
            self.n_nesterov = sum(bool(c.nesterov) for c in cfgs)
            self.buf = torch.zeros_like(flat) if self.any_momentum else None
            self.has_buf = torch.zeros(len(cfgs), 1, dtype=torch.bool, device=dev)
            self.all_buf = False
        else:
            b1 = [float(c.betas[0]) for c in cfgs]
            b2 = [float(c.betas[1]) for c in cfgs]
            eps = [float(c.eps) for c in cfgs]
            self.beta1_s, self.beta2_s, self.eps_s = same(b1), same(b2), same(eps)
            self.one_minus_beta1 = col([1 - v for v in b1])
            self.beta2 = col(b2)
            self.one_minus_beta2 = col([1 - v for v in b2])
            self.beta1_64, self.beta2_64 = col(b1, torch.float64), col(b2, torch.float64)
            self.eps = col(eps)
            self.exp_avg = torch.zeros_like(flat)
            self.exp_avg_sq = torch.zeros_like(flat)
            self.step_count = torch.zeros(len(cfgs), 1, dtype=torch.float64, device=dev)
            self.step_s: float | None = 0.0  # the common step count, while all replicas share it

    # -- the update
    def step(self, flat, grad, lr32, lr64, lr_s: float | None = None) -> None:
        """One update of every row of ``flat`` with gradients ``grad`` (R, P) and learning rates (R, 1);
        ``lr_s`` is the common learning rate when all replicas have the same."""
        torch = _t()
        with torch.no_grad():
            if self.kind == "sgd":
                self._sgd(flat, grad, lr32, lr_s)
            else:
                self._adam(flat, grad, lr32, lr64, lr_s)

    def _sgd(self, flat, grad, lr32, lr_s) -> None:
        torch = _t()
        d = grad
        if self.any_wd:
            d = grad.add(flat, alpha=self.wd_s) if self.wd_s is not None else grad.add(flat * self.wd)
        if self.any_momentum:
            m = self.momentum_s if self.momentum_s is not None else self.momentum
            if self.all_buf:
                self.buf.mul_(m).add_(d)
            else:
                self.buf = torch.where(self.has_buf, self.buf * self.momentum + d, d)
                self.has_buf.fill_(True)
                self.all_buf = True
            if self.n_nesterov == self.R:
                d = d.add(self.buf, alpha=m) if self.momentum_s is not None else d.add(self.buf * m)
            elif self.n_nesterov:
                d = torch.where(self.nesterov, d + self.buf * self.momentum, self.buf)
            else:
                d = self.buf
        if lr_s is not None:
            flat.add_(d, alpha=-lr_s)
        else:
            flat.addcmul_(d, lr32, value=-1)

    def _adam(self, flat, grad, lr32, lr64, lr_s) -> None:
        self.step_count += 1
        if self.step_s is not None:
            self.step_s += 1
        if self.any_wd:
            if self.kind == "adamw":
                if lr_s is not None and self.wd_s is not None:
                    flat.mul_(1 - lr_s * self.wd_s)
                else:
                    flat.mul_((1 - lr64 * self.wd64).to(flat.dtype))
            else:
                grad = grad.add(flat, alpha=self.wd_s) if self.wd_s is not None else grad.add(flat * self.wd)
        scalar = (lr_s is not None and self.step_s is not None and self.beta1_s is not None
                  and self.beta2_s is not None and self.eps_s is not None)
        if scalar:  # torch's own arithmetic, operation for operation
            b1, b2 = self.beta1_s, self.beta2_s
            self.exp_avg.lerp_(grad, 1 - b1)
            self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            step_size = lr_s / (1 - b1 ** self.step_s)
            bias_correction2_sqrt = (1 - b2 ** self.step_s) ** 0.5
            denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps_s)
            flat.addcdiv_(self.exp_avg, denom, value=-step_size)
            return
        self.exp_avg.lerp_(grad, self.one_minus_beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad * self.one_minus_beta2, grad)
        bias_correction1 = 1 - self.beta1_64 ** self.step_count
        bias_correction2 = 1 - self.beta2_64 ** self.step_count
        step_size = (lr64 / bias_correction1).to(flat.dtype)
        denom = (self.exp_avg_sq.sqrt() / bias_correction2.sqrt().to(flat.dtype)).add_(self.eps)
        flat.addcmul_(self.exp_avg / denom, step_size, value=-1)

    # -- skipped steps: rows put back as they were
    def tensors(self) -> list:
        if self.kind == "sgd":
            return [self.buf, self.has_buf] if self.buf is not None else [self.has_buf]
        return [self.exp_avg, self.exp_avg_sq, self.step_count]

    def after_restore(self) -> None:
        if self.kind == "sgd":
            self.all_buf = bool(self.has_buf.all())
        else:
            self._sync_step()

    def _sync_step(self) -> None:
        first = float(self.step_count[0])
        self.step_s = first if bool((self.step_count == first).all()) else None

    # -- torch state_dict format, per replica
    def replica_state(self, r: int, views: list) -> list[dict]:
        """Per trainable parameter (``views``: (R, ...) views of the stacked tensor), the torch optimizer state
        of replica ``r``."""
        torch = _t()
        if self.kind == "sgd":
            if self.buf is None or not bool(self.has_buf[r]):
                return [{} for _ in views]
            return [{"momentum_buffer": self._view(self.buf, v)[r].detach().clone().cpu()} for v in views]
        step = torch.tensor(float(self.step_count[r]), dtype=torch.float32)
        if float(self.step_count[r]) == 0:
            return [{} for _ in views]
        return [{"step": step.clone(), "exp_avg": self._view(self.exp_avg, v)[r].detach().clone().cpu(),
                 "exp_avg_sq": self._view(self.exp_avg_sq, v)[r].detach().clone().cpu()} for v in views]

    def load_replica_state(self, r: int, states: list[dict | None], views: list) -> None:
        """Load replica ``r``'s torch per-parameter states (None / {} for a parameter without state)."""
        torch = _t()
        with torch.no_grad():
            if self.kind == "sgd":
                bufs = [s.get("momentum_buffer") if s else None for s in states]
                if self.buf is None or not any(b is not None for b in bufs):
                    return
                for b, v in zip(bufs, views):
                    self._view(self.buf, v)[r].copy_(b if b is not None else torch.zeros(()))
                self.has_buf[r] = True
                self.all_buf = bool(self.has_buf.all())
                return
            steps = [float(s["step"]) for s in states if s and "step" in s]
            if not steps:
                return
            self.step_count[r] = steps[0]
            self._sync_step()
            for s, v in zip(states, views):
                if s and "exp_avg" in s:
                    self._view(self.exp_avg, v)[r].copy_(s["exp_avg"])
                    self._view(self.exp_avg_sq, v)[r].copy_(s["exp_avg_sq"])

    @staticmethod
    def _view(state, param_view):
        """The part of a (R, P) state tensor that lies where ``param_view`` lies in the parameter tensor."""
        return state.as_strided(param_view.shape, param_view.stride(), param_view.storage_offset())

"""R replicas in one stacked training: one forward, one backward and one optimizer update per step for all.

Parameters of all replicas sit in one (R, P) tensor; the forward is ``vmap(functional_call)`` over the replica
dimension (any model; BatchNorm's running statistics are stacked (R, C) buffers that ``vmap`` updates in place per
replica), or, for plain ``nn.Sequential`` MLPs, the batched-GEMM fast path of ``_stacked``. Each replica gathers
its own batch (R, B, ...) from its own data order; per-replica hyper-parameters are (R, 1) columns of the stacked
optimizer (``_optim``); schedules are evaluated in Python once per distinct schedule per step; a skipped step puts
the skipping replicas' rows back (parameters, optimizer state, BN buffers). Replicas never mix: a replica whose
loss turns nan only poisons its own rows, and is reported as diverged from that step on while the others go on.

The semantics are those of the sequential engine (same data order, same dropout masks, torch's optimizer
formulas); the numbers agree with it to float32 rounding, not bit for bit (batched GEMMs sum in another order).
"""

from __future__ import annotations

import time

import numpy as np

from ..spec import TAG_GLOBAL, TAG_ORDER, ReplicaError, ReplicaResult, ReplicaSpec, TrainingSpec, first_epoch
from ..spec import epoch_orders, first_step, seed_key
from . import _noise
from ._common import _t, assemble, build_model, dropout_key, is_classification, one_thread, schedule_value
from ._common import seed_global
from ._common import usable_optimizer_state
from ._optim import StackedOptimizer
from ._stacked import compile_stacked


class VectorizeError(Exception):
    """The group cannot be trained stacked (the caller falls back to the sequential engine, or reports it)."""


def group_key(cfg: TrainingSpec, replica: ReplicaSpec) -> tuple:
    """Replicas with equal keys can share one stacked training: same model (transform), batching, optimizer
    family, loss and starting point; everything else may differ per replica."""
    return (id(cfg.model_transform), cfg.batch_size, cfg.optimizer, cfg.epochs, cfg.drop_last, cfg.loss,
            first_epoch(replica), first_step(replica, cfg), cfg.device)


def train_group(items: list[tuple[ReplicaSpec, TrainingSpec]], force_vmap: bool = False) -> list[ReplicaResult]:
    """Train ``items`` (replica, its resolved spec; all with the same ``group_key``) as one stacked training.
    A replica whose own setup fails (a start state that does not fit, ...) comes back with ``error``; a failure of
    the stacked training itself (``VectorizeError``, an op ``vmap`` cannot batch, ...) raises."""
    t0 = time.perf_counter()
    with one_thread(), _noise.hashed_dropout():
        group = _Group(items, force_vmap)
        results = group.train(t0) if group.items else []
    out: dict[int, ReplicaResult] = {id(r): res for r, res in group.failed}
    for (replica, _), res in zip(group.items, results):
        out[id(replica)] = res
    return [out[id(r)] for r, _ in items]


class _Group:
    def __init__(self, items, force_vmap: bool):
        from ._common import error_result, one_line

        torch = _t()
        self.failed: list = []
        self.items: list = []
        models = []
        for replica, cfg in items:
            try:
                model = build_model(cfg, replica, "cpu")
                usable_optimizer_state(cfg, replica.start, len(list(model.parameters())))  # fits, or raises
                models.append(model)
                self.items.append((replica, cfg))
            except Exception as exc:  # this replica's own problem: the rest of the group goes on
                self.failed.append((replica, error_result(replica, one_line(exc), 0.0, "vectorized")))
        if not self.items:
            return
        cfg0 = self.items[0][1]
        self.cfg0 = cfg0
        self.device = torch.device(cfg0.device)
        template = models[0]
        names = [(n, tuple(p.shape)) for n, p in template.named_parameters()]
        bnames = [(n, tuple(b.shape)) for n, b in template.named_buffers()]
        keep = []
        for (replica, cfg), m in zip(self.items, models):
            if [(n, tuple(p.shape)) for n, p in m.named_parameters()] != names or \
                    [(n, tuple(b.shape)) for n, b in m.named_buffers()] != bnames:
                self.failed.append((replica, error_result(
                    replica, "its model has other parameters than the first replica's: cannot be stacked",
                    0.0, "vectorized")))
            else:
                keep.append(((replica, cfg), m))
        self.items = [it for it, _ in keep]
        models = [m for _, m in keep]
        R = self.R = len(models)
        dev = self.device

        # parameters: trainable ones as views of one (R, P) tensor, frozen ones stacked aside
        self.param_names = [n for n, _ in template.named_parameters()]
        trainable = [(n, p) for n, p in template.named_parameters() if p.requires_grad]
        if len({p.dtype for _, p in trainable}) > 1:
            raise VectorizeError("trainable parameters of several dtypes cannot share one stacked tensor")
        sizes = [p.numel() for _, p in trainable]
        P = sum(sizes)
        flat = torch.empty(R, P, dtype=trainable[0][1].dtype if trainable else torch.float32)
        with torch.no_grad():
            for r, m in enumerate(models):
                ps = dict(m.named_parameters())
                if trainable:
                    flat[r] = torch.cat([ps[n].detach().reshape(-1) for n, _ in trainable])
        self.flat = flat.to(dev)
        self.views, self.leaves = [], {}
        off = 0
        for (n, p), k in zip(trainable, sizes):
            v = self.flat[:, off:off + k].view(R, *p.shape)
            self.views.append(v)
            self.leaves[n] = v.detach().requires_grad_(True)
            off += k
        self.trainable = [n for n, _ in trainable]
        self.frozen = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).to(dev)
                       for n, p in template.named_parameters() if not p.requires_grad}
        self.buffers = {n: torch.stack([dict(m.named_buffers())[n].detach() for m in models]).to(dev)
                        for n, _ in template.named_buffers()}

        # optimizer, with branch states
        cfgs = [cfg for _, cfg in self.items]
        self.opt = StackedOptimizer(cfg0.optimizer, cfgs, self.flat)
        index = {n: i for i, n in enumerate(self.param_names)}
        for r, (replica, cfg) in enumerate(self.items):
            osd = usable_optimizer_state(cfg, replica.start, len(self.param_names))
            if osd is not None:
                states = osd["state"]
                ids = [i for g in osd["param_groups"] for i in g["params"]]
                per_param = [states.get(ids[index[n]]) for n in self.trainable]
                self.opt.load_replica_state(r, per_param, self.views)

        # the forward
        self.template = template.to(dev)
        x = cfg0.train_x
        self.net = None if force_vmap else compile_stacked(template, tuple(x.shape[1:]), cfg0.loss, cfg0.train_y.dim())
        if self.net is None:
            self._vmap_setup()

    # ------------------------------------------------------------------------------------------ forward passes
    def _vmap_setup(self) -> None:
        torch = _t()
        from torch.func import functional_call, vmap

        base = self.template

        def fwd(params, buffers, seeds, x):
            with _noise.replica_seeds(seeds):
                return functional_call(base, (params, buffers), (x,))

        def fwd_eval(params, buffers, x):
            return functional_call(base, (params, buffers), (x,))

        self._vtrain = vmap(fwd, in_dims=(0, 0, 0, 0), randomness="different")
        self._veval = vmap(fwd_eval, in_dims=(0, 0, None), randomness="different")
        self._torch = torch

    def _params(self) -> dict:
        return {**self.leaves, **self.frozen}

    def forward_train(self, x, seeds_vec):
        self.template.train()
        return self._vtrain(self._params(), self.buffers, seeds_vec, x)

    def forward_eval(self, x):
        torch = _t()
        with torch.no_grad():
            if self.net is not None:
                return self.net.eval(self._params(), self.buffers, x)
            self.template.eval()
            try:
                return self._veval(self._params(), self.buffers, x)
            finally:
                self.template.train()

    def losses(self, out, y):
        """Per-replica mean loss and accuracy (R,) of stacked outputs against stacked targets."""
        torch = _t()
        F = torch.nn.functional
        cd = self.net.class_dim if self.net is not None else 2
        if is_classification(self.cfg0):
            logits = out if cd == 1 else out.movedim(2, 1)
            per = F.cross_entropy(logits, y, reduction="none").flatten(1).mean(1)
            acc = (logits.detach().max(1).indices == y).float().flatten(1).mean(1)  # max: 10x faster than argmax here
            return per, acc
        if cd == 1:
            per = F.mse_loss(out, y.transpose(1, 2), reduction="none").flatten(1).mean(1)
        else:  # per replica exactly as F.mse_loss(out, y) broadcasts the user's shapes
            per = torch.func.vmap(F.mse_loss)(out, y)
        return per, torch.full_like(per, float("nan"))

    # ------------------------------------------------------------------------------------------ training
    def train(self, t0: float) -> list[ReplicaResult]:
        torch = _t()
        cfg0, R, dev = self.cfg0, self.R, self.device
        replicas = [r for r, _ in self.items]
        cfgs = [c for _, c in self.items]
        epochs = list(range(first_epoch(replicas[0]), cfg0.epochs))
        E = len(epochs)
        X, Y = cfg0.train_x.to(dev), cfg0.train_y.to(dev)
        VX = cfg0.val_x.to(dev) if cfg0.val_x is not None else None
        VY = cfg0.val_y.to(dev) if cfg0.val_y is not None else None
        n, bs, spe = cfg0.n_train, cfg0.batch_size, cfg0.steps_per_epoch

        # schedules: one call per distinct schedule per step; slot 0 = no schedule
        slots: dict[int, int] = {}
        fns = [None]
        for c in cfgs:
            if c.schedule is not None and id(c.schedule) not in slots:
                slots[id(c.schedule)] = len(fns)
                fns.append(c.schedule)
        slot_of = np.array([slots[id(c.schedule)] if c.schedule is not None else 0 for c in cfgs])
        slot_index = torch.tensor(slot_of, dtype=torch.long, device=dev)
        lr_base = np.array([c.lr for c in cfgs], dtype=np.float64)
        lr_base64 = torch.tensor(lr_base, dtype=torch.float64, device=dev).view(R, 1)
        skips = [r.skip_steps for r in replicas]
        any_skip = frozenset().union(*skips)
        shuffled = [bool(c.shuffle) for c in cfgs]
        seeds_vec = torch.tensor([dropout_key(r) for r in replicas], dtype=torch.int64, device=dev)
        seeds_col = seeds_vec.view(R, 1, 1)
        global_seed = seed_key(TAG_GLOBAL, *[r.noise_seed for r in replicas])
        order_seeds = torch.tensor([[seed_key(TAG_ORDER, r.data_seed)] for r in replicas], dtype=torch.int64,
                                   device=dev)
        leaves = [self.leaves[nm] for nm in self.trainable]
        need = frozenset(self.trainable)

        losses = np.full((E, spe, R), np.nan)
        accs = np.full((E, spe, R), np.nan)
        taken = np.zeros((E, spe, R), dtype=bool)
        val = np.full((E, 2, R), np.nan) if VX is not None else None
        lr = np.full((E, R), np.nan)
        checkpoints: list[dict] = [{} for _ in range(R)]
        dead = np.zeros(R, dtype=bool)
        g0 = g = first_step(replicas[0], cfg0)
        mults_prev = None
        lr32 = lr64 = lr_s = None
        for i, epoch in enumerate(epochs):
            perms = epoch_orders(order_seeds, epoch, n)
            if not all(shuffled):
                perms[torch.tensor([not v for v in shuffled], device=dev)] = torch.arange(n, device=dev)
            seed_global(global_seed + epoch, dev)
            # per-epoch copies of each replica's shuffled data when small: a step's batch is then a view
            pre = R * n * (X[0].numel() + Y[0].numel()) <= (1 << 26)
            if pre:
                Xp, Yp = X[perms], Y[perms]
            step_losses, step_accs, ran = [], [], []
            mults = [1.0]
            for s in range(spe):
                mults = [1.0] + [schedule_value(fn, g, epoch) for fn in fns[1:]]
                if mults != mults_prev:
                    m = torch.tensor(mults, dtype=torch.float64, device=dev)[slot_index].view(R, 1)
                    lr64 = lr_base64 * m
                    lr32 = lr64.to(self.flat.dtype)
                    lrs = lr_base * np.asarray(mults)[slot_of]
                    lr_s = float(lrs[0]) if (lrs == lrs[0]).all() else None
                    mults_prev = mults
                rows = [r for r in range(R) if g in skips[r]] if g in any_skip else []
                if len(rows) == R:
                    g += 1
                    continue
                if pre:
                    x, y = Xp[:, s * bs:(s + 1) * bs], Yp[:, s * bs:(s + 1) * bs]
                else:
                    idx = perms[:, s * bs:(s + 1) * bs]
                    x, y = X[idx], Y[idx]
                snap = self._snapshot(rows) if rows else None
                _noise.set_step(seeds_col, g)
                if self.net is not None:
                    loss_r, acc_r, gd = self.net.train_step(self._params(), self.buffers, x, y, cfg0.loss, need)
                    grads = [gd.get(nm) for nm in self.trainable]
                else:
                    out = self.forward_train(x, seeds_vec)
                    loss_r, acc_r = self.losses(out, y)
                    grads = torch.autograd.grad(loss_r.sum(), leaves, allow_unused=True) if leaves else []
                _noise.stop()
                if any(gr is None for gr in grads):
                    raise VectorizeError("a trainable parameter got no gradient (unused in forward): torch's "
                                         "optimizers skip it, the stacked update would not")
                if grads:
                    gflat = torch.cat([gr.reshape(R, -1) for gr in grads], 1)
                    self.opt.step(self.flat, gflat, lr32, lr64, lr_s)
                if snap is not None:
                    self._restore(rows, snap)
                taken[i, s] = True
                if rows:
                    taken[i, s, rows] = False
                step_losses.append(loss_r.detach())
                step_accs.append(acc_r)
                ran.append(s)
                g += 1
            lr[i] = lr_base * np.asarray(mults)[slot_of]
            if ran:
                losses[i, ran] = torch.stack(step_losses).double().cpu().numpy()
                accs[i, ran] = torch.stack(step_accs).double().cpu().numpy()
            dead |= (taken[i] & ~np.isfinite(losses[i])).any(0)
            if val is not None:
                val[i] = self._validate(VX, VY)
            for r, rep in enumerate(replicas):
                if epoch in rep.checkpoint_epochs and not dead[r]:
                    checkpoints[r][epoch] = self._checkpoint(r, cfgs[r], epoch, g)
            if dead.all():  # every replica diverged: the schedule alone still says what the LR would have been
                for j in range(i + 1, E):
                    g += spe
                    lr[j] = [c.lr * schedule_value(c.schedule, g - 1, epochs[j]) for c in cfgs]
                break
        per = (time.perf_counter() - t0) / R
        return [assemble(rep, epochs, g0, losses[:, :, r], accs[:, :, r], taken[:, :, r],
                         None if val is None else val[:, :, r], lr[:, r], per, "vectorized", checkpoints[r])
                for r, rep in enumerate(replicas)]

    def _validate(self, VX, VY):
        torch = _t()
        out = self.forward_eval(VX)
        y = VY.unsqueeze(0).expand(self.R, *VY.shape)
        with torch.no_grad():
            loss, acc = self.losses(out, y)
        return torch.stack([loss, acc]).double().cpu().numpy()

    # ------------------------------------------------------------------------------------------ skipped steps
    def _state_tensors(self) -> list:
        return [self.flat, *self.buffers.values(), *self.opt.tensors()]

    def _snapshot(self, rows: list[int]):
        torch = _t()
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        return idx, [t.index_select(0, idx).clone() for t in self._state_tensors()]

    def _restore(self, rows, snap) -> None:
        torch = _t()
        idx, saved = snap
        with torch.no_grad():
            for t, s in zip(self._state_tensors(), saved):
                t.index_copy_(0, idx, s)
        self.opt.after_restore()

    # ------------------------------------------------------------------------------------------ checkpoints
    def _checkpoint(self, r: int, cfg: TrainingSpec, epoch: int, g: int) -> dict:
        """Replica ``r``'s state in the shape ``ReplicaSpec.start`` takes (torch state_dict formats)."""
        from ._common import make_optimizer

        torch = _t()
        params = {**{n: v for n, v in zip(self.trainable, self.views)}, **self.frozen}
        sd = {}
        for key in self.template.state_dict().keys():
            src = params.get(key, self.buffers.get(key))
            if src is None:
                raise ReplicaError(f"cannot checkpoint {key}: not a parameter or buffer of the stacked model")
            sd[key] = src[r].detach().clone().cpu()
        dummies = [torch.nn.Parameter(torch.zeros(tuple(self.template.get_parameter(n).shape)))
                   for n in self.param_names]
        opt = make_optimizer(cfg, dummies)
        states = self.opt.replica_state(r, self.views)
        by_name = dict(zip(self.trainable, states))
        for n, p in zip(self.param_names, dummies):
            st = by_name.get(n)
            if st:
                opt.state[p] = st
        osd = opt.state_dict()
        return {"epoch": epoch, "step": g, "model": sd, "optimizer": osd}

"""The probe training engines on tiny real trainings, against independent ground truth: a hand-written PyTorch loop,
a pure-Python hash, torch's own optimizers, and each engine against the other."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from whyspike.errors import UsageError  # noqa: E402
from whyspike.probe import ReplicaResult, ReplicaSpec, TrainingSpec, epoch_order, run_replicas  # noqa: E402
from whyspike.probe.spec import mix64, mix64_tensor  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def data(n=160, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, classes, generator=g)
    x = torch.randn(n, d, generator=g)
    y = (x @ w + 0.5 * torch.randn(n, classes, generator=g)).argmax(1)
    return x, y


X, Y = data()
VX, VY = data(n=48, seed=1)


def mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def mlp_bn_dropout():
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def mlp_other_layers():
    """Layers the fast path differentiates by formula (Tanh, LeakyReLU) and locally by autograd (ELU in place,
    GELU, LogSoftmax)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 12), nn.ELU(inplace=True), nn.Linear(12, 12), nn.Tanh(),
                         nn.Linear(12, 8), nn.LeakyReLU(0.1), nn.GELU(), nn.Linear(8, 3), nn.LogSoftmax(dim=1))


class CustomNet(nn.Module):
    """A model with its own forward: the vectorized engine must take the vmap path for it."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.drop, self.b = nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Dropout(0.3), nn.Linear(16, 3)

    def forward(self, x):
        return self.b(self.drop(F.relu(self.bn(self.a(x)))))


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))


def step_decay(step, epoch):
    return 0.5 ** (epoch // 2)


def spec_for(model_fn, **kw):
    base = dict(train_x=X, train_y=Y, val_x=VX, val_y=VY, optimizer="sgd", lr=0.05, momentum=0.9, epochs=4,
                batch_size=16)
    base.update(kw)
    return TrainingSpec(model_fn, **base)


def exactly_equal(a: ReplicaResult, b: ReplicaResult) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True)
               for k in ("epochs", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "step_loss", "steps",
                         "lr"))


# ------------------------------------------------------------------------------------------ randomness
def reference_splitmix_finaliser(x: int) -> int:
    """splitmix64's finaliser written out on unsigned Python ints (Vigna's reference constants)."""
    x &= (1 << 64) - 1
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    return x ^ (x >> 31)


def test_hash_on_tensors_equals_the_reference_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    values = torch.randint(-(2 ** 62), 2 ** 62, (2000,), generator=g, dtype=torch.int64) * 2 + 1
    got = mix64_tensor(values).tolist()
    want = [reference_splitmix_finaliser(v) for v in values.tolist()]
    assert [v % (1 << 64) for v in got] == want
    assert [mix64(v) % (1 << 64) for v in values.tolist()[:50]] == want[:50]


def test_epoch_order_is_a_uniform_permutation_of_seed_and_epoch_only():
    n = 10
    orders = [epoch_order(seed, epoch, n) for seed in range(40) for epoch in range(25)]
    assert all(sorted(o.tolist()) == list(range(n)) for o in orders)
    assert torch.equal(epoch_order(7, 3, n), epoch_order(7, 3, n))
    assert not torch.equal(epoch_order(7, 3, n), epoch_order(7, 4, n))
    assert not torch.equal(epoch_order(7, 3, n), epoch_order(8, 3, n))
    # where sample 0 lands over 1000 permutations: chi-square against uniform, 9 d.o.f. (p = 0.001 at 27.9)
    counts = np.bincount([int((o == 0).nonzero()) for o in orders], minlength=n)
    chi2 = float(((counts - 100.0) ** 2 / 100.0).sum())
    assert chi2 < 27.9, counts


def test_dropout_masks_keep_the_right_fraction_and_scale():
    from whyspike.probe.engines import _noise

    keep, x = 0.7, torch.ones(4000, 8)
    layer = nn.Dropout(1 - keep).train()
    with _noise.hashed_dropout():
        _noise.set_step(torch.tensor(123, dtype=torch.int64), 5)
        out = layer(x)
        _noise.set_step(torch.tensor(123, dtype=torch.int64), 5)
        again = layer(x)
        _noise.set_step(torch.tensor(124, dtype=torch.int64), 5)
        other = layer(x)
        _noise.stop()
        outside = layer.eval()(x)
    assert torch.equal(outside, x)
    kept = (out != 0).double().mean().item()
    assert abs(kept - keep) < 4 * math.sqrt(keep * (1 - keep) / out.numel())
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / keep))
    assert torch.equal(out, again) and not torch.equal(out, other)


# ------------------------------------------------------------------------------------------ sequential engine
def hand_written_training(model_fn, init_seed, data_seed, epochs, bs, make_opt, schedule, skip=()):
    """The loop a user would write, with whyspike's data order: the independent ground truth."""
    torch.manual_seed(init_seed)
    model = model_fn()
    opt = make_opt(model.parameters())
    base_lr = opt.param_groups[0]["lr"]
    losses, g = [], 0
    for epoch in range(epochs):
        order = epoch_order(data_seed, epoch, len(X))
        for s in range(-(-len(X) // bs)):
            lr = base_lr * schedule(g, epoch)
            if g in skip:
                g += 1
                continue
            idx = order[s * bs:(s + 1) * bs]
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad()
            loss = F.cross_entropy(model(X[idx]), Y[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
            g += 1
    return np.array(losses)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_sequential_engine_is_the_hand_written_loop_bit_for_bit(optimizer):
    kw = {"sgd": dict(momentum=0.9, nesterov=True, weight_decay=1e-3), "adam": dict(momentum=0.0, weight_decay=1e-3),
          "adamw": dict(momentum=0.0, weight_decay=1e-2, betas=(0.8, 0.99), eps=1e-6)}[optimizer]
    spec = spec_for(mlp, optimizer=optimizer, schedule=step_decay, **kw)
    rep = ReplicaSpec(init_seed=3, data_seed=5, skip_steps=frozenset({4, 11}))
    res = run_replicas(spec, [rep], engine="sequential")[0]
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
            "adam": lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=1e-3),
            "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=1e-2, betas=(0.8, 0.99), eps=1e-6)}
    want = hand_written_training(mlp, 3, 5, 4, 16, make[optimizer], step_decay, skip={4, 11})
    assert res.error is None
    assert np.array_equal(res.step_loss, want)
    assert 4 not in res.steps and 11 not in res.steps and len(res.steps) == 4 * 10 - 2
    assert np.allclose(res.lr, 0.05 * np.array([1, 1, 0.5, 0.5]))


def test_sequential_engine_is_deterministic():
    spec = spec_for(mlp_bn_dropout, schedule=step_decay)
    rep = ReplicaSpec(init_seed=1, data_seed=2, noise_seed=3)
    a, b = run_replicas(spec, [rep, rep], engine="sequential")
    assert exactly_equal(a, b)


# ------------------------------------------------------------------------------------------ branching
@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
@pytest.mark.parametrize("model_fn", [mlp_bn_dropout, CustomNet], ids=["fast-path", "vmap-path"])
def test_branch_from_a_checkpoint_reproduces_the_later_epochs_bit_for_bit(engine, model_fn):
    spec = spec_for(model_fn, epochs=5, schedule=step_decay)
    reps = [ReplicaSpec(f"s{i}", init_seed=i, data_seed=10 + i, noise_seed=20 + i, checkpoint_epochs=frozenset({1}))
            for i in range(3)]
    base = run_replicas(spec, reps, engine=engine)
    branches = [ReplicaSpec(r.name + "-branch", init_seed=r.init_seed, data_seed=r.data_seed, noise_seed=r.noise_seed,
                            start=b.checkpoints[1]) for r, b in zip(reps, base)]
    # the branch of replica 2 trained alone (a group of one in the vectorized engine) and in a group of three
    for got, want in [(run_replicas(spec, branches, engine=engine), base),
                      (run_replicas(spec, branches[2:], engine=engine), base[2:])]:
        for g, w in zip(got, want):
            assert g.error is None and g.engine == engine
            assert list(g.epochs) == [2, 3, 4]
            for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
                assert np.array_equal(getattr(g, key), getattr(w, key)[2:]), key
            assert np.array_equal(g.step_loss, w.step_loss[w.steps >= g.steps[0]])


def test_a_branch_takes_its_hyper_parameters_from_the_replica_not_the_checkpoint():
    spec = spec_for(mlp, epochs=4)
    base = run_replicas(spec, [ReplicaSpec(checkpoint_epochs=frozenset({1}))], engine="sequential")[0]
    frozen = ReplicaSpec("lr0", start=base.checkpoints[1], overrides={"lr": 0.0})
    for engine in ("sequential", "vectorized"):
        res = run_replicas(spec, [frozen], engine=engine)[0]
        # lr 0: the weights stay those of the checkpoint, whatever its optimizer state says
        assert res.error is None and np.allclose(res.val_loss, base.val_loss[1], rtol=0, atol=1e-6), engine
    moving = run_replicas(spec, [ReplicaSpec("go-on", start=base.checkpoints[1])], engine="sequential")[0]
    assert not np.allclose(moving.val_loss, base.val_loss[1], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------ vectorized engine
def varied_replicas():
    return [ReplicaSpec("a", init_seed=1, data_seed=2, noise_seed=3),
            ReplicaSpec("b", init_seed=1, data_seed=2, noise_seed=4, overrides={"lr": 0.1, "nesterov": True}),
            ReplicaSpec("c", init_seed=5, skip_steps=frozenset({3, 4, 20}),
                        overrides={"momentum": 0.0, "weight_decay": 1e-3}),
            ReplicaSpec("d", init_seed=6, overrides={"shuffle": False}, schedule=lambda s, e: 1.0 / (1 + s / 50))]


@pytest.mark.parametrize("model_fn,x_shape", [(mlp_bn_dropout, None), (mlp_other_layers, None), (CustomNet, None),
                                              (TinyConv, (1, 8, 8))],
                         ids=["fast-path", "fast-path-activations", "vmap-path", "vmap-conv-bn2d"])
def test_vectorized_matches_sequential_to_float32_rounding(model_fn, x_shape):
    kw = {}
    if x_shape:
        g = torch.Generator().manual_seed(4)
        kw = dict(train_x=torch.randn(96, *x_shape, generator=g), train_y=torch.randint(0, 3, (96,), generator=g),
                  val_x=torch.randn(32, *x_shape, generator=g), val_y=torch.randint(0, 3, (32,), generator=g),
                  epochs=3)
    spec = spec_for(model_fn, schedule=step_decay, **kw)
    reps = varied_replicas()
    seq = run_replicas(spec, reps, engine="sequential")
    vec = run_replicas(spec, reps, engine="vectorized")
    worst = 0.0
    for s, v in zip(seq, vec):
        assert s.error is None and v.error is None and v.engine == "vectorized"
        assert np.array_equal(s.steps, v.steps) and np.array_equal(s.lr, v.lr)
        for key in ("step_loss", "train_loss", "val_loss"):
            worst = max(worst, float(np.max(np.abs(getattr(s, key) - getattr(v, key)))))
        assert np.max(np.abs(s.val_accuracy - v.val_accuracy)) <= 1.5 / len(spec.val_y)
    print(f"max |vectorized - sequential| = {worst:.2e}")
    assert worst < 2e-5


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_stacked_optimizer_follows_torch_in_float64(optimizer):
    """In float64 the only differences left are summation orders: the optimizer arithmetic must be torch's."""
    kw = {"sgd": dict(momentum=0.9, weight_decay=1e-3), "adam": dict(momentum=0.0, weight_decay=1e-3),
          "adamw": dict(momentum=0.0, weight_decay=1e-2)}[optimizer]
    spec = spec_for(lambda: mlp().double(), train_x=X.double(), val_x=VX.double(), optimizer=optimizer, epochs=3, **kw)
    reps = [ReplicaSpec("a", init_seed=1), ReplicaSpec("b", init_seed=2, overrides={"lr": 0.02})]
    if optimizer == "sgd":
        reps.append(ReplicaSpec("c", init_seed=3, overrides={"momentum": 0.5, "nesterov": True}))
    else:
        reps.append(ReplicaSpec("c", init_seed=3, overrides={"betas": (0.8, 0.95), "eps": 1e-6}))
    seq = run_replicas(spec, reps, engine="sequential")
    vec = run_replicas(spec, reps, engine="vectorized")
    for s, v in zip(seq, vec):
        assert np.max(np.abs(s.step_loss - v.step_loss)) < 1e-12


def test_checkpoints_are_torch_state_dicts_both_engines_can_branch_from():
    spec = spec_for(mlp, epochs=4)
    rep = ReplicaSpec(init_seed=2, checkpoint_epochs=frozenset({1}))
    seq = run_replicas(spec, [rep], engine="sequential")[0]
    vec = run_replicas(spec, [rep, ReplicaSpec("other", init_seed=9)], engine="vectorized")[0]
    ck_s, ck_v = seq.checkpoints[1], vec.checkpoints[1]
    assert ck_s["step"] == ck_v["step"] == 20 and ck_v["epoch"] == 1
    model = mlp()
    model.load_state_dict(ck_v["model"])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt.load_state_dict(ck_v["optimizer"])
    for p_s, p_v in zip(ck_s["optimizer"]["state"].values(), opt.state_dict()["state"].values()):
        assert torch.allclose(p_s["momentum_buffer"], p_v["momentum_buffer"], atol=1e-5)
    cross = run_replicas(spec, [ReplicaSpec("from-vectorized", init_seed=2, start=ck_v)], engine="sequential")[0]
    assert np.max(np.abs(cross.val_loss - seq.val_loss[2:])) < 1e-5


def test_a_diverging_replica_is_reported_and_the_others_go_on():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.randn(4, 2, generator=g)
    spec = TrainingSpec(lambda: nn.Linear(4, 2), x, y, val_x=x, val_y=y, loss="mse", lr=0.05, epochs=4, batch_size=16)
    reps = [ReplicaSpec("ok", init_seed=1), ReplicaSpec("boom", init_seed=1, overrides={"lr": 30.0}),
            ReplicaSpec("ok2", init_seed=2)]
    seq = run_replicas(spec, reps, engine="sequential")
    vec = run_replicas(spec, reps, engine="vectorized")
    for res in (seq, vec):
        ok, boom, ok2 = res
        assert boom.diverged and not ok.diverged and not ok2.diverged
        assert not np.isfinite(boom.step_loss[-1]) and np.isfinite(boom.step_loss[:-1]).all()
        first_bad_epoch = int(boom.steps[-1]) // 4
        assert np.isnan(boom.train_loss[first_bad_epoch:]).all() and np.isnan(boom.val_loss[first_bad_epoch:]).all()
        assert np.isfinite(boom.train_loss[:first_bad_epoch]).all()
        assert np.isnan(ok.train_accuracy).all()  # mse: no accuracy
    assert np.array_equal(seq[1].steps, vec[1].steps)
    for s, v in zip(seq[::2], vec[::2]):
        assert np.max(np.abs(s.val_loss - v.val_loss)) < 1e-5


# ------------------------------------------------------------------------------------------ bad input, grouping, API
def test_replicas_that_cannot_run_say_why_and_the_rest_run():
    spec = spec_for(mlp, optimizer="adam", momentum=0.0, epochs=2)
    calls = []

    def crashing():
        raise RuntimeError("no GPU memory left")

    reps = [ReplicaSpec("momentum", overrides={"momentum": 0.5}), ReplicaSpec("typo", overrides={"learning_rate": 1}),
            ReplicaSpec("betas", overrides={"betas": (1.2, 0.9)}), ReplicaSpec("fine", init_seed=1),
            ReplicaSpec("crash", model_transform=lambda m: crashing()),
            ReplicaSpec("bad-start", start={"epoch": 0, "step": 10, "model": {"nope": torch.zeros(1)}}),
            ReplicaSpec("fine2", init_seed=2)]
    for engine in ("auto", "sequential", "vectorized"):
        calls.clear()
        res = run_replicas(spec, reps, engine=engine, progress=lambda d, t: calls.append((d, t)))
        assert calls[0] == (0, 7) and calls[-1] == (7, 7) and all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
        err = {r.name: r.error for r in res}
        assert err["momentum"].startswith("momentum=0.5 but optimizer adam has no momentum")
        assert "unknown override 'learning_rate'" in err["typo"]
        assert "betas" in err["betas"]
        assert err["crash"] == "RuntimeError: no GPU memory left"
        assert "start model state does not fit" in err["bad-start"]
        assert err["fine"] is None and err["fine2"] is None
        assert len(res[3].train_loss) == 2
    with pytest.raises(UsageError):
        run_replicas(spec, reps, engine="fastest")


class NeedsItem(nn.Module):
    """A forward vmap cannot run (a data-dependent Python branch)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x):
        out = self.lin(x)
        return out * 2 if out.sum().item() > 1e9 else out


def test_auto_falls_back_to_sequential_and_groups_what_can_be_stacked():
    spec = spec_for(NeedsItem, epochs=1)
    res = run_replicas(spec, [ReplicaSpec("a"), ReplicaSpec("b", init_seed=1)], engine="auto")
    assert [r.engine for r in res] == ["sequential", "sequential"] and all(r.error is None for r in res)
    forced = run_replicas(spec, [ReplicaSpec("a"), ReplicaSpec("b", init_seed=1)], engine="vectorized")
    assert all(r.error and r.error.startswith("vectorized engine:") for r in forced)

    spec = spec_for(mlp, epochs=1)
    res = run_replicas(spec, [ReplicaSpec("a"), ReplicaSpec("b", init_seed=1),
                              ReplicaSpec("big-batch", overrides={"batch_size": 32})], engine="auto")
    assert [r.engine for r in res] == ["vectorized", "vectorized", "sequential"]
    assert len(res[2].step_loss) == 5 and len(res[0].step_loss) == 10


def test_results_round_trip_through_json():
    spec = spec_for(mlp, epochs=2, loss="cross_entropy")
    rep = ReplicaSpec("r", init_seed=4, overrides={"lr": 0.01}, skip_steps=frozenset({2}), schedule=step_decay)
    res = run_replicas(spec, [rep])[0]
    res.val_loss[0] = np.nan  # a nan must survive as null
    text = json.dumps(res.to_dict(), allow_nan=False)
    back = ReplicaResult.from_dict(json.loads(text))
    assert exactly_equal(res, back) and back.replica.skip_steps == frozenset({2})
    assert back.replica.overrides == {"lr": 0.01} and json.loads(text)["replica"]["schedule"] == "step_decay"


def test_the_fast_path_takes_plain_sequential_chains_and_leaves_the_rest_to_vmap():
    from whyspike.probe.engines._stacked import compile_stacked

    assert compile_stacked(mlp_bn_dropout(), (6,), "cross_entropy", 1) is not None
    assert compile_stacked(mlp_other_layers(), (6,), "cross_entropy", 1) is not None
    assert compile_stacked(CustomNet(), (6,), "cross_entropy", 1) is None
    assert compile_stacked(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3)), (1, 8, 8),
                           "cross_entropy", 1) is None
    assert compile_stacked(nn.Sequential(nn.Linear(6, 3)), (2, 6), "cross_entropy", 1) is None  # 2-d samples


def mlp_bn():
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def bn_momentum_half(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = 0.5
    return model


def bn_to_groupnorm(model):
    return nn.Sequential(*[nn.GroupNorm(1, m.num_features) if isinstance(m, nn.BatchNorm1d) else m for m in model])


def test_model_transforms_train_as_their_own_group_and_branch_across_normalisations():
    spec = spec_for(mlp_bn, epochs=3)
    base = ReplicaSpec("base", checkpoint_epochs=frozenset({0}))
    reps = [base, ReplicaSpec("base2", init_seed=1),
            ReplicaSpec("m0.5", model_transform=bn_momentum_half), ReplicaSpec("m0.5-2", init_seed=1,
                                                                               model_transform=bn_momentum_half)]
    vec = run_replicas(spec, reps, engine="auto")
    seq = run_replicas(spec, reps, engine="sequential")
    assert [r.engine for r in vec] == ["vectorized"] * 4
    for s, v in zip(seq, vec):
        assert np.max(np.abs(s.val_loss - v.val_loss)) < 1e-5
    # ground truth for the transform: the same model built with momentum 0.5 from the start
    direct = run_replicas(spec_for(lambda: bn_momentum_half(mlp_bn()), epochs=3), [ReplicaSpec()],
                          engine="sequential")[0]
    assert exactly_equal(direct, seq[2]) and not np.allclose(seq[0].val_loss, seq[2].val_loss)
    # a branch from the BN model's checkpoint into GroupNorm: BN's running statistics are left behind
    gn = [ReplicaSpec(f"gn{i}", data_seed=i, start=seq[0].checkpoints[0], model_transform=bn_to_groupnorm)
          for i in range(2)]
    out = run_replicas(spec, gn, engine="auto")
    assert all(r.error is None and r.engine == "vectorized" for r in out) and list(out[0].epochs) == [1, 2]
    ref = run_replicas(spec, gn, engine="sequential")
    assert np.max(np.abs(ref[0].val_loss - out[0].val_loss)) < 1e-5


def test_a_replica_whose_schedule_crashes_fails_alone_in_every_engine():
    def broken(step, epoch):
        if epoch == 1:
            raise ZeroDivisionError("division by zero")
        return 1.0

    spec = spec_for(mlp, epochs=2)
    reps = [ReplicaSpec("a"), ReplicaSpec("broken", schedule=broken), ReplicaSpec("b", init_seed=1)]
    for engine in ("auto", "vectorized", "sequential"):
        res = run_replicas(spec, reps, engine=engine)
        assert res[0].error is None and res[2].error is None, engine
        assert "ZeroDivisionError: division by zero" in res[1].error, engine

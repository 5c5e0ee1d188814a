"""Landscape numerics against independent ground truth: the full Hessian from torch.autograd.functional.hessian,
closed forms on quadratics and on linear regression, and the BatchNorm buffers before/after."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from whyspike.errors import InputError  # noqa: E402
from whyspike.landscape import (  # noqa: E402
    ModelLoss,
    filter_normalized_direction,
    gradient_noise_scale,
    hutchinson_trace,
    interpolate,
    lanczos,
    pca_directions,
    preconditioned_top_eigenvalue,
    random_surface,
    top_eigenvalues,
)
from whyspike.landscape.eigen import power_iteration  # noqa: E402
from whyspike.landscape.surface import GridMemoryError, check_grid_memory, evaluate_plane  # noqa: E402


def small_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))


def full_hessian(ml: ModelLoss, batches, train_bn=False):
    """The exact Hessian of the size-weighted mean loss, by torch.autograd.functional.hessian on a functional call
    (an independent path: no in-place parameter writes, no double backward of ours)."""
    model = ml.model
    names = ml.names
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    n_total = sum(len(b[1]) for b in batches)

    def f(theta):
        params = dict(zip(names, [c.view(s) for c, s in zip(torch.split(theta, ml.sizes), ml.shapes)]))
        total = 0
        for x, y in batches:
            out = torch.func.functional_call(model, {**params, **{k: v.clone() for k, v in buffers.items()}}, (x,))
            total = total + F.cross_entropy(out, y) * len(y)
        return total / n_total

    was = model.training
    model.train(train_bn)
    try:
        return torch.autograd.functional.hessian(f, ml.get_flat().double().float())
    finally:
        model.train(was)


@pytest.fixture
def mlp_problem():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 5, generator=g)
    y = torch.randint(0, 3, (60,), generator=g)
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]  # unequal sizes: the weighting by examples matters
    model = small_mlp()
    # move away from the initialization so the spectrum is not dominated by one direction
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    ml = ModelLoss(model, F.cross_entropy, batches)
    h = full_hessian(ml, batches).double()
    return ml, h, batches


def test_hvp_equals_the_full_hessian_times_v(mlp_problem):
    ml, h, _ = mlp_problem
    v = torch.randn(ml.n, generator=torch.Generator().manual_seed(3))
    for reuse in (True, False):
        with ml.hessian(reuse_graph=reuse) as op:
            hv = op(v).double()
        assert torch.allclose(hv, h @ v.double(), atol=1e-5, rtol=1e-4)


def test_lanczos_top_eigenvalues_match_the_exact_spectrum(mlp_problem):
    ml, h, _ = mlp_problem
    exact = torch.linalg.eigvalsh(h)
    r = top_eigenvalues(ml, k=3, tol=1e-6, max_iter=120)
    for got, want in zip(r.eigenvalues, exact.flip(0)[:3].tolist()):
        assert abs(got - want) / abs(want) <= 1e-3
    assert abs(r.smallest - float(exact[0])) <= 0.05 * float(exact.abs().max())
    # the default tolerance reaches 1e-3 on the top eigenvalue well within 40 products
    r1 = top_eigenvalues(ml)
    assert abs(r1.eigenvalues[0] - float(exact[-1])) / float(exact[-1]) <= 1e-3
    assert r1.matvecs <= 40


def test_lanczos_beats_power_iteration_on_a_crowded_spectrum():
    # eigenvalues 1.0, 0.99, 0.98, ...: power iteration's stopping rule accepts a visibly wrong value
    lam = torch.linspace(1.0, 0.0, 200, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(200, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    a = q @ torch.diag(lam) @ q.T
    r = lanczos(lambda v: a @ v, 200, tol=1e-6)
    assert abs(r.eigenvalues[0] - 1.0) < 1e-4
    p, _ = power_iteration(lambda v: a @ v, 200, tol=1e-3)
    assert abs(p - 1.0) > 1e-3


def test_hutchinson_trace_within_its_standard_error(mlp_problem):
    ml, h, _ = mlp_problem
    exact = float(torch.trace(h))
    with ml.hessian() as op:
        est = hutchinson_trace(op, ml.n, samples=200, seed=5)
    assert est.stderr > 0
    assert abs(est.trace - exact) <= 4 * est.stderr
    # and the error bar is informative: narrower than the trace itself
    assert est.stderr < 0.25 * abs(exact)


def test_adam_preconditioned_top_eigenvalue(mlp_problem):
    ml, h, _ = mlp_problem
    p = torch.rand(ml.n, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.1
    d = p.rsqrt()
    exact = float(torch.linalg.eigvalsh(d[:, None] * h * d[None, :])[-1])
    got = preconditioned_top_eigenvalue(ml, p, tol=1e-6, max_iter=120).eigenvalues[0]
    assert abs(got - exact) / exact <= 1e-3
    # P^-1 H has the same spectrum: check against the non-symmetric form too
    ev = torch.linalg.eigvals(h / p[:, None]).real.max().item()
    assert abs(got - ev) / ev <= 1e-3


# -- quadratics: interpolation and surfaces with closed forms ----------------------------------------------------
class Quadratic(nn.Module):
    """L(W) = 1/2 vec(W)^T A vec(W) + b^T vec(W), W a 3x4 matrix (rows are 'filters')."""

    def __init__(self, a, b):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
        self.a, self.b = a, b

    def forward(self, _x):
        v = self.w.reshape(-1)
        return (0.5 * v @ self.a @ v + self.b @ v).reshape(1)


def quad_loss(a, b, v):
    return float(0.5 * v @ a @ v + b @ v)


@pytest.fixture
def quadratic():
    g = torch.Generator().manual_seed(4)
    m = torch.randn(12, 12, generator=g, dtype=torch.float64)
    a = (m + m.T) / 2  # indefinite
    b = torch.randn(12, generator=g, dtype=torch.float64)
    model = Quadratic(a, b)
    ml = ModelLoss(model, lambda out, _y: out.sum(), [(torch.zeros(1), torch.zeros(1))])
    return ml, a, b


def test_interpolation_profile_and_barrier_of_a_quadratic(quadratic):
    ml, a, b = quadratic
    g = torch.Generator().manual_seed(6)
    ta, tb = torch.randn(12, generator=g, dtype=torch.float64), torch.randn(12, generator=g, dtype=torch.float64)
    d = tb - ta
    if float(d @ a @ d) > 0:  # make the segment cross a ridge: d^T A d < 0
        a = -a
        ml.model.a = a
    r = interpolate(ml, ta, tb)
    for alpha, got in zip(r.alphas, r.train_loss):
        assert got == pytest.approx(quad_loss(a, b, ta + alpha * d), rel=1e-9, abs=1e-9)
    dad = float(d @ a @ d)
    assert r.barrier == pytest.approx(-dad / 8, rel=1e-9)  # max at alpha = 1/2 of -1/2 alpha (1-alpha) d^T A d
    assert r.monotonic is False
    # a convex direction: no barrier, and the path is monotonic when it runs downhill
    ml.model.a = a @ a.T
    r2 = interpolate(ml, ta, ta + 0.01 * (-(a @ a.T) @ ta - b))
    assert r2.barrier == pytest.approx(0.0, abs=1e-12)
    assert r2.monotonic is True
    assert r2.alphas[0] == -0.5 and r2.alphas[-1] == 1.5 and 0.0 in r2.alphas and 1.0 in r2.alphas


def test_filter_normalized_surface_of_a_quadratic(quadratic):
    ml, a, b = quadratic
    center = torch.randn(12, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ml.set_flat(center)
    s = random_surface(ml, center, grid=7, span=0.5, seed=3)
    d1 = filter_normalized_direction(ml, center, seed=3)
    d2 = filter_normalized_direction(ml, center, seed=4)
    # Li et al.: each row (filter) of a direction has the norm of the same row of the weights
    for d in (d1, d2):
        assert torch.allclose(d.view(3, 4).norm(dim=1), center.view(3, 4).norm(dim=1), rtol=1e-9)
    for i, y in enumerate(s.y):
        for j, x in enumerate(s.x):
            assert s.train_loss[i][j] == pytest.approx(quad_loss(a, b, center + x * d1 + y * d2), rel=1e-9, abs=1e-9)
    assert s.complete and s.nan_cells == 0 and s.forward_passes == 49
    assert torch.equal(ml.get_flat(), center)  # the model is left where it was


def test_conv_filters_normalized_and_bias_batchnorm_directions_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 5, 3), nn.BatchNorm2d(5), nn.Flatten(), nn.Linear(5 * 4, 2))
    ml = ModelLoss(model, F.cross_entropy, [(torch.randn(8, 2, 6, 6), torch.randint(0, 2, (8,)))])
    theta = ml.get_flat()
    d = filter_normalized_direction(ml, theta, seed=0)
    for name, part, w in zip(ml.names, ml.split(d), ml.split(theta)):
        if part.dim() == 1:
            assert torch.count_nonzero(part) == 0, name
        else:  # one norm per output filter (first axis in PyTorch), equal to the weights' filter norm
            assert torch.allclose(part.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-5), name
            assert not torch.allclose(part, w)


def test_pca_plane_of_a_planar_trajectory():
    g = torch.Generator().manual_seed(8)
    e1, e2 = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    origin = torch.randn(50, generator=g, dtype=torch.float64)
    pts = [(3.0, 1.0), (2.0, -1.0), (1.0, 0.5), (0.5, 0.2), (0.0, 0.0)]
    thetas = [origin + x * e1 + y * e2 for x, y in pts]
    d1, d2, explained, coords = pca_directions(thetas)
    assert sum(explained) == pytest.approx(1.0, abs=1e-9)
    # distances between projected checkpoints equal the true distances (the points lie in the plane)
    for i in range(len(thetas)):
        for j in range(i):
            true = float((thetas[i] - thetas[j]).norm())
            got = math.dist(coords[i], coords[j])
            assert got == pytest.approx(true, rel=1e-9)
    assert coords[-1] == pytest.approx((0.0, 0.0), abs=1e-9)


def test_nan_cells_are_kept_and_counted():
    class Log(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2, 2))

        def forward(self, _x):
            return torch.log(self.w).sum().reshape(1)  # NaN where a weight is negative

    ml = ModelLoss(Log(), lambda out, _y: out.sum(), [(torch.zeros(1), torch.zeros(1))])
    c = ml.get_flat()
    d1, d2 = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 1.0, 0, 0])
    xs = np.linspace(-2, 2, 5)
    s = evaluate_plane(ml, c, d1, d2, xs, xs, kind="random")
    loss = np.array(s.train_loss)
    bad = (1 + xs[None, :] <= 0) | (1 + xs[:, None] <= 0)
    assert np.all(~np.isfinite(loss[bad])) and np.all(np.isfinite(loss[~bad]))
    assert s.nan_cells == int(bad.sum()) and s.warnings and s.complete


def test_grid_memory_is_estimated_before_allocating():
    with pytest.raises(GridMemoryError, match="use --grid"):
        check_grid_memory(1000, 5000, 5000, available=200 * 2**20)
    with pytest.raises(GridMemoryError, match="directions alone"):
        check_grid_memory(10**9, 21, 21, available=2**30)
    assert check_grid_memory(1000, 21, 21, available=2**30) > 0


def test_running_out_of_memory_keeps_the_finished_rows(quadratic):
    ml, a, b = quadratic
    calls = {"n": 0}
    real = ml.batch_loss

    def failing(batch):
        calls["n"] += 1
        if calls["n"] > 12:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")
        return real(batch)

    ml.batch_loss = failing
    c = ml.get_flat()
    s = random_surface(ml, c, grid=5)
    assert not s.complete and s.completed_rows == 2 and "2 of 5" in s.error
    assert all(np.isfinite(s.train_loss[i][j]) for i in range(2) for j in range(5))
    assert all(math.isnan(v) for v in s.train_loss[3])
    assert torch.equal(ml.get_flat(), c)


# -- gradient noise scale: linear regression with exact per-example gradients -----------------------------------
def test_gradient_noise_scale_on_linear_regression():
    g = torch.Generator().manual_seed(9)
    n, d, bsz, k = 4000, 6, 8, 400
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    w = model.weight.detach().reshape(-1)
    # per-example loss 1/2 (x.w - y)^2: gradient (x.w - y) x, exactly
    per = (x @ w - y)[:, None] * x
    grad = per.mean(0)
    trace_sigma = float(((per - grad) ** 2).sum(1).mean())
    g2 = float(grad @ grad)
    # small batches drawn with replacement (independent draws, as the estimator assumes)
    idx = torch.randint(0, n, (k, bsz), generator=g)
    batches = [(x[i], y[i][:, None]) for i in idx]
    ml = ModelLoss(model, lambda out, t: 0.5 * F.mse_loss(out, t), batches)
    ns = gradient_noise_scale(ml)
    assert ns.batch_size == bsz and ns.big_batch == k * bsz and ns.batches == k
    assert abs(ns.trace_sigma - trace_sigma) <= 4 * ns.trace_sigma_stderr
    assert abs(ns.grad_sq - g2) <= 4 * ns.grad_sq_stderr
    truth = trace_sigma / g2
    assert abs(ns.b_simple - truth) <= 4 * ns.b_simple_stderr
    assert ns.b_simple_stderr < 0.3 * truth  # the test can fail: the error bar is not huge


def test_gradient_noise_scale_needs_two_equal_batches():
    ml = ModelLoss(nn.Linear(2, 1), F.mse_loss, [(torch.randn(4, 2), torch.randn(4, 1))])
    with pytest.raises(InputError, match="at least 2 batches"):
        gradient_noise_scale(ml)


# -- BatchNorm: train-mode statistics, running statistics untouched ----------------------------------------------
def test_batchnorm_hvp_uses_batch_statistics_and_leaves_running_stats_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 4, generator=g) * 3 + 1, torch.randint(0, 3, (16,), generator=g)) for _ in range(2)]
    model.eval()
    ml = ModelLoss(model, F.cross_entropy, batches)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    v = torch.randn(ml.n, generator=g)
    with ml.hessian() as op:
        hv = op(v).double()
        for _ in range(3):
            op(v)
    top = top_eigenvalues(ml).eigenvalues[0]
    ml.loss_and_grad()
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k]), f"{k} changed"
    assert model.training is False  # the mode the caller had is restored
    # ground truth: train-mode BN (batch statistics), no dropout, on a functional copy with throw-away buffers
    drop = model[3]
    drop.p = 0.0
    h = full_hessian(ml, batches, train_bn=True).double()
    drop.p = 0.5
    assert torch.allclose(hv, h @ v.double(), atol=1e-5, rtol=1e-4)
    assert abs(top - float(torch.linalg.eigvalsh(h)[-1])) / abs(top) <= 1e-3
    # and not the eval-mode Hessian, which is a different matrix here
    h_eval = full_hessian(ml, batches, train_bn=False).double()
    assert not torch.allclose(h_eval @ v.double(), hv, atol=1e-3)


def test_non_torch_models_get_a_clear_error():
    with pytest.raises(InputError, match="not a torch.nn.Module"):
        ModelLoss(object(), F.mse_loss, [])

"""2-D loss surfaces: filter-normalized random directions (Li et al. 2018), the plane through three checkpoints,
or the trajectory's PCA plane (``trajectory.py``), evaluated on a grid.

Filter normalization (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", §4): a Gaussian direction
d is rescaled filter by filter, d_ij ← d_ij/‖d_ij‖·‖θ_ij‖, where a filter is one output unit (a row of a PyTorch
``Linear``/``Conv`` weight, the last axis of a Keras kernel); 1-D parameters (biases, BatchNorm scale and shift)
get a zero direction, as in their default (``ignore='biasbn'``). Distances on the plot are then relative to each
filter's own scale, which makes surfaces of differently scaled networks comparable.

Cost: every grid point writes ``center + x·d1 + y·d2`` into the model's own parameters (no module is re-created)
and runs one forward pass per evaluation batch, in evaluation mode entered once for the whole grid; the overhead
over the 441 forward passes that a 21×21 grid cannot avoid is measured in ``benchmarks/landscape.md``.

Bad points: a NaN/inf loss leaves a NaN cell and a warning; running out of memory keeps the rows finished and
says so (``complete`` False, ``error``). The memory the grid needs is estimated before anything is allocated.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError, require
from ._hvp import EVAL_MODE, ModelLoss, _n_examples, accuracy_hits

torch = require("torch", "torch")


class GridMemoryError(UsageError):
    """The requested grid (or the directions it needs) would not fit in memory."""


@dataclass
class Surface:
    kind: str  # "random" | "pca" | "checkpoints"
    x: list[float]
    y: list[float]
    train_loss: list[list[float]]  # rows follow y, columns follow x
    train_accuracy: list[list[float]] | None = None
    center: str = ""
    trajectory: list[dict] | None = None  # [{"label": ..., "x": ..., "y": ...}]
    explained_variance: list[float] | None = None
    nan_cells: int = 0
    completed_rows: int = 0
    complete: bool = True
    error: str | None = None
    seconds: float = 0.0
    forward_passes: int = 0
    mode: str = EVAL_MODE
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(vars(self))


# -- directions ----------------------------------------------------------------------------------------------------


def filter_normalized_direction(ml: ModelLoss, theta, *, seed: int = 0, filter_axis: int | None = None):
    """A random direction (flat) normalized filter-wise to ``theta``; zero on 1-D parameters."""
    if filter_axis is None:
        filter_axis = -1 if ml.framework == "keras" else 0
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for p, shape in zip(ml.split(theta.to(ml.dtype)), ml.shapes):
        if len(shape) <= 1:
            parts.append(torch.zeros(p.numel(), dtype=ml.dtype))
            continue
        d = torch.randn(shape, generator=gen, dtype=ml.dtype)
        axis = filter_axis % len(shape)
        dims = tuple(i for i in range(len(shape)) if i != axis)
        pn = torch.linalg.vector_norm(p, dim=dims, keepdim=True)
        dn = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
        parts.append((d * pn / (dn + 1e-10)).reshape(-1))
    return torch.cat(parts)


def checkpoint_plane(t0, t1, t2):
    """Orthonormal (d1, d2) spanning the plane through three points, with the points' coordinates in it."""
    t0, t1, t2 = (t.to(torch.float64) for t in (t0, t1, t2))
    u, v = t1 - t0, t2 - t0
    nu = float(u.norm())
    if nu == 0:
        raise UsageError("the first two checkpoints of the plane are identical: no plane through them")
    d1 = u / nu
    w = v - float(v @ d1) * d1
    nw = float(w.norm())
    if nw <= 1e-12 * max(nu, 1.0):
        raise UsageError("the three checkpoints lie on one line: no plane through them (use the 1-D interpolation)")
    d2 = w / nw
    return d1, d2, [(0.0, 0.0), (nu, 0.0), (float(v @ d1), nw)]


# -- memory ----------------------------------------------------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes of memory available to allocate now (Linux MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def grid_memory(n_params: int, nx: int, ny: int, itemsize: int = 4) -> int:
    """Bytes the grid needs beyond the model: centre, two directions, a row base and a work vector (n each, float),
    plus the result cells (loss and accuracy, float64)."""
    return 5 * n_params * itemsize + 2 * nx * ny * 8


def check_grid_memory(n_params: int, nx: int, ny: int, itemsize: int = 4, available: int | None = None) -> int:
    need = grid_memory(n_params, nx, ny, itemsize)
    avail = available_memory() if available is None else available
    if avail is not None and need > 0.8 * avail:
        per_cell = 16
        room = max(0.8 * avail - 5 * n_params * itemsize, 0)
        side = int(math.sqrt(room / per_cell)) if room else 0
        raise GridMemoryError(f"a {nx}x{ny} grid for a model of {n_params:,} parameters needs about "
                              f"{need / 2**30:.2f} GiB but {avail / 2**30:.2f} GiB are available — "
                              + (f"use --grid {min(side, 201)} or less" if side >= 3 else
                                 "the model's directions alone do not fit: free memory or use a smaller model"))
    return need


# -- grid ----------------------------------------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
        "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower()))


def evaluate_plane(ml: ModelLoss, center, d1, d2, xs, ys, *, kind: str, state=None, batches=None,
                   progress: Callable[[int, int], None] | None = None, available: int | None = None) -> Surface:
    """The loss (and accuracy) at ``center + x·d1 + y·d2`` for every (x, y) of the grid; the model's parameters
    and state are restored afterwards."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    check_grid_memory(ml.n, len(xs), len(ys), torch.tensor([], dtype=ml.dtype).element_size(), available)
    batches = ml.batches if batches is None else batches
    ml._need(batches)
    loss = np.full((len(ys), len(xs)), np.nan)
    acc = np.full((len(ys), len(xs)), np.nan)
    has_acc = True
    saved, saved_state = ml.get_flat(), ml.get_state()
    c, u, v = (t.to(ml.dtype) for t in (center, d1, d2))
    sizes = [_n_examples(b[1]) for b in batches]
    total_n = float(sum(sizes))
    out = Surface(kind, xs.tolist(), ys.tolist(), [])
    start, passes0 = time.perf_counter(), ml.forward_passes
    rows = 0
    try:
        if state is not None:
            ml.set_state(state)
        with torch.no_grad(), ml.eval_mode():
            row = torch.empty_like(c)
            work = torch.empty_like(c)
            for i, y in enumerate(ys):
                torch.add(c, v, alpha=float(y), out=row)
                for j, x in enumerate(xs):
                    torch.add(row, u, alpha=float(x), out=work)
                    ml.set_flat(work)
                    total, hits = 0.0, 0
                    for b, m in zip(batches, sizes):
                        lb, o = ml.batch_loss(b)
                        total += float(lb) * m
                        if has_acc:
                            h = accuracy_hits(o, b[1])
                            if h is None:
                                has_acc = False
                            else:
                                hits += h
                    loss[i, j] = total / total_n
                    acc[i, j] = hits / total_n if has_acc else np.nan
                rows = i + 1
                if progress:
                    progress(rows, len(ys))
    except Exception as exc:  # noqa: BLE001 - only running out of memory is kept as a partial result
        if not _is_oom(exc):
            raise
        out.complete = False
        out.error = (f"ran out of memory after {rows} of {len(ys)} grid rows ({type(exc).__name__}); the finished "
                     "rows are kept — use a smaller --grid or fewer batches")
    finally:
        ml.set_flat(saved)
        ml.set_state(saved_state)
    out.seconds = time.perf_counter() - start
    out.forward_passes = ml.forward_passes - passes0
    out.completed_rows = rows
    out.train_loss = loss.tolist()
    out.train_accuracy = acc.tolist() if has_acc else None
    done = loss[:rows]
    out.nan_cells = int((~np.isfinite(done)).sum())
    if out.nan_cells:
        out.warnings.append(f"the loss is NaN/inf in {out.nan_cells} of {done.size} grid cells (left as NaN): "
                            "the surface reaches a region where the model diverges")
    return out


def random_surface(ml: ModelLoss, center, *, grid: int = 21, span: float = 1.0, seed: int = 0, state=None,
                   batches=None, progress=None, available: int | None = None) -> Surface:
    """The surface around ``center`` along two filter-normalized random directions, x and y in [-span, span]."""
    _check_grid(grid)
    check_grid_memory(ml.n, grid, grid, torch.tensor([], dtype=ml.dtype).element_size(), available)
    d1 = filter_normalized_direction(ml, center, seed=seed)
    d2 = filter_normalized_direction(ml, center, seed=seed + 1)
    xs = np.linspace(-span, span, grid)
    s = evaluate_plane(ml, center, d1, d2, xs, xs, kind="random", state=state, batches=batches, progress=progress,
                       available=available)
    s.warnings.insert(0, "directions: filter-normalized Gaussian (Li et al. 2018), zero on biases and BatchNorm "
                      "parameters; BatchNorm running statistics fixed at the centre's")
    return s


def plane_surface(ml: ModelLoss, thetas, labels, *, grid: int = 21, margin: float = 0.25, state=None, batches=None,
                  progress=None, available: int | None = None) -> Surface:
    """The surface on the plane through three checkpoints ``thetas`` (the first is the origin)."""
    _check_grid(grid)
    if len(thetas) != 3:
        raise UsageError(f"the plane through checkpoints needs exactly 3 of them (got {len(thetas)})")
    d1, d2, pts = checkpoint_plane(*thetas)
    xs, ys = _axes([p[0] for p in pts], [p[1] for p in pts], grid, margin)
    s = evaluate_plane(ml, thetas[0].to(torch.float64), d1, d2, xs, ys, kind="checkpoints", state=state,
                       batches=batches, progress=progress, available=available)
    s.center = str(labels[0])
    s.trajectory = [{"label": lab, "x": p[0], "y": p[1]} for lab, p in zip(labels, pts)]
    return s


def _axes(px, py, grid, margin):
    def axis(vals):
        lo, hi = min(min(vals), 0.0), max(max(vals), 0.0)
        pad = margin * max(hi - lo, 1e-12)
        return np.linspace(lo - pad, hi + pad, grid)

    return axis(px), axis(py)


def _check_grid(grid: int) -> None:
    if not isinstance(grid, int) or grid < 2:
        raise UsageError(f"--grid {grid!r}: the grid needs at least 2 points a side (21 is the usual)")

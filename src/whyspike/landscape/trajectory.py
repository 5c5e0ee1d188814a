"""The optimization trajectory projected on the first two PCA directions of the checkpoints (Li et al. 2018, §7).

Random directions in millions of dimensions are nearly orthogonal to the path training took, so a random plane
shows none of it. Li et al. take the matrix of differences θ_i − θ_origin (origin: the last checkpoint), run PCA on
it (centered, as scikit-learn's PCA does) and plot the loss on the plane of the first two components, with each
checkpoint projected onto it. ``explained_variance`` says how much of the path the plane holds: near 1, the
picture is faithful; low, the path turns through many dimensions and the plane shows a shadow of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UsageError, require
from ._hvp import ModelLoss
from .surface import Surface, _axes, _check_grid, evaluate_plane

torch = require("torch", "torch")


def pca_directions(thetas: Sequence, origin_index: int = -1):
    """(d1, d2, explained variance ratios, [(x, y) per checkpoint]) for flat parameter vectors ``thetas``."""
    if len(thetas) < 3:
        raise UsageError(f"the trajectory's PCA plane needs at least 3 checkpoints (got {len(thetas)})")
    origin = thetas[origin_index].to(torch.float64)
    m = torch.stack([t.to(torch.float64) - origin for t in thetas])
    centered = m - m.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    var = s**2
    total = float(var.sum())
    if total <= 0 or len(s) < 2 or float(s[1]) <= 1e-12 * float(s[0]):
        raise UsageError("the checkpoints lie on one line (or coincide): no PCA plane; use the 1-D interpolation")
    d1, d2 = vh[0], vh[1]
    # orient the first axis from the earliest checkpoint towards the origin, so the path reads left to right
    if float((origin - thetas[0].to(torch.float64)) @ d1) < 0:
        d1 = -d1
    coords = [(float(r @ d1), float(r @ d2)) for r in m]
    return d1, d2, [float(var[0] / total), float(var[1] / total)], coords


def pca_surface(ml: ModelLoss, thetas: Sequence, labels: Sequence, *, origin_index: int = -1, grid: int = 21,
                margin: float = 0.25, state=None, batches=None, progress=None, available: int | None = None) -> Surface:
    """The loss on the PCA plane of the checkpoints ``thetas`` with the trajectory projected onto it."""
    _check_grid(grid)
    d1, d2, explained, coords = pca_directions(thetas, origin_index)
    xs, ys = _axes([c[0] for c in coords], [c[1] for c in coords], grid, margin)
    s = evaluate_plane(ml, thetas[origin_index].to(torch.float64), d1, d2, xs, ys, kind="pca", state=state,
                       batches=batches, progress=progress, available=available)
    s.center = str(labels[origin_index])
    s.explained_variance = explained
    s.trajectory = [{"label": lab, "x": c[0], "y": c[1]} for lab, c in zip(labels, coords)]
    return s

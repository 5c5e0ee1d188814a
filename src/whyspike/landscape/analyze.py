"""Measure the landscape around a jump of a recorded run: :func:`analyze_run`, and its JSON document.

JSON schema ``whyspike/landscape-v1`` (``LandscapeReport.to_dict()``; ``whyspike landscape RUN --format json``).
Every number is a JSON number or ``null`` (NaN/inf, or not measured); more keys may be added::

    {
      "schema": "whyspike/landscape-v1",
      "run": "runs/exp1",                      # the run directory
      "framework": "torch" | "keras",
      "setup": ["model and loss from --factory f.py:make", ...],   # where model, loss and data came from
      "spike": null | {"metric": "loss", "axis": "epoch", "at": 12, "start": 11, "direction": "up",
                       "shape": "transient", "significance": 8.1, "source": "auto" | "user"},
      "checkpoints": {"before": {"epoch": 10, "step": 330, "path": "..."}, "after": {...},
                      "window": [8, 9, 10, 11, 12, 13], "available": [0, 1, ...]},
      "curvature_mode": "BatchNorm in train mode (batch statistics) with running statistics ... ; dropout off",
      "eval_mode": "evaluation mode (model.eval() / training=False): ...",
      "curvature": [                            # one entry per checkpoint of the window, oldest first
        {"epoch": 10, "step": 330, "loss": 0.61, "grad_norm": 0.8, "lambda_max": 19.3, "lambda_min": -0.4,
         "hvps": 24, "converged": true, "lr": 0.16, "optimizer": "SGD", "threshold": 12.4,
         "threshold_rule": "2/lr", "compared": "lambda_max" | "preconditioned_lambda_max",
         "preconditioned_lambda_max": null, "ratio": 1.56,       # compared quantity / threshold
         "trace": 41.2, "trace_stderr": 1.3, "notes": []}],
      "interpolation": null | {"alphas": [-0.5, ..., 1.5], "train_loss": [...], "train_accuracy": [...] | null,
                       "val_loss": [...] | null, "val_accuracy": [...] | null,
                       "barrier": 0.0, "val_barrier": null, "rise_above_endpoints": -0.2, "monotonic": true,
                       "nan_points": 0, "from": 10, "to": 11, "mode": "...", "warnings": []},
      "surface": null | {"kind": "pca" | "random" | "checkpoints", "x": [...], "y": [...],
                       "train_loss": [[...], ...],            # rows follow y, columns x; null where NaN
                       "train_accuracy": [[...]] | null, "center": "epoch 11",
                       "trajectory": [{"label": "epoch 8", "x": 0.1, "y": -0.3}, ...] | null,
                       "explained_variance": [0.93, 0.05] | null, "nan_cells": 0, "completed_rows": 21,
                       "complete": true, "error": null, "seconds": 1.9, "forward_passes": 441, ...},
      "noise_scale": null | {"epoch": 10, "b_simple": 812.0, "b_simple_stderr": 90.0, "trace_sigma": ...,
                       "grad_sq": ..., "batch_size": 32, "big_batch": 512, "batches": 16,
                       "run_batch_size": 32},
      "evidence": [{"cause": "optimization_instability", "confidence_delta": 0.45,
                    "evidence": ["lambda_max 19.3 at epoch 10 was above ..."], "measurements": {...}}],
      "warnings": ["..."],
      "errors": [{"part": "surface", "message": "...", "finished": "12 of 21 grid rows"}]
    }

Parts that fail (NaN loss everywhere, out of memory, a grid too large) leave an ``errors`` entry and whatever they
finished; the other parts still run. A checkpoint from another architecture stops everything with a one-line
:class:`~whyspike.errors.InputError`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, UsageError, WhyspikeError, require
from ._hvp import CURVATURE_MODE, EVAL_MODE, ModelLoss
from .interpolation import interpolate
from .noise_scale import gradient_noise_scale
from .sharpness import measure_curvature
from .sources import Checkpoint, ProbeSetup, apply_state, build_setup, list_checkpoints, load_state, _read_meta
from .surface import GridMemoryError, random_surface
from .trajectory import pca_surface

torch = require("torch", "torch")

SCHEMA = "whyspike/landscape-v1"
PARTS = ("hessian", "interp", "surface", "gns")

Progress = Callable[[str, int, int], None]


@dataclass
class LandscapeReport:
    run: str
    framework: str
    setup: list[str]
    spike: dict | None
    before: Checkpoint
    after: Checkpoint
    window: list[int]
    available: list[int]
    curvature: list = field(default_factory=list)
    interpolation: object = None
    surface: object = None
    noise_scale: dict | None = None
    warnings: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    evidence: list = field(default_factory=list)

    def to_dict(self) -> dict:
        interp = None
        if self.interpolation is not None:
            interp = self.interpolation.to_dict()
            interp["from"], interp["to"] = self.before.epoch, self.after.epoch
        d = {
            "schema": SCHEMA, "run": self.run, "framework": self.framework, "setup": self.setup, "spike": self.spike,
            "checkpoints": {"before": self.before.to_dict(), "after": self.after.to_dict(), "window": self.window,
                            "available": self.available},
            "curvature_mode": CURVATURE_MODE, "eval_mode": EVAL_MODE,
            "curvature": [p.to_dict() for p in self.curvature],
            "interpolation": interp,
            "surface": None if self.surface is None else self.surface.to_dict(),
            "noise_scale": self.noise_scale,
            "evidence": [e.to_dict() for e in self.evidence],
            "warnings": self.warnings, "errors": self.errors,
        }
        return clean(d)


def clean(v):
    """JSON-safe: NaN/inf → None, numpy/torch scalars → Python numbers, tuples → lists."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        return clean(v.item())
    if isinstance(v, Path):
        return str(v)
    return v


# -- choosing the checkpoints ------------------------------------------------------------------------------------


def _ckpt_steps(ckpts: list[Checkpoint]) -> None:
    """Fill in the optimizer step of each checkpoint (PyTorch keeps it inside state.pt)."""
    for c in ckpts:
        if c.step is None and c.format == "torch":
            try:
                c.step = int(torch.load(c.path / "state.pt", map_location="cpu", weights_only=True).get("step"))
            except Exception:  # noqa: BLE001 - unreadable: reported when it is loaded for real
                c.step = None


def pick_checkpoints(run_dir, ckpts: list[Checkpoint], spike: str | int | None):
    """(spike dict | None, before, after, warnings) for ``spike`` = "auto", an epoch number, or None (last two)."""
    warnings: list[str] = []
    if len(ckpts) < 2:
        raise InputError(run_dir, f"holds {len(ckpts)} checkpoint(s); the landscape around a jump needs two",
                         "record with checkpoints every epoch (set WHYSPIKE_CHECKPOINT_BUDGET=1 for tiny runs)")
    epochs = [c.epoch for c in ckpts]
    info = None
    if spike == "auto":
        from ..diagnosis import diagnose
        from ..importers import load_run

        d = diagnose(load_run(str(run_dir)))
        if not d.spikes:
            warnings.append("the diagnosis found no significant jump: the last two checkpoints are compared")
            return None, ckpts[-2], ckpts[-1], warnings
        s = d.spikes[0]
        start = s.start if s.start is not None else s.at
        info = {"metric": s.metric, "axis": s.axis, "at": float(s.at), "start": float(start),
                "direction": s.direction, "shape": s.shape, "significance": round(float(s.significance), 2),
                "source": "auto"}
        if s.axis == "step":
            _ckpt_steps(ckpts)
            known = [c for c in ckpts if c.step is not None]
            # a checkpoint's step counts the updates taken: it holds the weights the loss of that step is measured at
            before = [c for c in known if c.step < start]
            after = [c for c in known if c.step >= max(float(s.at), start) or c.step >= start and s.shape == "step"]
            if not before or not after:
                raise InputError(run_dir, f"the jump in {s.metric} at step {s.at:g} has no checkpoint on both sides "
                                 f"(checkpoint steps: {', '.join(str(c.step) for c in known)})",
                                 "pass --spike EPOCH to choose the epoch, or keep checkpoints around the jump")
            return info, before[-1], after[0], warnings
        # an epoch's training metric is the mean over the epoch: the change can begin anywhere in the epoch before
        # its first new-level point, so the checkpoint before is the one that opened that epoch
        lo, hi = (start - 1 if any(c.epoch < start - 1 for c in ckpts) else start), float(s.at)
    else:
        if spike is None:
            return None, ckpts[-2], ckpts[-1], warnings
        lo = hi = float(spike)
        info = {"metric": None, "axis": "epoch", "at": float(spike), "start": float(spike), "source": "user"}
    before = [c for c in ckpts if c.epoch < lo]
    after = [c for c in ckpts if c.epoch >= hi]
    if not before or not after:
        raise InputError(run_dir, f"no checkpoint on both sides of epoch {hi:g} (checkpoints at epochs "
                         f"{', '.join(map(str, epochs))})",
                         "choose --spike among epochs with a checkpoint before it, or keep more checkpoints")
    return info, before[-1], after[0], warnings


def _window(ckpts: list[Checkpoint], before: Checkpoint, after: Checkpoint, radius: int) -> list[Checkpoint]:
    ib, ia = ckpts.index(before), ckpts.index(after)
    return ckpts[max(0, ib - radius): ia + radius + 1]


# -- the analysis ----------------------------------------------------------------------------------------------------


def analyze_run(run_dir: str | os.PathLike, *, setup: ProbeSetup | None = None, factory: str | None = None,
                spike: str | int | None = "auto", what=PARTS, grid: int = 21, surface: str = "auto",
                span: float = 1.0, radius: int = 4, trace_samples: int = 16, tol: float = 1e-4,
                max_hvps: int = 80, seed: int = 0, progress: Progress | None = None) -> LandscapeReport:
    """Run the landscape measurements ``what`` (a subset of ``PARTS``) around a jump of the run at ``run_dir``.

    ``spike``: "auto" (the diagnosis' most significant jump), an epoch number, or None (the last two
    checkpoints). ``radius``: checkpoints kept on each side of the jump for the curvature track and the PCA plane.
    ``surface``: "auto" (the trajectory's PCA plane with 3+ checkpoints, else random), "pca", "random" or
    "checkpoints" (the plane through before, after and the next checkpoint).
    """
    from .evidence import landscape_evidence

    what = set(PARTS if what in (None, "all") else what)
    unknown = what - set(PARTS)
    if unknown:
        raise UsageError(f"--what {','.join(sorted(unknown))}: not a landscape part; choose among {', '.join(PARTS)}")
    run_dir = Path(run_dir)
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise InputError(run_dir, "holds no checkpoints (checkpoints/epoch-NNNN/)",
                         "record the run with checkpoints (Recorder(..., checkpoints=K) / WhyspikeCallback(checkpoints=K))")
    setup = setup or build_setup(run_dir, factory)
    ml = ModelLoss(setup.model, setup.loss_fn, setup.train_batches, setup.val_batches)
    info, before, after, warnings = pick_checkpoints(run_dir, ckpts, spike)
    window = _window(ckpts, before, after, radius)
    states = {}
    for c in window:  # loads every checkpoint used first: a foreign architecture stops here, before any work
        states[c.epoch] = load_state(c, ml)
    rep = LandscapeReport(str(run_dir), ml.framework, list(setup.notes), info, before, after,
                          [c.epoch for c in window], [c.epoch for c in ckpts], warnings=warnings)
    meta = _read_meta(run_dir)
    tick = progress or (lambda *a: None)

    def part(name: str, fn: Callable[[], None], finished: Callable[[], str]) -> None:
        try:
            fn()
        except (GridMemoryError, FloatingPointError, MemoryError) as exc:
            rep.errors.append({"part": name, "message": str(exc), "finished": finished()})
        except RuntimeError as exc:
            if "out of memory" not in str(exc).lower() and "allocate" not in str(exc).lower():
                raise
            rep.errors.append({"part": name, "message": f"out of memory ({exc})".splitlines()[0],
                               "finished": finished()})
        except InputError as exc:
            if "different architecture" in str(exc):
                raise
            rep.errors.append({"part": name, "message": str(exc), "finished": finished()})

    if "hessian" in what:
        def curv():
            for i, c in enumerate(window):
                cs = states[c.epoch]
                apply_state(ml, cs)
                samples = trace_samples if c in (before, after) else 0
                rep.curvature.append(measure_curvature(ml, cs.optimizer, trace_samples=samples, tol=tol,
                                                       max_iter=max_hvps, seed=seed, epoch=c.epoch, step=c.step))
                tick("curvature", i + 1, len(window))

        part("hessian", curv, lambda: f"{len(rep.curvature)} of {len(window)} checkpoints")
    if "interp" in what:
        def interp():
            a, b = states[before.epoch], states[after.epoch]
            rep.interpolation = interpolate(ml, a.params, b.params, state_a=a.state, state_b=b.state,
                                            progress=lambda i, n: tick("interpolation", i, n))
            rep.warnings.extend(rep.interpolation.warnings)

        part("interp", interp, lambda: "nothing")
    if "surface" in what:
        def surf():
            kind = surface
            if kind == "auto":
                kind = "pca" if len(window) >= 3 else "random"
            cb = lambda i, n: tick("surface", i, n)  # noqa: E731
            if kind == "pca":
                thetas = [states[c.epoch].params for c in window]
                origin = window.index(after)
                rep.surface = pca_surface(ml, thetas, [f"epoch {c.epoch}" for c in window], origin_index=origin,
                                          grid=grid, state=states[after.epoch].state, progress=cb)
            elif kind == "random":
                rep.surface = random_surface(ml, states[before.epoch].params, grid=grid, span=span, seed=seed,
                                             state=states[before.epoch].state, progress=cb)
                rep.surface.center = f"epoch {before.epoch}"
            elif kind == "checkpoints":
                from .surface import plane_surface

                i = window.index(after)
                third = window[i + 1] if i + 1 < len(window) else window[max(0, window.index(before) - 1)]
                if third in (before, after):
                    raise UsageError("the plane through checkpoints needs a third checkpoint next to the jump")
                trio = [before, after, third]
                rep.surface = plane_surface(ml, [states[c.epoch].params for c in trio],
                                            [f"epoch {c.epoch}" for c in trio], grid=grid,
                                            state=states[before.epoch].state, progress=cb)
            else:
                raise UsageError(f"--surface {surface!r}: choose auto, pca, random or checkpoints")
            if not rep.surface.complete:
                rep.errors.append({"part": "surface", "message": rep.surface.error,
                                   "finished": f"{rep.surface.completed_rows} of {len(rep.surface.y)} grid rows"})
            rep.warnings.extend(rep.surface.warnings)

        part("surface", surf, lambda: "nothing" if rep.surface is None else
             f"{rep.surface.completed_rows} of {len(rep.surface.y)} grid rows")
    if "gns" in what:
        def gns():
            apply_state(ml, states[before.epoch])
            ns = gradient_noise_scale(ml)
            d = ns.to_dict()
            d["epoch"] = before.epoch
            d["run_batch_size"] = meta.get("batch_size")
            rep.noise_scale = d

        part("gns", gns, lambda: "nothing")
    rep.evidence = landscape_evidence(rep)
    return rep

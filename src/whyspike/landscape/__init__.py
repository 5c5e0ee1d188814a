"""The loss landscape around a jump: interpolation, surfaces, sharpness against 2/η, gradient noise scale.

All of it runs on PyTorch autograd on the CPU (or wherever the model lives), for a ``torch.nn.Module`` or a Keras 3
model on the torch backend, with a loss ``loss_fn(output, target)`` and a list of ``(x, y)`` batches::

    from whyspike.landscape import ModelLoss, top_eigenvalues, interpolate, random_surface, gradient_noise_scale

    ml = ModelLoss(model, F.cross_entropy, train_batches, val_batches)
    top_eigenvalues(ml).eigenvalues[0]                  # λmax by Lanczos on Hessian-vector products
    interpolate(ml, theta_before, theta_after).barrier  # flat parameter vectors (ml.get_flat())
    random_surface(ml, ml.get_flat(), grid=21)          # filter-normalized directions (Li et al. 2018)
    gradient_noise_scale(ml).b_simple                   # McCandlish et al. 2018

    report = analyze_run("runs/exp1", factory="train.py:make")   # everything around the run's main jump
    landscape_evidence(report)                                   # per cause: sentences + confidence adjustment

``whyspike landscape RUN`` is the command-line form. Importing this package imports torch; only
:mod:`whyspike.landscape.evidence` (which reads reports) does not, and the names below load on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelLoss": "._hvp", "CURVATURE_MODE": "._hvp", "EVAL_MODE": "._hvp",
    "lanczos": ".eigen", "LanczosResult": ".eigen",
    "hutchinson_trace": ".hutchinson", "TraceEstimate": ".hutchinson",
    "top_eigenvalues": ".sharpness", "preconditioned_top_eigenvalue": ".sharpness", "measure_curvature": ".sharpness",
    "curvature_over_checkpoints": ".sharpness", "CurvaturePoint": ".sharpness",
    "interpolate": ".interpolation", "Interpolation": ".interpolation",
    "random_surface": ".surface", "plane_surface": ".surface", "filter_normalized_direction": ".surface",
    "Surface": ".surface", "GridMemoryError": ".surface",
    "pca_surface": ".trajectory", "pca_directions": ".trajectory",
    "gradient_noise_scale": ".noise_scale", "NoiseScale": ".noise_scale",
    "list_checkpoints": ".sources", "load_state": ".sources", "apply_state": ".sources", "OptimizerInfo": ".sources",
    "build_setup": ".sources",
    "analyze_run": ".analyze", "LandscapeReport": ".analyze", "SCHEMA": ".analyze",
    "landscape_evidence": ".evidence", "LandscapeEvidence": ".evidence",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'whyspike.landscape' has no attribute {name!r}")


def __dir__():
    return __all__

"""Runs and documents the report tests share: a synthetic recorded run with a known jump, probe and landscape
documents in the schemas docs/report.md describes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import whyspike
from whyspike.record.store import RunWriter


def synthetic_run(path: Path, metric: str = "val_accuracy", epochs: int = 40, jump_at: int = 20,
                  steps_per_epoch: int = 50):
    """A run directory: ``metric`` steps up 0.60 -> 0.80 at ``jump_at`` when the LR falls x0.1 there."""
    rng = np.random.default_rng(0)
    w = RunWriter(path, flush_seconds=1e9)
    w.write_meta(optimizer="SGD", learning_rate=0.1, momentum=0.9, batch_size=32, steps_per_epoch=steps_per_epoch,
                 eval_size=10_000, framework_versions={"torch": "2.13.0", "python": "3.11.2"},
                 seeds={"torch_initial_seed": 1234})
    n = epochs * steps_per_epoch
    step = np.arange(n)
    lr = np.where(step < jump_at * steps_per_epoch, 0.1, 0.01)
    loss = 1.0 + 0.05 * rng.standard_normal(n) - 0.3 * (step >= jump_at * steps_per_epoch)
    w.steps({"step": step, "epoch": step // steps_per_epoch, "lr": lr, "loss": loss})
    for e in range(epochs):
        up = e >= jump_at
        w.epoch(e, **{metric: 0.6 + 0.2 * up + 0.004 * rng.standard_normal(),
                      "val_loss": 1.0 - 0.3 * up + 0.01 * rng.standard_normal(), "lr": 0.01 if up else 0.1})
    w.close()
    return whyspike.load_run(path)


def probe_doc(metric: str = "val_accuracy", at: int = 20) -> dict:
    x = list(range(40))

    def curve(shift: int, seed: int):
        r = np.random.default_rng(seed)
        return [0.6 + 0.2 * (e >= at + shift) + 0.004 * float(r.standard_normal()) for e in x]

    base = [curve(0, s) for s in range(3)]
    arr = np.array(base)
    return {
        "schema": "whyspike/probe-v1", "metric": metric, "spike": {"at": at, "axis": "epoch"},
        "baseline": {"runs": [{"name": f"seed {s}", "x": x, "y": y} for s, y in enumerate(base)],
                     "band": {"x": x, "lo": arr.min(0).tolist(), "hi": arr.max(0).tolist(),
                              "median": np.median(arr, 0).tolist()}},
        "interventions": [
            {"name": "lr.shift=+5", "description": "the LR decay 5 epochs later", "verdict": "moved", "shift": 5,
             "effect_size": 12.5, "p_value": 0.0004, "runs": [{"name": f"seed {s}", "x": x, "y": curve(5, 10 + s)}
                                                              for s in range(2)], "message": "the jump moved by +5"},
            {"name": "lr.hold", "description": "no LR decay", "verdict": "removed", "shift": None,
             "effect_size": 14.1, "p_value": 1.2e-5, "runs": [{"name": f"seed {s}", "x": x, "y": curve(99, 20 + s)}
                                                              for s in range(2)], "message": "no jump without it"},
            {"name": "bn.precise", "description": "<recomputed BN stats>", "verdict": "error", "runs": [],
             "message": "the model has no BatchNorm"},
        ],
    }


def landscape_doc() -> dict:
    gx = np.linspace(-1, 1, 21)
    gy = np.linspace(-1, 1, 17)
    loss = 0.1 + (gx[None, :] - 0.5) ** 2 + (gy[:, None] + 0.5) ** 2  # rows along y: minimum at (0.5, -0.5)
    alpha = np.linspace(0, 1, 11)
    return {
        "schema": "whyspike/landscape-v1",
        "interpolation": {"alpha": alpha.tolist(),
                          "train_loss": (1 - 0.5 * alpha + 0.3 * np.sin(np.pi * alpha)).tolist(),
                          "val_loss": (1.1 - 0.5 * alpha + 0.35 * np.sin(np.pi * alpha)).tolist(), "barrier": 0.3},
        "surface": {"x": gx.tolist(), "y": gy.tolist(), "loss": loss.tolist(),
                    "trajectory": {"x": [-0.8, -0.2, 0.3, 0.5], "y": [0.8, 0.3, -0.3, -0.5],
                                   "labels": ["epoch 0", "epoch 10", "epoch 20", "epoch 30"]}},
        "curvature": [{"epoch": e, "lambda_max": 5.0 + 1.0 * e, "threshold": 20.0 if e < 20 else 200.0,
                       "lr": 0.1 if e < 20 else 0.01} for e in range(0, 40, 5)],
        "noise_scale": {"b_simple": 812.5, "batch_size": 32, "note": "estimated from 2 batch sizes"},
    }


@pytest.fixture
def make_run():
    return synthetic_run


@pytest.fixture
def make_probes():
    return probe_doc


@pytest.fixture
def make_landscape():
    return landscape_doc

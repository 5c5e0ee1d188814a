"""Counterfactual probes: re-run a training with one factor changed and see whether the jump moves.

The training engines (``run_replicas``) take a ``TrainingSpec`` and a list of ``ReplicaSpec`` s and return one
``ReplicaResult`` per replica; see ``whyspike.probe.spec`` for what is random and how, and
``whyspike.probe.engines`` for the sequential and vectorized engines.
"""

from __future__ import annotations

from .engines import run_replicas, train_sequential
from .spec import ReplicaResult, ReplicaSpec, TrainingSpec, epoch_order

__all__ = ["ReplicaResult", "ReplicaSpec", "TrainingSpec", "epoch_order", "run_replicas", "train_sequential"]

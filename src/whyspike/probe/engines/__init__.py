"""Training engines for counterfactual probes: many replicas of one small PyTorch training, in one process.

``run_replicas(spec, replicas)`` trains every replica and returns one ``ReplicaResult`` each, in order. Engines:

- ``"sequential"``: one replica after another, a plain loop with ``torch.optim`` (the reference semantics).
- ``"vectorized"``: replicas that can share a stacked training (same model transform, batch size, optimizer
  family, loss, epochs and branch point) train together, R at a time (see ``vectorized``).
- ``"auto"`` (default): vectorized for groups of two or more; a group that cannot be stacked (a model ``vmap``
  cannot run, an unused parameter, ...) and single replicas run sequentially.

A replica that cannot run (a bad override, a crash in ``model_fn``, a start state that does not fit) comes back
with ``error`` set; one that diverges comes back with ``diverged``; the others are not affected.

    >>> import torch
    >>> from whyspike.probe import ReplicaSpec, TrainingSpec, run_replicas
    >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    >>> spec = TrainingSpec(lambda: torch.nn.Linear(4, 3), x, y, lr=0.1, epochs=2, batch_size=16)
    >>> res = run_replicas(spec, [ReplicaSpec("a", init_seed=0), ReplicaSpec("b", init_seed=1)])
    >>> [r.error for r in res], [len(r.train_loss) for r in res]
    ([None, None], [2, 2])
"""

from __future__ import annotations

from typing import Callable

from ...errors import UsageError
from ..spec import ReplicaError, ReplicaResult, ReplicaSpec, TrainingSpec, resolve
from ._common import check_targets, error_result, one_line
from .sequential import train_sequential

ENGINES = ("auto", "sequential", "vectorized")


def run_replicas(spec: TrainingSpec, replicas: list[ReplicaSpec], engine: str = "auto",
                 progress: Callable[[int, int], None] | None = None) -> list[ReplicaResult]:
    """Train ``replicas`` of ``spec``; ``progress(done, total)`` is called as replicas finish."""
    from .vectorized import group_key, train_group

    if engine not in ENGINES:
        raise UsageError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    replicas = list(replicas)
    total = len(replicas)
    results: list[ReplicaResult | None] = [None] * total
    done = 0

    def finished(k: int) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    groups: dict[tuple, list[tuple[int, ReplicaSpec, TrainingSpec]]] = {}
    for i, rep in enumerate(replicas):
        try:
            cfg = resolve(spec, rep)
            check_targets(cfg)
        except ReplicaError as exc:
            results[i] = error_result(rep, one_line(exc), 0.0, engine)
            finished(1)
            continue
        key = ("seq", i) if engine == "sequential" else group_key(cfg, rep)
        groups.setdefault(key, []).append((i, rep, cfg))

    for members in groups.values():
        if engine == "sequential" or (engine == "auto" and len(members) == 1):
            for i, rep, _ in members:
                results[i] = train_sequential(spec, rep)
                finished(1)
            continue
        try:
            out = train_group([(rep, cfg) for _, rep, cfg in members])
        except Exception:  # the stacked training itself failed: vmap limits, an unused parameter, a crash, ...
            for i, rep, cfg in members:  # each replica on its own, so that a failure is that replica's alone
                results[i] = train_sequential(spec, rep) if engine == "auto" else _alone(rep, cfg)
                finished(1)
            continue
        for (i, _, _), res in zip(members, out):
            results[i] = res
        finished(len(members))
    return results  # type: ignore[return-value]


def _alone(replica: ReplicaSpec, cfg: TrainingSpec) -> ReplicaResult:
    """The vectorized engine on one replica; its failure becomes that replica's error."""
    from .vectorized import train_group

    try:
        return train_group([(replica, cfg)])[0]
    except Exception as exc:
        return error_result(replica, f"vectorized engine: {one_line(exc)} (engine='auto' or 'sequential' runs it)",
                            0.0, "vectorized")


__all__ = ["ENGINES", "run_replicas", "train_sequential"]

"""Fork planning for a probe study: which already-planned replica each arm continues from, and after which epoch.

Two arms that change nothing but the LR multiplier schedule or the skipped steps train exactly alike, seed by seed,
until their first differing step (:func:`~whyspike.probe.interventions.shared_epoch`; the baseline is the arm with
no intervention). So an arm may continue from the state of any replica of its seed that trains alike with it for
longer than it does with the baseline: ``lr.decay=off`` from ``lr.shift=+3`` (neither decays before the shifted
milestone) rather than from the baseline (which decays at the jump). A fork is possible where the parent reaches
the epoch (it stops at its own horizon) and the arm still trains one epoch of its own.

The plan is a tree rooted at the baseline (a parent trains, keeping its states at its children's fork epochs,
before them; no cycles) whose forks are as late as they can be together: the largest sum of fork epochs, i.e.
the fewest replica-epochs trained, a maximum-weight arborescence (Chu-Liu/Edmonds). Ties go to the baseline, then
to the parent earlier in the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import interventions as iv_mod
from .interventions import Intervention
from .spec import TrainingSpec


@dataclass(frozen=True)
class Fork:
    """An arm continues, seed by seed, from ``parent``'s replica of that seed at the end of epoch ``epoch``."""

    parent: str
    epoch: int

    def to_dict(self) -> dict:
        return {"from": self.parent, "epoch": self.epoch}


def plan_forks(arms: dict[str, list[Intervention]], horizon: dict[str, int], spec: TrainingSpec,
               spike_epoch: int | None, first: int) -> dict[str, Fork]:
    """Where each arm forks: ``arms`` maps the baseline (first, no interventions) and every arm to its
    interventions, ``horizon`` each to the epoch it trains until (exclusive), ``first`` is the epoch whose end
    state every replica starts from (the branch; -1: from scratch). Arms that fork nowhere (after ``first``) are
    left out: they train from the branch."""
    names = list(arms)
    root = names[0]
    shared: dict[frozenset, int] = {}
    weight: dict[tuple, int] = {}
    for c in names[1:]:
        for p in names:
            if p == c:
                continue
            # the parent reaches the fork epoch, and the arm trains one epoch of its own at least
            cap = min(horizon[p] - 1, horizon[c] - 2)
            pair = frozenset((p, c))
            if pair not in shared:  # alike through an epoch: the same both ways, computed up to the larger cap
                shared[pair] = iv_mod.shared_epoch(arms[p], arms[c], spec, spike_epoch, first,
                                                   max(horizon[p], horizon[c]) - 1)
            w = max(first, min(shared[pair], cap))
            if w > first or p == root:  # the baseline can always be the parent: no fork, from the branch
                weight[p, c] = w
    parent = _max_tree(names, root, weight)
    forks = {c: Fork(parent[c], weight[parent[c], c]) for c in names[1:] if weight[parent[c], c] > first}
    # a fork no later than the parent's own continues from the grandparent, which trains alike with both
    # through it (and reaches it): the parent never trained that epoch, it copied it
    for c, fork in forks.items():
        p = fork.parent
        while p in forks and fork.epoch <= forks[p].epoch:
            p = forks[p].parent
        forks[c] = Fork(p, fork.epoch)
    return forks


def stages(names: list[str], forks: dict[str, Fork]) -> list[list[str]]:
    """``names`` grouped into stages that run one after another: the arms that fork nowhere (and the baseline),
    then those that fork from them, and so on."""
    def depth(a: str) -> int:
        return 0 if a not in forks else 1 + depth(forks[a].parent)

    out: list[list[str]] = []
    for a in names:
        d = depth(a)
        out += [[] for _ in range(d + 1 - len(out))]
        out[d].append(a)
    return out


def _max_tree(nodes: list, root, weight: dict[tuple, int]) -> dict:
    """Chu-Liu/Edmonds: for every node but ``root`` the parent such that the links form a tree rooted at ``root``
    with the largest sum of ``weight[(parent, child)]`` (each node has an edge from ``root``). Ties go to the
    parent earlier in ``nodes``."""
    best = {c: max((p for p in nodes if (p, c) in weight), key=lambda p: weight[p, c]) for c in nodes if c != root}
    cycle = _cycle(best)
    if not cycle:
        return best
    # contract the cycle into one node; an edge into it costs what it displaces (the cycle edge into its end)
    merged, inside = tuple(cycle), set(cycle)
    contracted: dict[tuple, int] = {}
    via: dict[tuple, object] = {}  # a contracted edge's end inside the cycle (entering) or start (leaving)
    for (p, c), w in weight.items():
        if p in inside and c in inside:
            continue
        if c in inside:
            key, w, end = (p, merged), w - weight[best[c], c], c
        else:
            key, end = ((merged, c), p) if p in inside else ((p, c), None)
        if key not in contracted or w > contracted[key]:
            contracted[key], via[key] = w, end
    order = list(dict.fromkeys(merged if n in inside else n for n in nodes))
    sub = _max_tree(order, root, contracted)
    parent = {}
    for c, p in sub.items():
        if c == merged:  # the cycle is entered once, where the best edge into it ends; the rest keeps its links
            parent.update({n: best[n] for n in cycle})
            parent[via[p, merged]] = p
        else:
            parent[c] = via[merged, c] if p == merged else p
    return parent


def _cycle(parent: dict) -> list | None:
    for start in parent:
        path, n = [], start
        while n in parent and n not in path:
            path.append(n)
            n = parent[n]
        if n in path:
            return path[path.index(n):]
    return None

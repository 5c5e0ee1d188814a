"""Landscape benchmark: Hessian-vector product cost, eigenvalue accuracy per product, 21x21 surface cost, each side by
side with PyHessian and loss-landscapes in one process run.

    python benchmarks/bench_landscape.py                    # rewrites benchmarks/landscape.md
    python benchmarks/bench_landscape.py --rounds 1 --out -  # quick look, printed

Targets (issue 5): an HVP costs <= 2x a gradient; the top eigenvalue reaches 1e-3 relative error in <= 40 HVPs; a
21x21 surface costs <= 1.5x the 441 forward passes that are its floor. PyHessian and loss-landscapes are references
installed for this script only (``pip install pyhessian loss-landscapes``; not whyspike dependencies).

Times are CPU seconds of this process (``time.process_time``) with one torch thread: the machine is shared, and
none of the code timed starts threads of its own. Each measurement is repeated ``--rounds`` times, the variants
interleaved within a round, and the median is reported.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata as md
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
nn = torch.nn
F = torch.nn.functional

from whyspike.landscape import ModelLoss, lanczos, random_surface  # noqa: E402

ROOT = Path(__file__).resolve().parent


def _version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


# -- workloads --------------------------------------------------------------------------------------------------
def mlp_workload(n=1024):
    """MLP 64-256-256-10 (tanh) on 1024 digits-sized examples (64 features, 10 classes from a random teacher)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 64, generator=g)
    y = (x @ torch.randn(64, 10, generator=g) + 0.5 * torch.randn(n, 10, generator=g)).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
    _train(model, x, y, steps=40, lr=0.2)
    return "MLP 64-256-256-10, 1024 examples", model, x, y


def cnn_workload(n=512):
    """2 conv + BatchNorm layers on 512 1x16x16 inputs, 10 classes."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 16, 16, generator=g)
    y = (x.flatten(1) @ torch.randn(256, 10, generator=g)).argmax(1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(32 * 16, 10))
    _train(model, x, y, steps=20, lr=0.05)
    return "CNN conv16-BN-conv32-BN-fc, 512 1x16x16 inputs", model, x, y


def _train(model, x, y, steps, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def cpu(fn, reps=1):
    t = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t) / reps


# -- measurements ------------------------------------------------------------------------------------------------
def hvp_costs(model, x, y, rounds, calls=10):
    """Seconds per gradient, per HVP (ours: graph reused / recomputed / on PyHessian's eval-mode matrix), per
    PyHessian HVP. Within a round the gradient is timed alone (``calls`` calls), then the products are called in
    turn, one call each, ``calls`` times, so that load from other processes falls on all of them alike."""
    import contextlib

    ml = ModelLoss(model, F.cross_entropy, [(x, y)])
    eval_ml = ModelLoss(EvalMode(model), F.cross_entropy, [(x, y)])
    v = torch.randn(ml.n, generator=torch.Generator().manual_seed(0))
    vs = ml.split(v)
    params = ml.params
    names = ["gradient (forward + backward)", "whyspike HVP, graph reused (Lanczos' case)",
             "whyspike HVP, recomputed each time", "whyspike HVP, graph reused, eval-mode BatchNorm (PyHessian's matrix)",
             "PyHessian HVP (graph reused; model.eval())"]
    rows = {k: [] for k in names}
    ph = _pyhessian()
    state = ml.get_state()

    def grad_once():  # the gradient of a training step: train mode, PyTorch's own modules
        model.train()
        torch.autograd.grad(F.cross_entropy(model(x), y), params)

    for _ in range(rounds):
        # the gradient alone (no Hessian graph held in memory), then the products called in turn
        grad_once()
        t = time.process_time()
        for _ in range(calls):
            grad_once()
        rows[names[0]].append((time.process_time() - t) / calls)
        with contextlib.ExitStack() as stack:
            reuse = stack.enter_context(ml.hessian(reuse_graph=True))
            fresh = stack.enter_context(ml.hessian(reuse_graph=False))
            ev = stack.enter_context(eval_ml.hessian(reuse_graph=True))
            fns = {names[1]: lambda: reuse(v), names[2]: lambda: fresh(v), names[3]: lambda: ev(v)}
            if ph is not None:
                from pyhessian.utils import hessian_vector_product

                model.zero_grad(set_to_none=True)
                h = ph.hessian(model, F.cross_entropy, data=(x, y), cuda=False)
                fns[names[4]] = lambda: hessian_vector_product(h.gradsH, h.params, vs)
            spent = dict.fromkeys(fns, 0.0)
            for fn in fns.values():
                fn()  # warm-up
            for _ in range(calls):
                for k, fn in fns.items():
                    t = time.process_time()
                    fn()
                    spent[k] += time.process_time() - t
            for k, tot in spent.items():
                rows[k].append(tot / calls)
            model.zero_grad(set_to_none=True)
        ml.set_state(state)  # the training-mode gradients updated the BatchNorm running statistics
    return {k: statistics.median(v) for k, v in rows.items() if v}


class EvalMode(nn.Module):
    """The wrapped model run in eval mode whatever mode it is asked for: PyHessian's matrix (it calls
    model.eval()), measured with whyspike's operator for like-for-like rows."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, x):
        self.m.eval()
        return self.m(x)


def eigen_accuracy(model, x, y):
    """HVPs to reach 1e-3 relative error on lambda_max: whyspike's Lanczos (oracle count and its own stopping rule)
    and PyHessian's power iteration (its defaults: maxIter 100, tol 1e-3), against a float64 reference."""
    ref_model = _float64_copy(model)
    ref_ml = ModelLoss(ref_model, F.cross_entropy, [(x.double(), y)])
    with ref_ml.hessian() as op:
        ref = lanczos(op, ref_ml.n, 1, tol=1e-12, max_iter=300)
    lam = ref.eigenvalues[0]
    ml = ModelLoss(model, F.cross_entropy, [(x, y)])
    with ml.hessian() as op:
        ours = lanczos(op, ml.n, 1, tol=1e-12, max_iter=120)  # full history, to read off when it got within 1e-3
        default = lanczos(op, ml.n, 1)  # the default stopping rule (tol 1e-4)
    first = next((i + 1 for i, h in enumerate(ours.history) if abs(h - lam) / abs(lam) <= 1e-3), None)
    out = {"reference": lam, "reference_hvps": ref.matvecs, "lanczos_first_within": first,
           "lanczos_default_hvps": default.matvecs, "lanczos_default_err": abs(default.eigenvalues[0] - lam) / abs(lam)}
    ph = _pyhessian()
    if ph is not None:
        eval_ml = ModelLoss(EvalMode(_float64_copy(model)), F.cross_entropy, [(x.double(), y)])
        with eval_ml.hessian() as op:
            lam_eval = lanczos(op, eval_ml.n, 1, tol=1e-12, max_iter=300).eigenvalues[0]
        out["reference_eval"] = lam_eval
        count = {"n": 0}
        phh = sys.modules["pyhessian.hessian"]

        real = phh.hessian_vector_product

        def counted(*a, **k):
            count["n"] += 1
            return real(*a, **k)

        phh.hessian_vector_product = counted
        try:
            torch.manual_seed(0)
            h = ph.hessian(model, F.cross_entropy, data=(x, y), cuda=False)  # note: PyHessian sets model.eval()
            ev, _ = h.eigenvalues(top_n=1)
            out.update(pyhessian_hvps=count["n"], pyhessian_err=abs(ev[0] - lam_eval) / abs(lam_eval))
            count["n"] = 0
            torch.manual_seed(0)
            ev, _ = h.eigenvalues(top_n=1, maxIter=400, tol=1e-6)
            out.update(pyhessian_strict_hvps=count["n"], pyhessian_strict_err=abs(ev[0] - lam_eval) / abs(lam_eval))
        finally:
            phh.hessian_vector_product = real
            model.zero_grad(set_to_none=True)
    return out


def surface_costs(model, x, y, rounds, grid=21):
    ml = ModelLoss(model, F.cross_entropy, [(x, y)])
    center = ml.get_flat()
    n = grid * grid

    def floor():
        with torch.no_grad(), ml.eval_mode():
            for _ in range(n):
                float(F.cross_entropy(model(x), y))

    rows = {"floor: 441 forward passes, fixed weights": [], "whyspike random_surface 21x21": [],
            "loss-landscapes random_plane 21x21": []}
    ll = _loss_landscapes()
    for _ in range(rounds):
        rows["floor: 441 forward passes, fixed weights"].append(cpu(floor))
        rows["whyspike random_surface 21x21"].append(cpu(lambda: random_surface(ml, center, grid=grid)))
        if ll is not None:
            import loss_landscapes.metrics as llm

            metric = llm.Loss(F.cross_entropy, x, y)
            model.eval()
            rows["loss-landscapes random_plane 21x21"].append(
                cpu(lambda: ll.random_plane(model, metric, distance=1, steps=grid, normalization="filter",
                                            deepcopy_model=True)))
    return {k: statistics.median(v) for k, v in rows.items() if v}


def _float64_copy(model):
    import copy

    m = copy.deepcopy(model).double()
    return m


_PH = _LL = False


def _pyhessian():
    global _PH
    if _PH is False:
        try:
            import pyhessian

            _PH = pyhessian
        except Exception as exc:  # noqa: BLE001 - reported in the output
            NOTES.append(f"PyHessian could not be imported: {type(exc).__name__}: {exc}")
            _PH = None
    return _PH


def _loss_landscapes():
    global _LL
    if _LL is False:
        try:
            import loss_landscapes

            _LL = loss_landscapes
        except Exception as exc:  # noqa: BLE001
            NOTES.append(f"loss-landscapes could not be imported: {type(exc).__name__}: {exc}")
            _LL = None
    return _LL


NOTES: list[str] = []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "landscape.md"), help="markdown file, or - for stdout")
    args = ap.parse_args(argv)
    lines = []
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/bench_landscape.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    lines += ["# Loss landscape: HVP cost, eigenvalue accuracy, surface cost", "",
              f"Generated by `{cmd}` on {now}: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
              f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, Python {platform.python_version()}, "
              f"torch {torch.__version__} (1 thread), whyspike {_version('whyspike')}, PyHessian "
              f"{_version('pyhessian')}, loss-landscapes {_version('loss-landscapes')}, numpy {_version('numpy')}.", "",
              "CPU seconds of this process (`time.process_time`), median of "
              f"{args.rounds} interleaved rounds. References are run as their users run them.", ""]
    verdicts = []
    for make in (mlp_workload, cnn_workload):
        name, model, x, y = make()
        n_params = sum(p.numel() for p in model.parameters())
        lines += [f"## {name} ({n_params:,} parameters)", ""]
        hv = hvp_costs(model, x, y, args.rounds)
        g = hv["gradient (forward + backward)"]
        lines += ["| operation | ms | / gradient | target | result |", "|---|---:|---:|---|---|"]
        for k, v in hv.items():
            target = "<= 2x" if k.startswith("whyspike HVP, graph") else ""
            res = ("**pass**" if v / g <= 2 else "**miss**") if target else ""
            if target:
                verdicts.append((f"{name}: HVP / gradient", v / g, res))
            lines.append(f"| {k} | {1e3 * v:.2f} | {v / g:.2f} | {target} | {res} |")
        lines.append("")
        ea = eigen_accuracy(model, x, y)
        lines += ["| top eigenvalue | HVPs | relative error | target | result |", "|---|---:|---:|---|---|",
                  f"| reference (float64 model, Lanczos to 1e-12) | {ea['reference_hvps']} | 0 (lambda_max = "
                  f"{ea['reference']:.6g}) | | |"]
        first = ea["lanczos_first_within"]
        res = "**pass**" if first is not None and first <= 40 else "**miss**"
        verdicts.append((f"{name}: HVPs to 1e-3", first, res))
        lines.append(f"| whyspike Lanczos: first product within 1e-3 | {first} | <= 1e-3 | <= 40 | {res} |")
        lines.append(f"| whyspike Lanczos, default stopping rule (tol 1e-4) | {ea['lanczos_default_hvps']} | "
                     f"{ea['lanczos_default_err']:.1e} | | |")
        if "pyhessian_hvps" in ea:
            if abs(ea["reference_eval"] - ea["reference"]) > 1e-6 * abs(ea["reference"]):
                lines.append(f"| reference of PyHessian's matrix (eval-mode BatchNorm, float64, Lanczos to 1e-12) | | "
                             f"0 (lambda_max = {ea['reference_eval']:.6g}) | | |")
            lines.append(f"| PyHessian power iteration, defaults (maxIter 100, tol 1e-3; model.eval()) | "
                         f"{ea['pyhessian_hvps']} | {ea['pyhessian_err']:.1e} | | |")
            lines.append(f"| PyHessian power iteration, tol 1e-6, maxIter 400 | {ea['pyhessian_strict_hvps']} | "
                         f"{ea['pyhessian_strict_err']:.1e} | | |")
        lines.append("")
        sc = surface_costs(model, x, y, args.rounds)
        fl = sc["floor: 441 forward passes, fixed weights"]
        lines += ["| 21x21 surface | s | / floor | target | result |", "|---|---:|---:|---|---|"]
        for k, v in sc.items():
            target = "<= 1.5x" if k.startswith("whyspike") else ""
            res = ("**pass**" if v / fl <= 1.5 else "**miss**") if target else ""
            if target:
                verdicts.append((f"{name}: surface / floor", v / fl, res))
            lines.append(f"| {k} | {v:.3f} | {v / fl:.2f} | {target} | {res} |")
        lines.append("")
    lines += ["## Notes", "",
              "- HVP: double backward through the gradient graph (Pearlmutter's trick via autograd). Lanczos builds the "
              "gradient graph once per batch and each product is one backward pass through it; the recomputed row "
              "(forward + backward with create_graph + backward) is what a product costs when the graph of all "
              "batches is not kept (more than 4 batches by default). The gradient row is a training step's gradient "
              "(train mode, PyTorch's own modules). In curvature mode BatchNorm runs as a composite of plain tensor ops "
              "(same function, no running-statistics update) because PyTorch's fused batch-norm double backward made a "
              "product ~3x a gradient on the CNN.",
              "- Curvature mode: BatchNorm in train mode (batch statistics), running statistics restored; PyHessian "
              "calls model.eval() and so measures the Hessian with the running statistics: the same matrix for the "
              "MLP, a different (and cheaper: BatchNorm is then a fixed affine map) one for the CNN. Each method's "
              "error is against the float64 reference of its own matrix; the eval-mode whyspike row times "
              "whyspike's operator on PyHessian's matrix.",
              "- Surface: filter-normalized directions (Li et al. 2018), parameters written in place; loss-landscapes "
              "evaluates its Loss metric with autograd enabled and deep-copies the model, as its documentation "
              "recommends.",
              "- GPU: none was used; the machine has no accelerator.", ""]
    lines += [f"- {n}" for n in NOTES]
    text = "\n".join(lines).rstrip() + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        sys.stdout.write(text)
    return 0 if all(v[2] == "**pass**" for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())

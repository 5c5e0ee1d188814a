"""Landscape measurements turned into evidence for the diagnosis' causes (no torch needed to read them).

:func:`landscape_evidence` reads a landscape report (``LandscapeReport`` or its ``whyspike/landscape-v1`` dict)
and returns, for each cause the measurements speak to, sentences that cite the numbers and a signed confidence
adjustment. The diagnosis adds ``confidence_delta`` to the cause's confidence (clipping to [0, 1]) and appends
the sentences to its evidence. Rules (each adjustment is a hand-set evidence weight, like the cause modules'):

``optimization_instability`` (the compared sharpness is λmax, or λmax(P⁻¹H) for Adam/RMSprop, against the
optimizer's threshold: 2/η, momentum and Adam variants in ``sources.OptimizerInfo``):
  +0.30  sharpness ≥ threshold at the checkpoint before the jump (the step was too large for the curvature);
  +0.15  and it fell below the threshold at a later checkpoint of the window (catapult: the loss rose until the
         weights reached a flatter region);
  +0.10  0.8 ≤ sharpness/threshold < 1 before the jump (edge of stability);
  −0.20  sharpness/threshold < 0.5 at every checkpoint measured (stable steps);
  +0.10  the loss on the straight path before → after rises above the higher end by more than 5% of it (a
         ridge crossed; the barrier over the chord is reported with it).
``plateau_escape``:
  +0.25  the smallest ‖∇L‖ among the checkpoints up to the one before the jump is < 10% of the largest ‖∇L‖
         measured, and the loss after the jump is lower (tiny gradients: a plateau, then a drop);
  +0.10  and λmin < 0 with |λmin| ≥ 10% of λmax at that checkpoint (a saddle);
  +0.05  and the loss falls monotonically on the straight path before → after;
  −0.15  that smallest ‖∇L‖ is ≥ 50% of the largest (not a plateau).
``stochastic`` (B = the run's batch size, else the batch size used for the estimate):
  +0.15  B < B_simple/10, or |G|² not above zero (the gradient of a step is mostly noise);
  +0.05  B_simple/10 ≤ B < B_simple;
  −0.15  B ≥ 3·B_simple (steps are close to full-batch gradient descent).
``lr_schedule`` (the learning rate stored in the optimizer state of each checkpoint):
  +0.05  the learning rate differs by more than 10% between the checkpoints before and after the jump;
  +0.10  more when that change was a decrease from sharpness/threshold ≥ 0.8 to < 0.8 (the decay took training
         off the edge of stability);
  −0.05  the same learning rate at every checkpoint measured.
Each cause's total is clipped to [−0.3, +0.45].

Return type: ``list[LandscapeEvidence]``, at most one per cause id, in the order above; only causes with at least
one rule firing appear. ``LandscapeEvidence`` fields: ``cause`` (str, a DESIGN.md cause id), ``confidence_delta``
(float in [−0.3, 0.45]), ``evidence`` (list[str], one sentence per rule fired, numbers included), ``measurements``
(dict[str, float | int | None], the numbers the rules used). ``to_dict()`` gives the JSON form.

    >>> report = {"checkpoints": {"before": {"epoch": 3}, "after": {"epoch": 4}},
    ...           "curvature": [{"epoch": 3, "lambda_max": 19.3, "lambda_min": 0.1, "threshold": 12.9,
    ...                          "threshold_rule": "2/lr", "compared": "lambda_max", "lr": 0.155, "grad_norm": 1.0,
    ...                          "loss": 0.6},
    ...                         {"epoch": 5, "lambda_max": 7.1, "lambda_min": 0.1, "threshold": 12.9,
    ...                          "threshold_rule": "2/lr", "compared": "lambda_max", "lr": 0.155, "grad_norm": 2.0,
    ...                          "loss": 0.3}]}
    >>> ev = landscape_evidence(report)[0]
    >>> ev.cause, ev.confidence_delta
    ('optimization_instability', 0.45)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class LandscapeEvidence:
    cause: str
    confidence_delta: float
    evidence: list[str]
    measurements: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"cause": self.cause, "confidence_delta": round(self.confidence_delta, 3), "evidence": self.evidence,
                "measurements": self.measurements}


LO, HI = -0.3, 0.45


def _f(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e5):
        return f"{v:.2g}"
    return f"{v:.3g}"


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _ratio(p: dict):
    thr = _num(p.get("threshold"))
    key = p.get("compared") or "lambda_max"
    s = _num(p.get(key))
    if thr is None or s is None or thr <= 0:
        return None, s, thr
    return s / thr, s, thr


def _name(p: dict) -> str:
    return "preconditioned sharpness lambda_max(P^-1 H)" if p.get("compared") == "preconditioned_lambda_max" \
        else "lambda_max"


def landscape_evidence(report) -> list[LandscapeEvidence]:
    """Evidence per cause from a landscape report (see the module docstring for the rules and the return type)."""
    d = report.to_dict() if hasattr(report, "to_dict") else report
    ck = d.get("checkpoints") or {}
    b_ep = (ck.get("before") or {}).get("epoch")
    a_ep = (ck.get("after") or {}).get("epoch")
    curv = sorted((p for p in d.get("curvature") or [] if p.get("epoch") is not None), key=lambda p: p["epoch"])
    pb = next((p for p in curv if p["epoch"] == b_ep), None)
    later = [p for p in curv if a_ep is not None and p["epoch"] >= a_ep]
    interp = d.get("interpolation") or None
    out: list[LandscapeEvidence] = []

    # -- optimization_instability
    ev, delta, meas = [], 0.0, {}
    if pb is not None:
        r, s, thr = _ratio(pb)
        meas.update(sharpness_before=s, threshold=thr, ratio_before=r, lr_before=_num(pb.get("lr")))
        if r is not None and r >= 1:
            delta += 0.30
            ev.append(f"{_name(pb)} was {_f(s)} at epoch {b_ep}, above the stability threshold {_f(thr)} "
                      f"({pb.get('threshold_rule')}, lr {_f(pb.get('lr'))}): the step size was too large for the "
                      "curvature right before the jump")
            fell = [p for p in later if (_ratio(p)[0] or math.inf) < 1 and (_ratio(p)[1] or math.inf) < s]
            if fell:
                p = fell[0]
                rp, sp, tp = _ratio(p)
                delta += 0.15
                meas.update(sharpness_after=sp, epoch_below=p["epoch"])
                ev.append(f"{_name(p)} then fell to {_f(sp)}, below the threshold {_f(tp)}, by epoch {p['epoch']}: "
                          "the catapult signature (the loss rises until the weights reach a flatter region)")
        elif r is not None and r >= 0.8:
            delta += 0.10
            ev.append(f"{_name(pb)} was {_f(s)} at epoch {b_ep}, {r:.0%} of the stability threshold {_f(thr)} "
                      f"({pb.get('threshold_rule')}): training sat at the edge of stability, where loss spikes recur")
        rs = [_ratio(p)[0] for p in curv]
        if rs and all(x is not None and x < 0.5 for x in rs):
            delta -= 0.20
            ev.append(f"the sharpness stayed below {max(rs):.0%} of the stability threshold at every checkpoint "
                      f"from epoch {curv[0]['epoch']} to {curv[-1]['epoch']}: the steps were stable for the curvature")
    if interp:
        bar, rise = _num(interp.get("barrier")), _num(interp.get("rise_above_endpoints"))
        alphas = interp.get("alphas") or []
        ends = [interp["train_loss"][i] for i, a in enumerate(alphas) if a in (0.0, 1.0)
                and _num(interp["train_loss"][i]) is not None]
        if bar is not None and rise is not None and len(ends) == 2:
            meas.update(barrier=bar, rise_above_endpoints=rise)
            if rise > 0.05 * max(abs(x) for x in ends):
                delta += 0.10
                ev.append(f"the straight path from epoch {b_ep} to epoch {a_ep} crosses a ridge: the loss rises "
                          f"{_f(rise)} above the higher end (ends at {_f(ends[0])} and {_f(ends[1])}; barrier "
                          f"{_f(bar)} over the chord): the update jumped across it instead of descending")
    if ev:
        out.append(LandscapeEvidence("optimization_instability", _clip(delta), ev, meas))

    # -- plateau_escape
    ev, delta, meas = [], 0.0, {}
    early = [p for p in curv if b_ep is not None and p["epoch"] <= b_ep and _num(p.get("grad_norm")) is not None]
    pa = next((p for p in curv if p["epoch"] == a_ep), None)
    grads = [p for p in curv if _num(p.get("grad_norm")) is not None]
    if early and grads and pa is not None:
        flat = min(early, key=lambda p: p["grad_norm"])
        peak = max(grads, key=lambda p: p["grad_norm"])
        gb, gmax = flat["grad_norm"], peak["grad_norm"]
        dropped = _num(flat.get("loss")) is not None and _num(pa.get("loss")) is not None and pa["loss"] < flat["loss"]
        if gmax > 0:
            meas.update(grad_norm_plateau=gb, plateau_epoch=flat["epoch"], grad_norm_peak=gmax,
                        peak_epoch=peak["epoch"])
            if gb < 0.1 * gmax and dropped:
                delta += 0.25
                ev.append(f"the gradient norm was {_f(gb)} at epoch {flat['epoch']} (loss {_f(flat.get('loss'))}), "
                          f"{gb / gmax:.1%} of the {_f(gmax)} it reached at epoch {peak['epoch']}: the optimizer sat on "
                          f"a plateau with tiny gradients before the loss fell to {_f(pa['loss'])}")
            elif gb >= 0.5 * gmax:
                delta -= 0.15
                ev.append(f"the gradient norm before the jump was never small (at least {_f(gb)}, "
                          f"{gb / gmax:.0%} of the largest, {_f(gmax)}): not a plateau")
        lmin, lmax = _num(flat.get("lambda_min")), _num(flat.get("lambda_max"))
        if lmin is not None and lmax is not None and lmin < 0 and abs(lmin) >= 0.1 * abs(lmax) and delta > 0:
            delta += 0.10
            meas.update(lambda_min_plateau=lmin, lambda_max_plateau=lmax)
            ev.append(f"the Hessian had negative curvature lambda_min = {_f(lmin)} (lambda_max {_f(lmax)}) at epoch "
                      f"{flat['epoch']}: a saddle, which gradient descent leaves slowly, then abruptly")
    if interp and delta > 0:
        losses = interp.get("train_loss") or []
        alphas = interp.get("alphas") or []
        l0 = next((losses[i] for i, a in enumerate(alphas) if a == 0.0), None)
        l1 = next((losses[i] for i, a in enumerate(alphas) if a == 1.0), None)
        if interp.get("monotonic") and _num(l0) is not None and _num(l1) is not None and l1 < l0:
            delta += 0.05
            ev.append(f"the loss falls monotonically along the straight path from epoch {b_ep} ({_f(l0)}) to epoch "
                      f"{a_ep} ({_f(l1)}): a descent out of a flat region, not a jump across a ridge")
    if ev:
        out.append(LandscapeEvidence("plateau_escape", _clip(delta), ev, meas))

    # -- stochastic
    ns = d.get("noise_scale") or None
    if ns:
        ev, delta = [], 0.0
        bsim, g2 = _num(ns.get("b_simple")), _num(ns.get("grad_sq"))
        batch = _num(ns.get("run_batch_size")) or _num(ns.get("batch_size"))
        meas = {"b_simple": bsim, "b_simple_stderr": _num(ns.get("b_simple_stderr")), "batch_size": batch,
                "grad_sq": g2, "trace_sigma": _num(ns.get("trace_sigma"))}
        g2_err = _num(ns.get("grad_sq_stderr"))
        if batch:
            if g2 is not None and (g2 <= 0 or (g2_err is not None and g2 < 2 * g2_err)):
                delta += 0.15
                ev.append(f"the squared true-gradient norm |G|^2 = {_f(g2)} is not distinguishable from zero "
                          f"(± {_f(g2_err)}) at epoch {ns.get('epoch')} while tr(Sigma) = {_f(ns.get('trace_sigma'))}: "
                          f"each batch-{int(batch)} gradient is mostly noise")
            elif bsim is not None and bsim > 0:
                if batch < bsim / 10:
                    delta += 0.15
                    ev.append(f"the batch size {int(batch)} is {bsim / batch:.0f}x smaller than the gradient noise "
                              f"scale B_simple = {_f(bsim)} at epoch {ns.get('epoch')}: each step's gradient is mostly "
                              "noise, so SGD noise alone can move the loss")
                elif batch < bsim:
                    delta += 0.05
                    ev.append(f"the batch size {int(batch)} is below the gradient noise scale B_simple = {_f(bsim)}: "
                              "step-to-step noise is comparable to the signal")
                elif batch >= 3 * bsim:
                    delta -= 0.15
                    ev.append(f"the batch size {int(batch)} is {batch / bsim:.1f}x the gradient noise scale "
                              f"B_simple = {_f(bsim)}: the steps are close to full-batch gradient descent, so SGD "
                              "noise is an unlikely cause")
        if ev:
            out.append(LandscapeEvidence("stochastic", _clip(delta), ev, meas))

    # -- lr_schedule
    pa = next((p for p in curv if p["epoch"] == a_ep), None)
    if pb is not None and pa is not None and _num(pb.get("lr")) and _num(pa.get("lr")):
        lb, la = pb["lr"], pa["lr"]
        ev, delta = [], 0.0
        meas = {"lr_before": lb, "lr_after": la}
        if abs(la - lb) > 0.1 * max(lb, la):
            delta += 0.05
            ev.append(f"the optimizer's learning rate changed from {_f(lb)} (checkpoint of epoch {b_ep}) to {_f(la)} "
                      f"(epoch {a_ep})")
            rb = _ratio(pb)[0]
            s_b = _ratio(pb)[1]
            thr_new = pb["threshold"] * lb / la if _num(pb.get("threshold")) else None
            if la < lb and rb is not None and rb >= 0.8 and thr_new and s_b is not None and s_b / thr_new < 0.8:
                delta += 0.10
                meas.update(ratio_old_lr=rb, ratio_new_lr=s_b / thr_new)
                ev.append(f"with the old rate the sharpness {_f(s_b)} was {rb:.0%} of the stability threshold, with the "
                          f"new one {s_b / thr_new:.0%}: the decay took training off the edge of stability")
        elif len({round(p["lr"], 12) for p in curv if _num(p.get("lr"))}) == 1:
            delta -= 0.05
            ev.append(f"the learning rate in the optimizer state is {_f(lb)} at every checkpoint from epoch "
                      f"{curv[0]['epoch']} to {curv[-1]['epoch']}")
        if ev:
            out.append(LandscapeEvidence("lr_schedule", _clip(delta), ev, meas))
    return out


def _clip(x: float) -> float:
    return round(min(HI, max(LO, x)), 3)

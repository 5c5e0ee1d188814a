"""Each cause family, from logs alone: runs built with known mechanisms, explained by the right module."""

import numpy as np

from whyspike.diagnosis import diagnose
from whyspike.run import Run, Source, make_series


def _run(*series, events=(), **setup):
    run = Run(Source("synthetic", "test"))
    for s in series:
        run.add(s)
    run.events.extend(events)
    for k, v in setup.items():
        setattr(run.setup, k, v)
    return run


def _top(d, metric, near, tol=2):
    spikes = [s for s in d.spikes if s.metric == metric and abs(s.at - near) <= tol]
    assert spikes, [(s.metric, s.at, s.causes[0].id) for s in d.spikes]
    return spikes[0].causes


def test_warmup_end_spike_is_lr_warmup():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 3000, 10)
    lr = np.where(steps < 1000, 1e-3 * steps / 1000, 1e-3 * (1 + np.cos(np.pi * (steps - 1000) / 2000)) / 2)
    loss = 3.0 * np.exp(-steps / 800) + 0.5 + 0.01 * rng.standard_normal(len(steps))
    loss[(steps >= 1000) & (steps < 1040)] += 1.0  # the spike where the ramp peaks
    d = diagnose(_run(make_series("train/loss", "step", steps, loss), make_series("train/learning_rate", "step", steps, lr)))
    causes = _top(d, "train/loss", 1000, tol=50)
    assert causes[0].id == "lr_warmup"
    assert "1000" in causes[0].evidence[0]


def test_resume_with_rewound_steps_and_lr_reset_is_resume():
    rng = np.random.default_rng(1)
    events, warnings = [], []
    x1, x2 = np.arange(0, 60), np.arange(50, 100)  # restarted from epoch 50's checkpoint, epochs 50-59 re-logged
    acc1 = 0.6 + 0.3 * (1 - np.exp(-x1 / 15)) + 0.005 * rng.standard_normal(len(x1))
    acc2 = 0.6 + 0.3 * (1 - np.exp(-x2 / 15)) - 0.15 * np.exp(-(x2 - 50) / 8) + 0.005 * rng.standard_normal(len(x2))
    lr1 = np.where(x1 < 40, 0.1, 0.01)
    lr2 = np.full(len(x2), 0.1)  # the scheduler state was lost: back to the initial LR
    x, acc, lr = np.r_[x1, x2], np.r_[acc1, acc2], np.r_[lr1, lr2]
    run = _run(make_series("val_accuracy", "epoch", x, acc, events=events, warnings=warnings),
               make_series("lr", "epoch", x, lr), events=events)
    d = diagnose(run)
    assert any(f.id == "resume_detected" for f in d.findings)
    causes = _top(d, "val_accuracy", 50)
    assert causes[0].id == "resume"


def test_late_validation_rise_after_train_saturation_is_grokking():
    rng = np.random.default_rng(2)
    x = np.arange(300)
    train = np.minimum(1.0, 0.1 + x / 10) - 0.002 * rng.random(300)
    val = 0.08 + 0.005 * rng.standard_normal(300)
    val[150:] = 0.93 + 0.005 * rng.standard_normal(150)
    wn = np.where(x < 150, 40.0, 25.0) + 0.05 * rng.standard_normal(300)
    d = diagnose(_run(make_series("accuracy", "epoch", x, train), make_series("val_accuracy", "epoch", x, val),
                      make_series("weight_norm", "epoch", x, wn), weight_decay=1.0))
    causes = _top(d, "val_accuracy", 150)
    assert causes[0].id == "grokking"
    assert any("weight_norm" in e for e in causes[0].evidence)


def test_validation_swinging_while_train_is_smooth_points_to_batchnorm():
    rng = np.random.default_rng(3)
    x = np.arange(80)
    train = 0.97 + 0.001 * rng.standard_normal(80)
    val = 0.90 + 0.004 * rng.standard_normal(80)
    val[40] = 0.55  # one eval-mode collapse
    d = diagnose(_run(make_series("accuracy", "epoch", x, train), make_series("val_accuracy", "epoch", x, val),
                      has_batchnorm=True))
    causes = _top(d, "val_accuracy", 40, tol=0)
    ids = [c.id for c in causes]
    assert ids[0] == "batchnorm_statistics" or (ids[0] == "stochastic" and "batchnorm_statistics" in ids)
    assert "batchnorm_statistics" in ids


def test_loss_spike_with_gradient_norm_spike_is_instability():
    rng = np.random.default_rng(4)
    steps = np.arange(2000)
    loss = 2.0 * np.exp(-steps / 400) + 0.3 + 0.01 * rng.standard_normal(2000)
    loss[1200:1203] += 2.0
    gn = 1.0 + 0.05 * rng.standard_normal(2000)
    gn[1199:1202] = 40.0
    d = diagnose(_run(make_series("loss", "step", steps, loss), make_series("grad_norm", "step", steps, gn),
                      make_series("lr", "step", steps, np.full(2000, 3e-4))))
    causes = _top(d, "loss", 1201, tol=2)
    assert causes[0].id == "optimization_instability"
    assert any("grad_norm" in e for e in causes[0].evidence)


def test_unexplained_transient_is_stochastic_with_the_seed_probe():
    rng = np.random.default_rng(5)
    x = np.arange(100)
    val = 0.8 + 0.01 * rng.standard_normal(100)
    val[55] -= 0.12
    d = diagnose(_run(make_series("val_accuracy", "epoch", x, val), make_series("lr", "epoch", x, np.full(100, 0.1))))
    causes = _top(d, "val_accuracy", 55, tol=0)
    assert causes[0].id == "stochastic"
    assert "seed" in causes[0].probe


def test_missing_signals_are_named_when_the_log_is_thin():
    x = np.arange(30)
    d = diagnose(_run(make_series("accuracy", "epoch", x, 0.5 + 0.01 * x)))
    missing = {m.signal for m in d.missing}
    assert {"learning_rate", "validation metric"} <= missing

"""Grokking: (a + b) mod 31, memorized in a few steps, generalized hundreds of steps later under weight decay.

MECHANISMS.md, grokking: an embedding + MLP trained full-batch with AdamW (lr 1e-2, weight decay 1) fits its
training pairs almost at once; validation accuracy stays near chance while weight decay shrinks the memorizing
solution, then rises steeply. Validation is logged every ``eval_every`` steps as step values (``step/val_accuracy``),
as a step-based loop logs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import require
from ._base import Scenario
from ._torchkit import torch_seeded


@dataclass(frozen=True)
class Config:
    seed: int = 0
    modulus: int = 31
    train_fraction: float = 0.6
    lr: float = 1e-2
    weight_decay: float = 1.0
    steps: int = 1500
    eval_every: int = 10
    embed: int = 64
    hidden: int = 256


def pairs(cfg: Config):
    """All pairs (a, b), their sums mod p, and the train / validation split, drawn from torch's global RNG seeded
    with ``cfg.seed`` (which it leaves there: the recording initialises its model next)."""
    torch = torch_seeded(cfg.seed)
    p = cfg.modulus
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    y = (x[:, 0] + x[:, 1]) % p
    perm = torch.randperm(len(x))
    n = int(len(x) * cfg.train_fraction)
    return x, y, perm[:n], perm[n:]


def add_mod(cfg: Config):
    """Embedding of each operand, concatenated, one hidden ReLU layer, logits over the p residues."""
    torch = require("torch", "torch")
    nn, p = torch.nn, cfg.modulus

    class AddMod(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(p, cfg.embed)
            self.mlp = nn.Sequential(nn.Linear(2 * cfg.embed, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, p))

        def forward(self, pairs):
            return self.mlp(self.emb(pairs).reshape(len(pairs), -1))

    return AddMod()


def train(cfg: Config, run_dir: Path) -> None:
    x, y, tr, va = pairs(cfg)  # seeds torch first: the split, then the initialisation, as before
    import torch

    from ..record.torch import Recorder

    f = torch.nn.functional
    n = len(tr)
    model = add_mod(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rec = Recorder(opt, model, run_dir=run_dir, live=False, batch_size=n, train_size=n, eval_size=len(va),
                   steps_per_epoch=1, checkpoints=0)
    for t in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        out = model(x[tr])
        loss = f.cross_entropy(out, y[tr])
        loss.backward()
        opt.step()
        val = {}
        if t % cfg.eval_every == 0:
            with torch.no_grad():
                o = model(x[va])
                val = {"val_loss": float(f.cross_entropy(o, y[va])),
                       "val_accuracy": float((o.argmax(-1) == y[va]).float().mean())}
        rec.step(loss=loss, output=out, target=y[tr], **val)
    rec.close(verdict=False)


def spec(cfg: Config = Config()):
    """This training for the probes' in-process engine: full batch (one step an "epoch", so the probe's epochs are
    the recording's steps), AdamW, validation after every step (the recording: every ``eval_every``)."""
    import torch

    from ..probe.spec import TrainingSpec

    with torch.random.fork_rng(devices=[]):  # the split's seeding stays here
        x, y, tr, va = pairs(cfg)
    return TrainingSpec(lambda: add_mod(cfg), x[tr], y[tr], x[va], y[va], optimizer="adamw", lr=cfg.lr,
                        weight_decay=cfg.weight_decay, batch_size=len(tr), epochs=cfg.steps)


def spec_ci():
    return spec(SCENARIO.config("ci"))


def spec_full():
    return spec(SCENARIO.config("full"))


SCENARIO = Scenario(
    name="grokking",
    description="(a+b) mod 31: train fit at once, validation rises hundreds of steps later (AdamW wd 1)",
    truth="grokking",
    metric="step/val_accuracy",
    train=train,
    sizes={"full": Config(steps=2500), "ci": Config(steps=1200, hidden=128)},
    why=("The training pairs are memorized within ~15 steps; weight decay then slowly trades the memorizing weights "
         "for the smaller-norm solution that computes the sum, and validation accuracy rises from chance long "
         "after the training set is fit."),
    probe_plan=("seeds", "wd=off"),
    tags=("dynamics",),
)

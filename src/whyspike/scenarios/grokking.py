"""Grokking: (a + b) mod 31, memorized in a few steps, generalized hundreds of steps later under weight decay.

MECHANISMS.md, grokking: an embedding + MLP trained full-batch with AdamW (lr 1e-2, weight decay 1) fits its
training pairs almost at once; validation accuracy stays near chance while weight decay shrinks the memorizing
solution, then rises steeply. Validation is logged every ``eval_every`` steps as step values (``step/val_accuracy``),
as a step-based loop logs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def train(cfg: Config, run_dir: Path) -> None:
    torch = torch_seeded(cfg.seed)
    from ..record.torch import Recorder

    f, nn, p = torch.nn.functional, torch.nn, cfg.modulus
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    y = (x[:, 0] + x[:, 1]) % p
    perm = torch.randperm(len(x))
    n = int(len(x) * cfg.train_fraction)
    tr, va = perm[:n], perm[n:]

    class AddMod(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(p, cfg.embed)
            self.mlp = nn.Sequential(nn.Linear(2 * cfg.embed, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, p))

        def forward(self, pairs):
            return self.mlp(self.emb(pairs).reshape(len(pairs), -1))

    model = AddMod()
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
    probe_plan=("wd=x0.5", "wd=x2", "wd=0", "seeds"),
    tags=("dynamics",),
)

"""A real LR-drop jump (MECHANISMS.md, lr_schedule) in a plain PyTorch loop: an MLP on sklearn's digits with 20% of
the training labels replaced at random, SGD + momentum 0.9 at LR 0.2 — the training loss stays high, the noisy
labels fought by the large steps — and MultiStepLR dividing the LR by 10 at epoch 8, which drops the loss at once.
Seeded (torch and NumPy), so that its reruns are the same training. ``--adam``: Adam at LR 0.002 instead of SGD
(an optimizer without a momentum hyper-parameter)."""

import sys

import numpy as np
import torch
from sklearn.datasets import load_digits

torch.manual_seed(0)
rng = np.random.default_rng(0)
x, y = load_digits(return_X_y=True)
order = rng.permutation(len(x))
x, y = (x[order] / 16).astype("float32"), y[order]
n = 1300
y_train = np.where(rng.random(n) < 0.2, rng.integers(0, 10, n), y[:n])

data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x[:n]), torch.from_numpy(y_train)),
                                   batch_size=32, shuffle=True)
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                            torch.nn.Linear(256, 10))
if sys.argv[1:] == ["--adam"]:
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
else:
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
drop = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[8], gamma=0.1)
for epoch in range(18):
    for xb, yb in data:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    drop.step()

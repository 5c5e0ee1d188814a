"""A plain PyTorch loop (no whyspike in it): a linear model with two parameter groups (weights at LR 0.1, bias at
0.05), SGD with momentum 0.9 and weight decay 1e-3, MultiStepLR x0.1 at epochs 3 and 5, 6 epochs of 4 steps.
``python torch_multistep.py OUT.pt`` saves the final weights. ``train(factors=[...], momentum=..., weight_decay=...)``
trains the same model with each epoch's LR set by hand (group base LR x factor) instead of the scheduler."""

import sys

import torch


def train(factors=None, momentum=0.9, weight_decay=1e-3, epochs=6):
    torch.manual_seed(0)
    x, y = torch.randn(128, 4), torch.randint(0, 3, (128,))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    model = torch.nn.Linear(4, 3)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.05}]
    opt = torch.optim.SGD(groups, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 5], gamma=0.1) if factors is None else None
    for epoch in range(epochs):
        if factors is not None:
            for g, b in zip(opt.param_groups, base):
                g["lr"] = b * factors[epoch]
        for xb, yb in data:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


if __name__ == "__main__":
    torch.save(train(), sys.argv[1])

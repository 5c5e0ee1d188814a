from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_LOGS = SHARED / "real-logs"
SEED = SHARED / "seed"


@pytest.fixture
def real_logs() -> Path:
    if not REAL_LOGS.is_dir():
        pytest.fail(f"the shared real logs are missing at {REAL_LOGS}; the tests expect ../shared beside the checkout")
    return REAL_LOGS


@pytest.fixture
def checkpoint_every_epoch(monkeypatch):
    """Tiny test trainings have millisecond epochs: without this the recorder's checkpoint time budget would skip
    epochs (the budget itself is tested in tests/record/test_store.py with explicit values)."""
    monkeypatch.setenv("WHYSPIKE_CHECKPOINT_BUDGET", "1")


@pytest.fixture
def one_torch_thread():
    """One BLAS/torch thread per process: with two a small model was measured 25x slower under load on 2 cores."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_ignore_collect(collection_path, config):
    # conftest files are plugins, not doctest modules: collected as such (--doctest-modules) two of them clash by
    # their shared basename when several test folders are named on the command line
    return True if collection_path.name == "conftest.py" else None


def record_step_decay(path: Path, *, checkpoints: int = 0, out=None, verdict: bool = False):
    """A real tiny PyTorch training recorded by whyspike: label noise and a large LR keep validation accuracy low
    and swinging until MultiStepLR divides the LR by 10 at epoch 15. Returns (validation accuracies, the
    diagnosis ``close`` printed, or None)."""
    import io

    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from whyspike.record.torch import Recorder

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 5, generator=g)
    x = torch.randn(1024, 20, generator=g)
    y = (x @ w).argmax(1)
    flip = torch.rand(1024, generator=g) < 0.3
    y[flip] = torch.randint(0, 5, (int(flip.sum()),), generator=g)
    xv = torch.randn(500, 20, generator=g)
    yv = (xv @ w).argmax(1)
    torch.manual_seed(0)
    model = torch.nn.Linear(20, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[15], gamma=0.1)
    rec = Recorder(opt, model, path, scheduler=sched, out=out or io.StringIO(), checkpoints=checkpoints,
                   eval_size=500)
    val = []
    for _ in range(30):
        perm = torch.randperm(1024, generator=g)
        for i in range(0, 1024, 32):
            j = perm[i:i + 32]
            opt.zero_grad()
            logits = model(x[j])
            loss = F.cross_entropy(logits, y[j])
            loss.backward()
            opt.step()
            rec.step(loss=loss, output=logits, target=y[j])
        sched.step()
        with torch.no_grad():
            vl = model(xv)
        val.append((vl.argmax(1) == yv).float().mean().item())
        rec.epoch_end(val_loss=F.cross_entropy(vl, yv).item(), val_accuracy=val[-1])
    return val, rec.close(verdict=verdict)


@pytest.fixture
def step_decay_run():
    """:func:`record_step_decay`, for the tests of every layer that need a recorded run with a real, explained jump."""
    return record_step_decay

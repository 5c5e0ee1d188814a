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

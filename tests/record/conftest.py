import importlib.util

import pytest


@pytest.fixture(autouse=True)
def _checkpoint_every_epoch(monkeypatch):
    # tiny test trainings have millisecond epochs: without this the checkpoint time budget would skip epochs
    # (the budget itself is tested in test_store.py with explicit values)
    monkeypatch.setenv("WHYSPIKE_CHECKPOINT_BUDGET", "1")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # one BLAS/torch thread per process: with two a small model was measured 25x slower under load on 2 cores
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

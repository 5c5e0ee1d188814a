import pytest


@pytest.fixture(autouse=True)
def _checkpoint_every_epoch(monkeypatch):
    # tiny test trainings have millisecond epochs: without this the checkpoint time budget would skip epochs
    # (the budget itself is tested in test_store.py with explicit values)
    monkeypatch.setenv("WHYSPIKE_CHECKPOINT_BUDGET", "1")

import importlib.util

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread_and_every_checkpoint(monkeypatch):
    # tiny trainings have millisecond epochs: without this the checkpoint time budget would skip epochs (and the
    # recordings would differ from run to run by what the clock allowed)
    monkeypatch.setenv("WHYSPIKE_CHECKPOINT_BUDGET", "1")
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


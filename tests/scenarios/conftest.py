import pytest


@pytest.fixture(autouse=True)
def _tiny_trainings(checkpoint_every_epoch, one_torch_thread):
    # a checkpoint at every epoch (recordings must not depend on what the clock allowed), one torch thread: see
    # tests/conftest.py
    yield

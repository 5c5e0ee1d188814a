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

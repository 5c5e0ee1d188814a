"""The same study on a local 2-CPU Ray instance (object store capped): a worker killed mid-study is retried and
the results equal those of an uninterrupted run in one process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
ray = pytest.importorskip("ray")

from whyspike.probe.study import run_study  # noqa: E402

TARGETS = Path(__file__).parent / "targets.py"
PLAN = dict(spike=2, interventions=["wd.scale=2", "lr.scale=0.5"], seeds=2, progress=False)


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("seconds", "original_seconds")}


def test_a_ray_study_survives_a_killed_worker(tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv("WHYSPIKE_TEST_KILL_MARKER", str(marker))
    reference = run_study(f"{TARGETS}:flaky", tmp_path / "inline", executor="inline", **PLAN)
    assert not marker.exists()  # the in-process run was never killed
    env = {"WHYSPIKE_TEST_KILL_MARKER": str(marker), "WHYSPIKE_TEST_IN_WORKER": "1", "OMP_NUM_THREADS": "1"}
    init = {"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024, "runtime_env": {"env_vars": env}}
    got = run_study(f"{TARGETS}:flaky", tmp_path / "ray", executor="ray", ray_init=init, **PLAN)
    assert marker.read_text() == "killed once"  # one worker died mid-study: Ray ran its task again
    assert not ray.is_initialized()  # the instance this study started is shut down
    assert _strip(got) == _strip(reference)
    assert {v["name"]: v["verdict"] for v in got["interventions"]} == {
        v["name"]: v["verdict"] for v in reference["interventions"]}
    assert len(os.listdir(tmp_path / "ray" / "replicas")) == 3  # baseline + 2 arms, each written once

"""Where a study's tasks run: in this process, in a local process pool, or on a Ray cluster — the same task
functions on each. A task is a plain dict (picklable: a factory reference, interventions as strings, a path to the
branch state), so a worker rebuilds everything it needs itself.

Each executor calls ``on_done(task_id, results)`` as tasks finish (the study writes them to disk at once) and
``on_error(task_id, message)`` for a task that could not run (a crashed worker after its retries, a lost cluster):
one task's failure never stops the others.
"""

from __future__ import annotations

import os
from typing import Callable

from ..errors import UsageError, require

EXECUTORS = ("local", "ray", "inline")

Done = Callable[[str, list], None]
Failed = Callable[[str, str], None]


def _worker_init() -> None:
    # one BLAS / torch thread per worker: two threads per process were measured 25x slower under load on 2 cores
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def run_tasks(tasks: dict[str, dict], fn: Callable[[dict], list], on_done: Done, on_error: Failed, *,
              executor: str = "local", workers: int | None = None, address: str | None = None,
              ray_init: dict | None = None) -> None:
    """Run ``fn(task)`` for every task; results and failures go to the callbacks as they come."""
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: must be one of {', '.join(EXECUTORS)}")
    if not tasks:
        return
    if executor == "inline" or (executor == "local" and (workers == 1 or len(tasks) == 1)):
        _worker_init()
        for tid, task in tasks.items():
            try:
                on_done(tid, fn(task))
            except Exception as exc:  # noqa: BLE001 - one task's failure must not stop the study
                on_error(tid, f"{type(exc).__name__}: {exc}")
        return
    if executor == "local":
        _local(tasks, fn, on_done, on_error, workers or min(len(tasks), os.cpu_count() or 1))
    else:
        _ray(tasks, fn, on_done, on_error, address, workers, ray_init or {})


def _local(tasks, fn, on_done, on_error, workers: int) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn: a fresh interpreter per worker (forking a process that holds torch's thread pools can deadlock)
    ctx = multiprocessing.get_context("spawn")
    pending = dict(tasks)
    while pending:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = {pool.submit(fn, task): tid for tid, task in pending.items()}
            broken = False
            for fut in as_completed(futures):
                tid = futures[fut]
                try:
                    on_done(tid, fut.result())
                except BrokenProcessPool:
                    broken = True  # a worker died (killed, out of memory): retried below, once
                    continue
                except Exception as exc:  # noqa: BLE001
                    on_error(tid, f"{type(exc).__name__}: {exc}")
                pending.pop(tid, None)
        if broken:
            retry = pending
            pending = {}
            for tid, task in retry.items():  # one at a time, in a fresh pool each, so one bad task stays alone
                with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_worker_init) as pool:
                    try:
                        on_done(tid, pool.submit(fn, task).result())
                    except BrokenProcessPool:
                        on_error(tid, "the worker process died twice running this replica (killed or out of memory)")
                    except Exception as exc:  # noqa: BLE001
                        on_error(tid, f"{type(exc).__name__}: {exc}")


def _ray(tasks, fn, on_done, on_error, address, workers, ray_init: dict) -> None:
    ray = require("ray", "ray")
    started_here = False
    if not ray.is_initialized():
        kwargs = dict(ray_init)
        if address:
            kwargs["address"] = address
        elif workers:
            kwargs.setdefault("num_cpus", workers)
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("log_to_driver", False)
        kwargs.setdefault("runtime_env", {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
        try:
            ray.init(**kwargs)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"--executor ray: cannot connect to a Ray cluster at {address or 'a new local one'} "
                             f"({type(exc).__name__}: {exc}); start one with `ray start --head` or omit --address")
        started_here = True
    remote = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)(_ray_task)
    refs = {remote.remote(fn, task): tid for tid, task in tasks.items()}
    try:
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                tid = refs[ref]
                try:
                    on_done(tid, ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - a task that failed after its retries, a lost node
                    on_error(tid, f"ray: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        if started_here:
            ray.shutdown()


def _ray_task(fn, task):
    _worker_init()
    return fn(task)

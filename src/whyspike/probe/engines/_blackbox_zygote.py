"""A warm process that forks black-box replicas: Keras and torch imported once, not once per replica.

Importing Keras 3 and torch costs ~5 s of CPU, more than training one of the seed's examples; a study of a dozen
replicas would spend most of its time importing. This process imports them (and whyspike's recorder) once, then
forks one child per request; the child is a fresh replica in every way that matters — nothing was trained, no model
built, no seed set in the parent — and its generators are reseeded from the OS after the fork (a forked child would
otherwise inherit the parent's random state: unseeded scripts must differ from replica to replica, as fresh
processes do).

Protocol, JSON lines (one request at a time): stdin ``{"argv": [...], "env": {...}, "cwd": DIR, "log": FILE}`` →
stdout ``{"pid": PID}`` once the child runs, then ``{"pid": PID, "exit": CODE}`` when it ends. The child runs
``_blackbox_child.main(argv)`` in its own session (the client kills its process group on a timeout), its stdout and
stderr in ``log``. End of stdin: the running child is killed and this process exits.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys


def _warm_up() -> None:
    import numpy  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    try:
        import keras  # noqa: F401  (the backend is KERAS_BACKEND, part of this process's key)
    except ImportError:
        pass
    from ...record import _intervene, inject, keras as keras_recorder  # noqa: F401
    from . import _blackbox_child  # noqa: F401


def _child(req: dict, proto_fd: int) -> None:
    """In the forked child: a fresh session, the log as stdout/stderr, the replica's environment, new seeds."""
    code = 1
    try:
        os.setsid()
        os.close(proto_fd)
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(req.get("env") or {})
        os.chdir(req.get("cwd") or ".")
        if sys.path and sys.path[0] == _START_DIR:  # `python -m` put this process's start directory first
            sys.path[0] = os.getcwd()  # a fresh `python -m ...` in the replica's directory would have that
        _reseed()
        from ._blackbox_child import main

        sys.argv = ["whyspike-probe-child", *req["argv"]]
        code = main(list(req["argv"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(int(code) & 0xFF)


def _reseed() -> None:
    import random

    random.seed()
    try:
        import numpy as np

        np.random.seed()
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()


def _send(fd: int, obj: dict) -> None:
    os.write(fd, (json.dumps(obj) + "\n").encode())


_START_DIR = os.getcwd()


def main() -> int:
    proto = os.dup(1)  # the protocol channel; stray prints of the imports go to stderr instead
    os.dup2(2, 1)
    _warm_up()
    _send(proto, {"ready": True, "pid": os.getpid()})
    buf = b""
    while True:
        while b"\n" not in buf:
            data = os.read(0, 65536)
            if not data:
                return 0
            buf += data
        line, buf = buf.split(b"\n", 1)
        try:
            req = json.loads(line)
        except ValueError:
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(req, proto)
        _send(proto, {"pid": pid})
        while True:
            ready, _, _ = select.select([0], [], [], 0.2)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _send(proto, {"pid": pid, "exit": os.waitstatus_to_exitcode(status)})
                break
            if ready:
                data = os.read(0, 65536)
                if not data:  # the client is gone: so is its replica
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    os.waitpid(pid, 0)
                    return 0
                buf += data


if __name__ == "__main__":
    sys.exit(main())

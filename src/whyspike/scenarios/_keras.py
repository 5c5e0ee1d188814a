"""Run a Keras script unchanged through the machinery of ``whyspike run`` (the recorder injected into ``Model.fit``).

The script is copied next to the run directory first: the ``tensorflow`` stand-in is only handed to user code, and
a file inside the installed package does not count as that. Keras' own chatter (warnings, the note that matplotlib
is missing) is kept off the terminal and shown only when the script fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
import warnings
from pathlib import Path

from ..errors import MissingDependencyError


class ScriptFailed(RuntimeError):
    """The scenario's script raised: its own traceback is in the message."""


def run_keras_script(source: str, script_name: str, run_dir: Path, *, seed: int, max_epochs: int | None = None,
                     tier: str = "default") -> Path:
    """Run ``source`` as ``script_name`` with the recorder injected; its (only) recorded fit becomes ``run_dir``.

    ``seed`` goes to ``keras.utils.set_random_seed`` before the script runs (Python, NumPy and the backend): the
    script's own unseeded ``np.random`` calls then draw the same data every time. ``max_epochs`` caps each fit as
    ``WHYSPIKE_MAX_EPOCHS`` does.
    """
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None:
        raise MissingDependencyError("keras", "keras,torch")  # importing keras now would fix its backend too early
    from ..record.inject import Injection, Options, format_user_traceback

    stage = run_dir.parent / f".{run_dir.name}.staging"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    script = stage / script_name
    script.write_text(source)
    options = Options(out=stage / "runs", tier=tier, checkpoints=3, live=False, threads=1, max_epochs=max_epochs)
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(chatter), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            with Injection(script, options, out_stream=chatter) as injection:
                import keras  # after install(): KERAS_BACKEND defaults to torch

                keras.utils.set_random_seed(seed)
                outcome = injection.run([])
        if outcome.error is not None:
            raise ScriptFailed(f"{script_name} raised {type(outcome.error).__name__}:\n"
                               f"{format_user_traceback(outcome.error, script)}\n{chatter.getvalue()[-2000:]}")
        if not outcome.runs:
            raise ScriptFailed(f"{script_name} recorded no training:\n{chatter.getvalue()[-2000:]}")
        shutil.move(str(outcome.runs[0].path), str(run_dir))
        shutil.copy(script, run_dir / script_name)  # what was run, beside what it recorded
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return run_dir

"""The child process of the black-box engine: the user's script, unchanged, run through ``whyspike run``'s
:class:`~whyspike.record.inject.Injection` with the interventions of one replica.

    python -m whyspike.probe.engines._blackbox_child SCRIPT [ARGS...]

Protocol (environment in, one JSON file out):

- ``WHYSPIKE_INTERVENE``: ``{"NAME": "VALUE", ...}``, the replica's interventions (read by ``Injection.install``);
- ``WHYSPIKE_PROBE_CHILD``: ``{"out": DIR, "report": FILE, "tier": "default"|"detailed", "checkpoints": K}`` —
  where the run directories go, where this process writes its report, the recording tier, checkpoints to keep;
- ``WHYSPIKE_MAX_EPOCHS`` caps each fit as under ``whyspike run``; one torch thread (``OMP_NUM_THREADS=1`` and
  ``torch.set_num_threads(1)`` at torch's import).

The report (written atomically, also after a crash of the script): ``{"exit_code": int, "error": one line or null,
"error_kind": "intervention"|"usage"|"script"|"exit"|"no-fit"|null, "runs": [{"path", "framework", "label"}],
"seconds": float}``. The exit code is the script's.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import traceback
from pathlib import Path

ENV_CHILD = "WHYSPIKE_PROBE_CHILD"


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(exc: BaseException, script: Path) -> str:
    """``script.py:LINE`` of the script's last frame in the traceback ('' when the script is not in it)."""
    try:
        frames = traceback.extract_tb(exc.__traceback__)
        target = str(script.resolve())
        mine = [f for f in frames if str(Path(f.filename).resolve()) == target]
        return f" at {script.name}:{mine[-1].lineno}" if mine else ""
    except Exception:
        return ""


def _write(path: Path, report: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    spec = json.loads(os.environ.get(ENV_CHILD) or "{}")
    report_path = Path(spec.get("report") or "blackbox-report.json")
    report: dict = {"exit_code": 1, "error": None, "error_kind": None, "runs": [], "seconds": 0.0}
    if not argv:
        report.update(error="no script given", error_kind="usage")
        _write(report_path, report)
        return 2
    script = Path(argv[0])
    try:
        from ...errors import WhyspikeError
        from ...record._intervene import InterventionError
        from ...record.inject import Injection, Options, format_user_traceback, max_epochs_from_env

        options = Options(out=Path(spec.get("out") or "runs"), tier=spec.get("tier") or "default",
                          checkpoints=int(spec.get("checkpoints") or 0), live=False, threads=1,
                          max_epochs=max_epochs_from_env(), bn_eval_on_train=True)
        try:
            with Injection(script, options, out_stream=io.StringIO()) as injection:
                outcome = injection.run(argv[1:])
                unapplied = injection.intervener.unapplied() if injection.intervener is not None else []
        except WhyspikeError as exc:  # a bad WHYSPIKE_INTERVENE / WHYSPIKE_MAX_EPOCHS: nothing ran
            report.update(exit_code=exc.exit_code, error=one_line(str(exc)), error_kind="usage")
            return exc.exit_code
        report["exit_code"] = outcome.exit_code
        report["runs"] = [{"path": str(r.path), "framework": r.framework, "label": r.label} for r in outcome.runs]
        err = outcome.error
        if isinstance(err, InterventionError):
            report.update(error=one_line(str(err)), error_kind="intervention")
        elif err is not None:
            report.update(error=one_line(f"{script.name} raised {type(err).__name__}{_where(err, script)}: {err}"),
                          error_kind="script")
            print(format_user_traceback(err, script), file=sys.stderr, end="")  # the whole story, in the log
        elif outcome.exit_code != 0:
            report.update(error=f"{script.name} exited with code {outcome.exit_code}", error_kind="exit")
        elif unapplied:
            report.update(error=f"{', '.join(unapplied)} never applied: {script.name} called no Keras Model.fit "
                                "and its PyTorch optimizer steps cannot take them (PyTorch loops take seed=N and the "
                                "optimizer-level ones: lr.scale/decay/hold/shift, momentum, adam.*, wd)",
                          error_kind="no-fit")
        elif not outcome.runs:
            report.update(error=f"{script.name} trained nothing whyspike could record (no Keras Model.fit, no "
                                "PyTorch optimizer step)", error_kind="no-fit")
        return outcome.exit_code
    except BaseException as exc:  # whyspike's own failure: still a report, never a silent death
        report.update(error=one_line(f"the probe child failed: {type(exc).__name__}: {exc}"), error_kind="usage")
        traceback.print_exc()
        return 1
    finally:
        report["seconds"] = time.monotonic() - started
        _write(report_path, report)


if __name__ == "__main__":
    sys.exit(main())

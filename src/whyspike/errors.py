"""The one exception tree of whyspike.

Every error a user can cause carries a message that names the input, says what was wrong and what to do.
The CLI prints ``str(error)`` on one line and exits 1 (bad input) or 2 (bad usage); no traceback.

    WhyspikeError
    ├── InputError            the log cannot be read or holds nothing usable        (exit 1)
    │   ├── UnknownFormatError    no importer recognises it (use --format)
    │   ├── EmptyLogError         readable, but without any numeric series
    │   └── CorruptLogError       the bytes are damaged beyond the valid prefix
    └── UsageError            the arguments do not make sense together               (exit 2)
"""

from __future__ import annotations

from pathlib import Path


class WhyspikeError(Exception):
    """Base class of every error whyspike raises on purpose."""

    exit_code = 1


class InputError(WhyspikeError):
    """A log file or directory could not be turned into a Run."""

    def __init__(self, path: str | Path | None, problem: str, fix: str | None = None):
        self.path = str(path) if path is not None else None
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        tail = f" — {fix}" if fix else ""
        super().__init__(f"{where}{problem}{tail}")


class UnknownFormatError(InputError):
    """No importer recognises the input."""


class EmptyLogError(InputError):
    """The input is readable but holds no numeric series to diagnose."""


class CorruptLogError(InputError):
    """The input is damaged and not even a valid prefix could be read."""


class UsageError(WhyspikeError):
    """Arguments that contradict each other or name something that does not exist."""

    exit_code = 2


class MissingDependencyError(WhyspikeError):
    """An optional integration was used without its extra installed."""

    def __init__(self, module: str, extra: str):
        self.module = module
        self.extra = extra
        super().__init__(f"this needs the optional package '{module}' — install it with: pip install 'whyspike[{extra}]'")


def require(module: str, extra: str):
    """Import an optional dependency lazily, or fail with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(module, extra) from exc

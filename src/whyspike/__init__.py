"""whyspike — why did my model's accuracy (or loss) jump at this epoch? Evidence from your own logs.

    >>> import whyspike
    >>> run = whyspike.load_run("log.csv")              # doctest: +SKIP
    >>> diagnosis = whyspike.diagnose(run)              # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    CorruptLogError,
    EmptyLogError,
    InputError,
    MissingDependencyError,
    UnknownFormatError,
    UsageError,
    WhyspikeError,
)
from .importers import load_run
from .run import Event, Run, Series, Setup, Source

__all__ = [
    "CorruptLogError",
    "EmptyLogError",
    "Event",
    "InputError",
    "MissingDependencyError",
    "Run",
    "Series",
    "Setup",
    "Source",
    "UnknownFormatError",
    "UsageError",
    "WhyspikeError",
    "__version__",
    "load_run",
]

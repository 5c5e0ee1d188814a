"""Format registry and sniffing: which importer reads a path.

Each importer module registers one :class:`Importer`: a format id (the ``--input-format`` value of the CLI, ``format=`` of ``load_run``, and
``source.format`` in the JSON output), a ``sniff`` that scores a path from its name and first bytes (cheap, never
reads the whole file), and a ``load`` that returns a :class:`~whyspike.run.Run`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import EmptyLogError, InputError, UnknownFormatError
from ..run import Run, infer_eval_size

HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Probe:
    """What sniffers may look at: the path, whether it is a directory, its first bytes (files) or its entries."""

    path: Path
    is_dir: bool
    head: bytes
    entries: tuple[str, ...]  # names directly inside a directory (empty for files)

    @property
    def name(self) -> str:
        return self.path.name.lower()

    @property
    def text(self) -> str:
        """The head decoded as UTF-8 ('' when it is not text)."""
        if b"\x00" in self.head[:4096]:
            return ""
        try:
            return self.head.decode("utf-8")
        except UnicodeDecodeError as exc:  # a multi-byte char cut at the end of the head is fine
            if exc.start >= len(self.head) - 4:
                return self.head[: exc.start].decode("utf-8", "ignore")
            return ""


@dataclass(frozen=True)
class Importer:
    format: str
    description: str
    sniff: Callable[[Probe], float]  # 0 = not mine, 1 = certainly mine
    load: Callable[[Path], Run]


_IMPORTERS: dict[str, Importer] = {}


def register(importer: Importer) -> Importer:
    _IMPORTERS[importer.format] = importer
    return importer


def formats() -> dict[str, Importer]:
    _load_builtin()
    return dict(_IMPORTERS)


def _load_builtin() -> None:
    # every public module (or package) in importers/ registers its importer on import; lazy so that
    # `import whyspike` stays fast
    import importlib
    import pkgutil

    from .. import importers

    for mod in pkgutil.iter_modules(importers.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{importers.__name__}.{mod.name}")


def probe(path: Path) -> Probe:
    if path.is_dir():
        try:
            entries = tuple(sorted(os.listdir(path)))
        except OSError as exc:
            raise InputError(path, f"cannot list the directory ({exc.strerror})", "check its permissions") from None
        return Probe(path, True, b"", entries)
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})", "check the path and its permissions") from None
    return Probe(path, False, head, ())


def sniff(path: Path) -> Importer:
    """The importer that best recognises ``path``, or UnknownFormatError."""
    p = probe(path)
    if not p.is_dir and not p.head:
        raise InputError(path, "the file is empty", "point whyspike at a log that has been written to")
    scored = sorted(((imp.sniff(p), imp.format) for imp in formats().values()), reverse=True)
    best_score, best = scored[0]
    if best_score <= 0:
        what = "directory holds no training log whyspike knows" if p.is_dir else "file is not a training log whyspike knows"
        raise UnknownFormatError(path, f"the {what}", f"force a reader with --input-format ({', '.join(sorted(formats()))})")
    return _IMPORTERS[best]


def load_run(path: str | os.PathLike, format: str | None = None) -> Run:
    """Read a training log (file or directory) into a Run; the format is sniffed unless given.

        >>> run = load_run("metrics.csv")                        # doctest: +SKIP
        >>> run = load_run("runs/exp1", format="tensorboard")    # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or directory", "check the path")
    if format is not None:
        known = formats()
        if format not in known:
            raise UnknownFormatError(path, f"unknown format {format!r}", f"use one of: {', '.join(sorted(known))}")
        importer = known[format]
    else:
        importer = sniff(path)
    run = importer.load(path)
    return finalize(run, path)


def finalize(run: Run, path: Path) -> Run:
    """Checks and inferences every importer's output gets: something to diagnose, the eval-set size."""
    if not any(len(s) for s in run.series.values()):
        raise EmptyLogError(path, "holds no numeric series (header only, or no values logged yet)",
                            "wait until the training has logged at least one epoch, or check --input-format")
    if run.setup.eval_size is None:
        for s in run.find(kind="accuracy", split="val"):
            n = infer_eval_size(s.y, percent=s.role.percent)
            if n is not None:
                run.setup.eval_size, run.setup.eval_size_inferred = n, True
                break
    return run

"""TensorBoard event files (``*tfevents*``), read without TensorFlow or the tensorboard package.

Reads PyTorch/TF1 ``simple_value`` scalars and TF2/Keras scalar tensor summaries; histograms, images and text are
skipped. A path may be one event file, a directory of event files (one run, appended over time), or a log directory
of run sub-directories (Keras writes ``train/`` and ``validation/``), whose series are then named
``<sub-directory>/<tag>``.

    >>> from whyspike.importers import load_run
    >>> run = load_run("logs/fit", format="tensorboard")       # doctest: +SKIP
    >>> run.series["validation/epoch_accuracy"].axis            # doctest: +SKIP
    'epoch'
"""

from __future__ import annotations

from pathlib import Path

from ...errors import CorruptLogError, EmptyLogError, InputError
from ...run import Run, Source
from .._registry import Importer, Probe, register
from . import _decode
from ._assemble import add_to_run
from ._files import MAX_DEPTH, holds_event_files, is_event_file, run_directories
from ._log import ScalarLog
from ._records import CHUNK_SIZE, HEADER, RecordReader, first_record_ok

FORMAT = "tensorboard"


def sniff(probe: Probe) -> float:
    if probe.is_dir:
        # below Lightning's 0.95 for a version directory that also holds its metrics.csv and hparams.yaml
        if any(is_event_file(name) for name in probe.entries):
            return 0.9
        return 0.85 if holds_event_files(probe.path) else 0.0
    named = is_event_file(probe.name)
    if first_record_ok(probe.head):
        if named:
            return 1.0
        return 0.9 if _starts_like_events(probe.head) else 0.2
    # named like an event file but damaged: claim it so that load explains what is wrong
    return 0.5 if named else 0.0


def _starts_like_events(head: bytes) -> bool:
    """Writers open every event file with an Event carrying wall_time and file_version; other TFRecord files
    (tf.train.Example data sets) do not decode to that."""
    length = int.from_bytes(head[:8], "little")
    if len(head) < HEADER + length:
        return False
    try:
        ev = _decode.decode_event(head, HEADER, HEADER + length)
    except _decode.MalformedEvent:
        return False
    return ev.file_version is not None and ev.wall_time > 0


def load(path: Path, chunk_size: int = CHUNK_SIZE) -> Run:
    run = Run(Source(str(path), FORMAT))
    if not path.is_dir():
        log = ScalarLog()
        _read_file(path, log, run.warnings, chunk_size)
        add_to_run(run, log.columns(), log.markers, "")
        return run
    runs = run_directories(path)
    if not runs:
        raise EmptyLogError(path, f"holds no TensorBoard event files (*tfevents*) within {MAX_DEPTH} levels",
                            "point at the directory a SummaryWriter or Keras' TensorBoard callback wrote to")
    errors: list[InputError] = []
    read = []
    for rel, files in runs.items():
        log = ScalarLog()
        for file in files:
            try:
                _read_file(file, log, run.warnings, chunk_size)
            except CorruptLogError as exc:  # one bad file should not hide its siblings
                errors.append(exc)
                run.warnings.append(str(exc))
        columns = log.columns()
        if columns:
            read.append((rel, columns, log.markers))
    if not read and errors:
        raise errors[0]
    several = len(read) > 1
    for rel, columns, markers in read:
        add_to_run(run, columns, markers, f"{rel}/" if several and rel else "")
    return run


def _read_file(path: Path, log: ScalarLog, warnings: list[str], chunk_size: int) -> None:
    reader = RecordReader(path, chunk_size)
    base, undecodable = log.records, log.undecodable
    log.file = path.name
    try:
        for batch in reader:
            log.add_batch(batch, base + batch.first_index)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})", "check the path and its permissions") from None
    log.records = base + reader.records
    n = reader.records
    if reader.problem == "truncated" and n == 0:
        raise CorruptLogError(path, "holds no complete TFRecord (the first record is cut off)",
                              "check that the file was copied completely, or wait until its writer flushes")
    if reader.problem == "corrupt" and n == 0:
        raise CorruptLogError(path, "is not a TensorBoard event file (its first TFRecord fails its checksum)",
                              "point at a *tfevents* file written by a SummaryWriter, or force another reader with --input-format")
    if reader.problem == "truncated":
        warnings.append(f"{path}: the last record is truncated after {n} valid events; read what is valid")
    elif reader.problem == "corrupt":
        warnings.append(f"{path}: the record at byte {reader.problem_offset} fails its checksum; read the {n} "
                        "valid events before it and ignored the rest")
    if log.undecodable > undecodable:
        warnings.append(f"{path}: {log.undecodable - undecodable} records are not TensorBoard events; skipped them")


register(Importer(FORMAT, "TensorBoard event files (*tfevents*), or a log directory holding them", sniff, load))

"""TFRecord framing of TensorBoard event files, read in bounded chunks.

Each record is ``uint64 length | uint32 masked_crc32c(length) | data[length] | uint32 masked_crc32c(data)``, all
little-endian. Offsets are found with one cheap Python loop per chunk; both checksums are verified for every record
(the length checksum vectorized, the data checksum through google_crc32c's C code).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from . import _vector as vec

CHUNK_SIZE = 16 * 1024 * 1024
# Records longer than this are checked but not decoded: no scalar event comes anywhere near it (they are graph
# defs or giant images), and holding one would break the memory bound.
MAX_DECODED_RECORD = 64 * 1024 * 1024
HEADER = 12  # length + its checksum
FRAMING = 16  # header + data checksum
_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _mask(crc: np.ndarray) -> np.ndarray:
    crc = crc.astype(np.uint64)
    return ((((crc >> np.uint64(15)) | (crc << np.uint64(17))) + np.uint64(_MASK_DELTA)) & np.uint64(0xFFFFFFFF))


def header_ok(buf: bytes, pos: int) -> bool:
    """Whether the 12 bytes at ``pos`` are a record header whose length checksum matches."""
    return masked_crc(buf[pos : pos + 8]) == _U32.unpack_from(buf, pos + 8)[0]


def first_record_ok(head: bytes) -> bool:
    """Whether ``head`` starts with a valid record (the data checksum is checked when the record fits in it)."""
    if len(head) < HEADER or not header_ok(head, 0):
        return False
    (length,) = _U64.unpack_from(head, 0)
    if len(head) >= length + FRAMING:
        return masked_crc(head[HEADER : HEADER + length]) == _U32.unpack_from(head, HEADER + length)[0]
    return True


@dataclass
class Batch:
    """The complete records of one chunk: ``buf`` is the chunk plus zero padding, so fixed-width vectorized reads
    near the end stay inside it; ``data_start``/``data_len`` locate each record's payload in ``buf``."""

    buf: bytes
    arr: np.ndarray
    data_start: np.ndarray
    data_len: np.ndarray
    first_index: int  # number of records in the file before this batch


class RecordReader:
    """Iterate over :class:`Batch` es of valid records of one file.

    After iteration ``records`` is the number of valid records and ``problem`` is None, ``"truncated"`` or
    ``"corrupt"``, with ``problem_offset`` the file offset where reading stopped.
    """

    def __init__(self, path: Path, chunk_size: int = CHUNK_SIZE, max_decoded: int = MAX_DECODED_RECORD):
        self.path = path
        self.chunk_size = max(int(chunk_size), 1)
        self.max_decoded = max(int(max_decoded), 1)
        self.records = 0
        self.problem: str | None = None
        self.problem_offset = 0

    def __iter__(self):
        with open(self.path, "rb") as fh:
            left = b""
            base = 0  # file offset of left[0]
            want = self.chunk_size
            while True:
                data = fh.read(want)
                if not data and not left:
                    return
                eof = not data
                buf = b"".join((left, data, vec.PAD))
                del data  # hold one copy of the chunk, not two
                arr = np.frombuffer(buf, np.uint8)
                end = len(buf) - len(vec.PAD)
                s, pos = _scan(buf, end)
                e = np.append(s[1:], pos).astype(np.int64)  # one past each record's data checksum
                good = _valid_prefix(buf, arr, s, e)
                if good:
                    yield Batch(buf, arr, s[:good] + HEADER, e[:good] - s[:good] - FRAMING, self.records)
                    self.records += good
                if good < len(s):
                    return self._stop("corrupt", base + int(s[good]))
                left, base, want = buf[pos:end], base + pos, self.chunk_size
                if eof:
                    if left:  # an incomplete record whose header checked out (a bad one stopped us already)
                        self._stop("truncated", base)
                    return
                if len(left) >= HEADER:
                    if not header_ok(left, 0):
                        return self._stop("corrupt", base)
                    need = _U64.unpack_from(left, 0)[0] + FRAMING
                    if need > self.max_decoded:
                        left = self._skip(fh, left, need - FRAMING, base)
                        if left is None:
                            return
                        base += need
                    else:  # a long record: read on until it fits
                        want = max(self.chunk_size, need - len(left))

    def _skip(self, fh, left: bytes, length: int, base: int) -> bytes | None:
        """Verify an oversized record by streaming it through the checksum; returns the bytes read past it."""
        body = left[HEADER:]  # shorter than length + 4, else it would have been a complete record
        crc = google_crc32c.value(body[:length])
        tail = body[length:]  # bytes past the data read so far
        have = len(body)
        while have < length + 4:
            piece = fh.read(self.chunk_size)
            if not piece:
                self._stop("truncated", base)
                return None
            inside = piece[: max(0, length - have)]
            crc = google_crc32c.extend(crc, inside)
            tail += piece[len(inside) :]
            have += len(piece)
        if (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF != _U32.unpack_from(tail, 0)[0]:
            self._stop("corrupt", base)
            return None
        self.records += 1
        return tail[4:]

    def _stop(self, problem: str, offset: int) -> None:
        self.problem, self.problem_offset = problem, offset


_MAX_PERIOD = 16  # tags written per step that the length pattern may cycle through
_FIRST_GUESS = 256  # records predicted in the first bulk guess after a break (then 4x more each time)
_WORTH_IT = 128  # a guess that keeps fewer records than this costs more than walking them


def _scan(buf: bytes, end: int) -> tuple[np.ndarray, int]:
    """Start offsets of the complete records in ``buf[:end]`` and the offset where the first incomplete one begins.

    Each start follows from the previous record's length, a chain only a loop can walk. Logs repeat a short cycle
    of record lengths (one per tag written each step), so once a cycle shows in the records just walked, the
    following starts are predicted in bulk and kept up to the first whose stored length differs. Guesses that
    keep little make the walks between them longer, so an irregular log costs about what the plain walk does.
    Lengths are not trusted here: a damaged one sends the walk astray, which the checksum test that follows
    catches at the first damaged record.
    """
    arr = np.frombuffer(buf, np.uint8)
    parts: list[np.ndarray] = []
    walked: list[int] = []
    tail: list[int] = []  # the last starts, walked or predicted, to spot a cycle in
    pos, walk = 0, 8
    while True:
        before = len(walked)
        pos, blocked = _walk(buf, end, pos, walk, walked)
        if blocked:
            break
        tail = (tail + walked[before:])[-2 * _MAX_PERIOD :]
        cycle = _cycle(tail, pos)
        if cycle is None:
            walk = min(2 * walk, 4096)
            continue
        parts.append(np.asarray(walked, dtype=np.int64))
        walked = []
        kept, guess = 0, _FIRST_GUESS
        while True:
            count = min(guess, (end - pos) // int(cycle.sum()) * len(cycle)) // len(cycle) * len(cycle)
            if count == 0:
                break
            steps = np.tile(cycle, count // len(cycle))
            predicted = pos + np.concatenate(([0], np.cumsum(steps[:-1])))
            # a predicted start is right when its predecessor's length was; the stored length excludes the framing
            ok = vec.u64(arr, predicted) == (steps - FRAMING).astype(np.uint64)
            good = count if ok.all() else int(ok.argmin())
            if good:
                parts.append(predicted[:good])
                tail = (tail + predicted[max(0, good - 2 * _MAX_PERIOD) : good].tolist())[-2 * _MAX_PERIOD :]
                pos = int(predicted[good - 1] + steps[good - 1])
                kept += good
            if good < count:
                break
            guess *= 4
        walk = 8 if kept >= _WORTH_IT else min(2 * walk, 4096)
    parts.append(np.asarray(walked, dtype=np.int64))
    return np.concatenate(parts), pos


def _cycle(starts: list[int], pos: int) -> np.ndarray | None:
    """The record lengths (framing included) that the records just read repeat, in the order the record at
    ``pos`` continues them; None when they show no cycle of at most _MAX_PERIOD records."""
    lengths = [b - a for a, b in zip(starts, starts[1:] + [pos])]
    for p in range(1, _MAX_PERIOD + 1):
        w = max(2 * p, 8)
        if len(lengths) < w:
            return None
        if lengths[-w:-p] == lengths[-w + p :]:
            return np.asarray(lengths[-p:], dtype=np.int64)
    return None


def _walk(buf: bytes, end: int, pos: int, limit: int, starts: list[int]) -> tuple[int, bool]:
    """Walk up to ``limit`` records; also says whether it stopped at an incomplete one."""
    unpack = _U64.unpack_from
    append = starts.append
    for _ in range(limit):
        if pos + HEADER > end:
            return pos, True
        (length,) = unpack(buf, pos)
        nxt = pos + length + FRAMING
        if nxt > end:
            return pos, True
        append(pos)
        pos = nxt
    return pos, False


def _valid_prefix(buf: bytes, arr: np.ndarray, s: np.ndarray, e: np.ndarray) -> int:
    """How many records, counting from the first, pass both checksums (``s``: starts, ``e``: ends)."""
    if not len(s):
        return 0
    bad = np.flatnonzero(vec.u32(arr, s + 8) != _length_crcs(e - s - FRAMING))
    n = int(bad[0]) if len(bad) else len(s)
    if n:
        a, b = (s[:n] + HEADER).tolist(), (e[:n] - 4).tolist()
        crcs = np.fromiter(map(google_crc32c.value, map(buf.__getitem__, map(slice, a, b))), np.uint32, count=n)
        bad = np.flatnonzero(_mask(crcs) != vec.u32(arr, e[:n] - 4))
        if len(bad):
            n = int(bad[0])
    return n


def _length_crcs(length: np.ndarray) -> np.ndarray:
    """Masked checksums of the 8-byte lengths; a log has few distinct record lengths, so each is computed once."""
    lo = int(length.min())
    span = int(length.max()) - lo + 1
    if span <= 1 << 20:
        present = np.zeros(span, dtype=bool)
        present[length - lo] = True
        table = np.zeros(span, dtype=np.uint64)
        for v in np.flatnonzero(present).tolist():
            table[v] = masked_crc(_U64.pack(v + lo))
        return table[length - lo]
    values, inverse = np.unique(length, return_inverse=True)
    table = np.array([masked_crc(_U64.pack(int(v))) for v in values], dtype=np.uint64)
    return table[inverse]

"""A tiny protobuf wire-format reader: enough to walk messages whose field numbers we know.

Importers use it to read protobuf records without importing ``protobuf`` or the framework that defined them.
It knows the wire format only (varints, 64-bit, length-delimited, 32-bit); what a field means is the caller's
business.

    >>> list(fields(b"\\x08\\x96\\x01\\x12\\x02hi"))
    [(1, 0, 150), (2, 2, b'hi')]
"""

from __future__ import annotations

import struct
from typing import Iterator

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` and the position after it."""
    result = shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field_number, wire_type, value)`` for each field: an int for varints, raw bytes otherwise."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == BYTES:
            n, pos = read_varint(buf, pos)
            if pos + n > end:
                raise WireError(f"field {number} runs past the end of its message")
            value, pos = buf[pos : pos + n], pos + n
        elif wire == FIXED64 or wire == FIXED32:
            n = 8 if wire == FIXED64 else 4
            if pos + n > end:
                raise WireError(f"field {number} runs past the end of its message")
            value, pos = buf[pos : pos + n], pos + n
        else:  # groups (3, 4) are long deprecated and unused by the messages we read
            raise WireError(f"unsupported wire type {wire} for field {number}")
        yield number, wire, value


def as_double(raw: bytes) -> float:
    return struct.unpack("<d", raw)[0]


def as_sint64(value: int) -> int:
    """Decode a zigzag-encoded ``sint64``."""
    return (value >> 1) ^ -(value & 1)


def as_int64(value: int) -> int:
    """A varint read as two's-complement ``int64`` (negative ints are sent as 10-byte varints)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def as_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")

"""A hand-written decoder for the parts of the ``Event`` protobuf that carry scalars.

Field numbers follow tensorboard/compat/proto (event.proto, summary.proto, tensor.proto, tensor_shape.proto)::

    Event           wall_time=1 double, step=2 int64, file_version=3 string, summary=5, session_log=7
    SessionLog      status=1 enum (START=1)
    Summary         value=1 repeated Value
    Value           tag=1 string, simple_value=2 float, tensor=8 TensorProto, metadata=9 SummaryMetadata
    SummaryMetadata plugin_data=1 PluginData{plugin_name=1 string}
    TensorProto     dtype=1, tensor_shape=2 TensorShapeProto{dim=2 repeated Dim{size=1}}, tensor_content=4,
                    float_val=5, double_val=6, int_val=7, bool_val=11, int64_val=10, half_val=13,
                    uint32_val=16, uint64_val=17

This is the general path, one record at a time; :mod:`._fast` decodes the common layouts of many records at once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np


class MalformedEvent(ValueError):
    """A record whose checksum is right but whose bytes are not an Event protobuf."""


@dataclass
class DecodedEvent:
    wall_time: float = 0.0
    step: int = 0
    file_version: str | None = None
    session_start: bool = False
    scalars: list[tuple[str, float]] = field(default_factory=list)
    plugins: list[tuple[str, str]] = field(default_factory=list)  # (tag, plugin) of every value with metadata


# TensorFlow DataType -> numpy dtype of its tensor_content
_CONTENT_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2",
                   19: "<f2", 22: "<u4", 23: "<u8"}
_DT_BFLOAT16 = 14
_DT_HALF = 19
# TensorProto field holding the values of each dtype when tensor_content is empty
_VALUE_FIELD = {1: 5, 2: 6, 3: 7, 4: 7, 5: 7, 6: 7, 17: 7, 9: 10, 10: 11, 19: 13, _DT_BFLOAT16: 13, 22: 16, 23: 17}
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")


def _varint(b: bytes, i: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while i < end:
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        if c < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            break
    raise MalformedEvent("bad varint")


def _fields(b: bytes, i: int, end: int):
    """Yield (field number, wire type, value) of a message in ``b[i:end]``; the value of a length-delimited field
    is its (start, stop), of a fixed-width field its offset, of a varint the integer."""
    while i < end:
        key, i = _varint(b, i, end)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(b, i, end)
        elif wire == 2:
            size, i = _varint(b, i, end)
            value = (i, i + size)
            i += size
        elif wire == 1:
            value = i
            i += 8
        elif wire == 5:
            value = i
            i += 4
        else:
            raise MalformedEvent(f"unsupported wire type {wire}")
        if i > end:
            raise MalformedEvent("field runs past its message")
        yield num, wire, value


def decode_event(b: bytes, start: int, end: int) -> DecodedEvent:
    ev = DecodedEvent()
    for num, wire, v in _fields(b, start, end):
        if num == 1 and wire == 1:
            ev.wall_time = _F64.unpack_from(b, v)[0]
        elif num == 2 and wire == 0:
            ev.step = v - (1 << 64) if v >= 1 << 63 else v
        elif num == 3 and wire == 2:
            ev.file_version = b[v[0] : v[1]].decode("utf-8", "replace")
        elif num == 5 and wire == 2:
            for n, w, val in _fields(b, *v):
                if n == 1 and w == 2:
                    _decode_value(b, *val, ev)
        elif num == 7 and wire == 2:
            ev.session_start = any(n == 1 and w == 0 and s == 1 for n, w, s in _fields(b, *v))
    return ev


def _decode_value(b: bytes, start: int, end: int, ev: DecodedEvent) -> None:
    tag = None
    simple = tensor = meta = None
    for num, wire, v in _fields(b, start, end):
        if num == 1 and wire == 2:
            tag = b[v[0] : v[1]].decode("utf-8", "replace")
        elif num == 2 and wire == 5:
            simple = _F32.unpack_from(b, v)[0]
        elif num == 8 and wire == 2:
            tensor = v
        elif num == 9 and wire == 2:
            meta = v
    if not tag:
        return
    if meta is not None:
        ev.plugins.append((tag, plugin_name(b, *meta)))
    if simple is not None:
        ev.scalars.append((tag, simple))
    elif tensor is not None:
        value = tensor_scalar(b, *tensor)
        if value is not None:
            ev.scalars.append((tag, value))


def plugin_name(b: bytes, start: int, end: int) -> str:
    """The plugin named in a SummaryMetadata message ('' when none)."""
    for num, wire, v in _fields(b, start, end):
        if num == 1 and wire == 2:
            for n, w, val in _fields(b, *v):
                if n == 1 and w == 2:
                    return b[val[0] : val[1]].decode("utf-8", "replace")
    return ""


def tensor_scalar(b: bytes, start: int, end: int) -> float | None:
    """The value of a one-element numeric TensorProto, or None for anything else (histograms, images, text)."""
    dtype = 0
    elements = 1
    content = None
    values: dict[int, list] = {}
    for num, wire, v in _fields(b, start, end):
        if num == 1 and wire == 0:
            dtype = v
        elif num == 2 and wire == 2:
            for n, w, dim in _fields(b, *v):
                if n == 2 and w == 2:
                    size = next((s for dn, dw, s in _fields(b, *dim) if dn == 1 and dw == 0), 0)
                    elements *= size
                elif n == 3 and w == 0 and dim:  # unknown rank
                    return None
        elif num == 4 and wire == 2:
            content = b[v[0] : v[1]]
        else:
            values.setdefault(num, []).append((wire, v))
    if elements != 1 or dtype not in _VALUE_FIELD:
        return None
    if content:
        try:
            if dtype == _DT_BFLOAT16:
                arr = (np.frombuffer(content, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(content, dtype=_CONTENT_DTYPES[dtype])
        except ValueError:  # a size that is not a multiple of the element size
            return None
        return float(arr[0]) if arr.shape == (1,) else None
    found = _repeated(b, dtype, values.get(_VALUE_FIELD[dtype], []))
    if len(found) > 1:
        return None
    return found[0] if found else 0.0  # proto3 leaves out a tensor of zeros


def _repeated(b: bytes, dtype: int, parts: list) -> list[float]:
    """Values of a repeated numeric field, packed or not."""
    out: list[float] = []
    for wire, v in parts:
        if dtype == 1 and wire == 2:
            out += struct.unpack_from(f"<{(v[1] - v[0]) // 4}f", b, v[0])
        elif dtype == 1 and wire == 5:
            out.append(_F32.unpack_from(b, v)[0])
        elif dtype == 2 and wire == 2:
            out += struct.unpack_from(f"<{(v[1] - v[0]) // 8}d", b, v[0])
        elif dtype == 2 and wire == 1:
            out.append(_F64.unpack_from(b, v)[0])
        elif wire == 2:
            i, stop = v
            while i < stop:
                x, i = _varint(b, i, stop)
                out.append(x)
        elif wire == 0:
            out.append(v)
    if dtype in (_DT_HALF, _DT_BFLOAT16):
        bits = np.array(out, dtype=np.uint32)
        as_float = bits.astype(np.uint16).view(np.float16) if dtype == _DT_HALF else (bits << 16).view(np.float32)
        return [float(x) for x in as_float]
    if dtype in (3, 5, 6, 9):  # signed integers arrive as 64-bit two's complement varints
        return [float(x - (1 << 64) if x >= 1 << 63 else x) for x in out]
    return [float(x) for x in out]

"""Vectorized decoding of the two layouts nearly every scalar event has, for all records of a batch at once.

    Event{wall_time, [step], summary{ value{ tag, simple_value } }}                 PyTorch, TF1, tensorboardX
    Event{wall_time, [step], summary{ value{ tag, tensor{dtype, [shape], v}, [metadata] } }}   tf.summary (TF2, Keras)

where the tensor is a float/double scalar with its value in float_val, double_val or tensor_content. A protobuf
serializer writes fields in field-number order and leaves out zeros, so these layouts are byte-exact: every check
below is an equality on bytes or lengths, and a record failing any of them goes to the general decoder in
:mod:`._decode`, which also gets the event-level records (file_version, session_log).

Records are grouped by their tag and metadata bytes (hashed, then verified byte for byte); only one record per
group is decoded in Python, for its tag string and plugin name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _decode
from . import _vector as vec

MAX_KEY_BYTES = 256  # longer tags or metadata take the general path

_WALL_TIME = 0x09  # field 1, fixed64
_STEP = 0x10  # field 2, varint
_SUMMARY = 0x2A  # field 5, length-delimited
_VALUE = 0x0A  # Summary.value = 1
_TAG = 0x0A  # Value.tag = 1
_SIMPLE_VALUE = 0x15  # Value.simple_value = 2, fixed32
_TENSOR = 0x42  # Value.tensor = 8
_METADATA = 0x4A  # Value.metadata = 9
_DTYPE = 0x08  # TensorProto.dtype = 1
_SHAPE = 0x12  # TensorProto.tensor_shape = 2
_CONTENT = 0x22  # TensorProto.tensor_content = 4
_FLOAT_VAL = 0x2A  # TensorProto.float_val = 5, packed
_DOUBLE_VAL = 0x32  # TensorProto.double_val = 6, packed
_DT_FLOAT, _DT_DOUBLE = 1, 2


@dataclass
class FastScalars:
    index: np.ndarray  # positions in the batch of the records decoded here
    group: np.ndarray  # per record: index into ``groups``
    step: np.ndarray
    wall: np.ndarray
    value: np.ndarray
    groups: list[tuple[str, str]]  # (tag, plugin name or '')


def decode(buf: bytes, arr: np.ndarray, data_start: np.ndarray, data_len: np.ndarray) -> FastScalars:
    idx = np.flatnonzero((data_len >= 16) & (vec.byte(arr, data_start) == _WALL_TIME))
    d = data_start[idx]
    end = d + data_len[idx]
    wall = vec.f64(arr, d + 1)

    p = d + 9
    has_step = vec.byte(arr, p) == _STEP  # step 0 is left out by the serializer
    raw_step, n = vec.varint(arr, p + 1)
    ok = ~has_step | (n > 0)
    step = np.where(has_step, raw_step, np.uint64(0)).view(np.int64)
    p = np.where(has_step, p + 1 + n, p)

    ok &= vec.byte(arr, p) == _SUMMARY
    size, n = vec.varint(arr, p + 1)
    p = p + 1 + n
    ok &= (n > 0) & (p + vec.length(size) == end)

    ok &= vec.byte(arr, p) == _VALUE  # exactly one value: it must end where the event ends
    size, n = vec.varint(arr, p + 1)
    p = p + 1 + n
    ok &= (n > 0) & (p + vec.length(size) == end)

    ok &= vec.byte(arr, p) == _TAG
    size, n = vec.varint(arr, p + 1)
    tag_at = p + 1 + n
    tag_len = vec.length(size)
    ok &= (n > 0) & (tag_len > 0) & (tag_len <= MAX_KEY_BYTES) & (tag_at + tag_len < end)

    keep = np.flatnonzero(ok)
    idx, end, wall, step, tag_at, tag_len = idx[keep], end[keep], wall[keep], step[keep], tag_at[keep], tag_len[keep]
    r = tag_at + tag_len

    simple = (vec.byte(arr, r) == _SIMPLE_VALUE) & (r + 5 == end)
    value = vec.f32(arr, r + 1)
    is_tensor = np.zeros(len(r), dtype=bool)
    meta_at, meta_len = np.zeros(len(r), dtype=np.int64), np.zeros(len(r), dtype=np.int64)
    rest = np.flatnonzero(~simple)
    if len(rest):  # most logs hold one layout only: spend nothing on the other
        is_tensor[rest], value[rest], meta_at[rest], meta_len[rest] = _tensor_layout(arr, r[rest], end[rest])

    keep = np.flatnonzero(simple | is_tensor)
    idx, wall, step, tag_at, tag_len = idx[keep], wall[keep], step[keep], tag_at[keep], tag_len[keep]
    value, is_tensor, meta_at, meta_len = value[keep], is_tensor[keep], meta_at[keep], meta_len[keep]
    group, exemplars, same = _group(arr, tag_at, tag_len, meta_at, meta_len, is_tensor)

    groups = []
    for e in exemplars.tolist():
        tag = buf[tag_at[e] : tag_at[e] + tag_len[e]].decode("utf-8", "replace")
        try:
            plugin = _decode.plugin_name(buf, int(meta_at[e]), int(meta_at[e] + meta_len[e])) if meta_len[e] else ""
        except _decode.MalformedEvent:
            plugin = "?"  # unreadable metadata: not a scalar summary we can vouch for
        groups.append((tag, plugin))
    keep = np.flatnonzero(same)
    return FastScalars(idx[keep], group[keep], step[keep], wall[keep], value[keep], groups)


def _tensor_layout(arr, r, end):
    """Where ``arr[r:end]`` is ``tensor{scalar float/double}`` plus optional metadata: mask, value, metadata span."""
    ok = vec.byte(arr, r) == _TENSOR
    size, n = vec.varint(arr, r + 1)
    tp = r + 1 + n
    te = tp + vec.length(size)
    ok &= (n > 0) & (te <= end) & (vec.byte(arr, tp) == _DTYPE)
    dtype = vec.byte(arr, tp + 1)
    ok &= (dtype == _DT_FLOAT) | (dtype == _DT_DOUBLE)
    q = tp + 2
    q = np.where((vec.byte(arr, q) == _SHAPE) & (vec.byte(arr, q + 1) == 0), q + 2, q)  # an empty shape: a scalar
    width = np.where(dtype == _DT_FLOAT, 4, 8)
    field = vec.byte(arr, q)
    ok &= (field == _CONTENT) | (field == np.where(dtype == _DT_FLOAT, _FLOAT_VAL, _DOUBLE_VAL))
    ok &= (vec.byte(arr, q + 1) == width) & (q + 2 + width == te)
    value = np.where(dtype == _DT_FLOAT, vec.f32(arr, q + 2), vec.f64(arr, q + 2))

    has_meta = te < end
    size, n = vec.varint(arr, te + 1)
    meta_at = te + 1 + n
    meta_len = np.where(has_meta, vec.length(size), 0)
    meta_ok = (vec.byte(arr, te) == _METADATA) & (n > 0) & (meta_at + meta_len == end) & (meta_len <= MAX_KEY_BYTES)
    ok &= ~has_meta | meta_ok
    return ok, value, meta_at, np.where(ok, meta_len, 0)


def _group(arr, tag_at, tag_len, meta_at, meta_len, is_tensor):
    """Group records with equal (tag, metadata, layout) bytes: (group per record, exemplar per group, verified)."""
    if not len(tag_at):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool)
    tag_words = vec.words(arr, tag_at, tag_len)
    meta_words = vec.words(arr, meta_at, meta_len)
    sizes = (tag_len.astype(np.uint64) | (meta_len.astype(np.uint64) << np.uint64(16))
             | (is_tensor.astype(np.uint64) << np.uint64(32)))[:, None]
    h = vec.hash_rows(sizes, tag_words, meta_words)
    # A log has few distinct keys: bucket by 16 hash bits (linear time, unlike sorting) and take any member of a
    # bucket as its exemplar. A record unequal to its exemplar (a bucket shared by two keys, or a full hash
    # collision) is left unverified and takes the general path.
    bucket = (h >> np.uint64(48)).astype(np.intp)
    member = np.zeros(1 << 16, dtype=np.int64)
    member[bucket] = np.arange(len(h))
    used = np.flatnonzero(np.bincount(bucket, minlength=1 << 16))
    compact = np.zeros(1 << 16, dtype=np.int64)
    compact[used] = np.arange(len(used))
    exemplars, group = member[used], compact[bucket]
    ex = member[bucket]
    same = (h == h[ex]) & (sizes[:, 0] == sizes[ex, 0]) & (tag_words == tag_words[ex]).all(axis=1)
    if meta_words.shape[1]:
        same &= (meta_words == meta_words[ex]).all(axis=1)
    return group, exemplars, same

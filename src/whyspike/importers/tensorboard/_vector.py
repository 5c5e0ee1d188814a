"""Vectorized reads of little-endian values and protobuf varints at many byte offsets of one buffer at once.

Offsets are clipped to the buffer, so a read for a malformed record returns garbage instead of failing; the
decoder's consistency checks reject such records.
"""

from __future__ import annotations

import numpy as np

PAD = bytes(16)  # appended to every chunk: reads of up to 16 bytes at any offset inside the data stay in bounds
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


def _view(arr: np.ndarray, dtype: str) -> np.ndarray:
    """``arr`` seen as overlapping values of ``dtype`` starting at every byte offset (no copy)."""
    size = np.dtype(dtype).itemsize
    return np.ndarray(shape=(arr.shape[0] - size + 1,), dtype=dtype, buffer=arr, strides=(1,))


def _at(arr: np.ndarray, pos: np.ndarray, dtype: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return _view(arr, dtype)[np.minimum(pos, arr.shape[0] - size)]


def byte(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return arr[np.minimum(pos, arr.shape[0] - 1)]


def u32(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return _at(arr, pos, "<u4").astype(np.uint64)


def u64(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return _at(arr, pos, "<u8")


def f32(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # a signalling NaN read from a record that is not of this layout
        return _at(arr, pos, "<f4").astype(np.float64)


def f64(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return _at(arr, pos, "<f8")


_HIGH_BITS = np.uint64(0x8080808080808080)


def varint(arr: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode base-128 varints of at most 8 bytes at ``pos``: (value as uint64, byte count). The count is 0 where
    none ends within 8 bytes (values of 2**56 or more, negative int64s): such records take the general path."""
    first = byte(arr, pos)
    short = first < 0x80
    if short.all():  # lengths of tags and small messages: one byte each
        return first.astype(np.uint64), np.ones(len(pos), dtype=np.int64)
    if short.any():
        value, count = first.astype(np.uint64), np.ones(len(pos), dtype=np.int64)
        long = np.flatnonzero(~short)
        value[long], count[long] = _long_varint(arr, pos[long])
        return value, count
    return _long_varint(arr, pos)


def _long_varint(arr: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    word = u64(arr, pos)
    ends = ~word & _HIGH_BITS  # the high bit of each byte that ends a varint
    lowest = ends & (~ends + np.uint64(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        count = np.where(ends == 0, 0, (np.log2(lowest.astype(np.float64)).astype(np.int64) + 1) // 8)
    if not len(pos):
        return word, count
    used = count.astype(np.uint64) * np.uint64(8)
    word &= np.where(count >= 8, _ALL_ONES, (np.uint64(1) << used) - np.uint64(1))
    value = word & np.uint64(0x7F)
    for k in range(1, int(count.max())):  # squeeze out the continuation bit of each byte
        value |= (word >> np.uint64(k)) & np.uint64(0x7F << (7 * k))
    return value, count


def length(value: np.ndarray) -> np.ndarray:
    """A decoded varint as an int64 byte length; absurd values are capped so offset arithmetic cannot wrap."""
    return np.minimum(value, np.uint64(1 << 40)).astype(np.int64)


def words(arr: np.ndarray, start: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The bytes of ``arr[start[i] : start[i] + size[i]]`` packed into uint64 words, zero beyond each region's end:
    an (n, w) array that compares regions of different offsets and sizes in a few vectorized operations."""
    w = int(-(-int(size.max()) // 8)) if len(size) else 0
    out = np.zeros((len(start), w), dtype=np.uint64)
    for k in range(w):
        left = np.clip(size - 8 * k, 0, 8).astype(np.uint64)
        keep = np.where(left >= 8, _ALL_ONES, (np.uint64(1) << (left * np.uint64(8))) - np.uint64(1))
        out[:, k] = u64(arr, start + 8 * k) & keep
    return out


def hash_rows(*blocks: np.ndarray) -> np.ndarray:
    """One uint64 per row mixing every column of every 2-D block (collisions are possible; callers verify)."""
    n = blocks[0].shape[0]
    h = np.zeros(n, dtype=np.uint64)
    for block in blocks:
        for k in range(block.shape[1]):
            h = (h ^ block[:, k]) * _HASH_MUL
            h ^= h >> np.uint64(29)
    return h

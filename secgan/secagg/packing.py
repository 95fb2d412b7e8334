"""Ring words on the wire at the ring's width: k bits a word instead of 64.

A masked vector holds elements of Z_{2^k} (k = the attempt's ``modulus_bits``, 2..63). It travels
in the announced gradient shape ``[..., W]`` with its last axis packed: each row of W words becomes
``packed_row_bytes(W, k) = ceil(W * k / 8)`` bytes, word i of the row in bits ``[i*k, (i+1)*k)``
of the row's bytes read as one little-endian integer (bit 0 = the lowest bit of byte 0). The
unused high bits of a row's last byte are zero. So the packed array is uint8 of shape
``[..., ceil(W * k / 8)]``: the same rank and leading dimensions as the gradient.

:func:`unpack_words` refuses (``PackingError``, a ``ProtocolError`` with code
``secagg_bad_vector``), in this order: k out of range, a dtype other than uint8, a shape other than
the one the announced shape and k give, and any unused bit set. Every k-bit field is a valid ring
element, so nothing else can be wrong with a vector of the right length.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from secgan.core.errors import ProtocolError

MIN_BITS, MAX_BITS = 2, 63  # the ring widths a FixedPointCodec allows


class PackingError(ProtocolError):
    """A packed vector (or its parameters) that is not what the attempt announced."""

    def __init__(self, detail: str) -> None:
        super().__init__("secagg_bad_vector", detail)


def _check_bits(k: object) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not MIN_BITS <= k <= MAX_BITS:
        raise PackingError(f"ring width k must be an int in [{MIN_BITS}, {MAX_BITS}], got {k!r}")
    return k


def packed_row_bytes(width: int, k: int) -> int:
    """Bytes of one packed row of ``width`` k-bit words."""
    return (width * _check_bits(k) + 7) // 8


def packed_shape(shape: tuple[int, ...], k: int) -> tuple[int, ...]:
    """The packed array's shape for words of ``shape`` (the last axis is packed)."""
    if not shape:
        raise PackingError("a packed vector needs at least one axis")
    return (*shape[:-1], packed_row_bytes(shape[-1], k))


@functools.lru_cache(maxsize=None)
def _layout(k: int) -> tuple[int, int, tuple[tuple[int, int, bool], ...]]:
    """The periodic layout of k-bit words in 64-bit words: P words of k bits fill exactly Q uint64
    (P = 64 / gcd(k, 64), Q = k / gcd(k, 64)). Word j of a period starts in uint64 ``t`` at bit
    ``s`` and spills its high bits into uint64 t + 1 when s + k > 64: one (t, s, spills) a word."""
    g = math.gcd(k, 64)
    return 64 // g, k // g, tuple(((j * k) // 64, (j * k) % 64, (j * k) % 64 + k > 64) for j in range(64 // g))


# padding of a transposed array's rows: rows a power of two of bytes apart alias in the cache
_SKEW = 8


def _transposed(a: np.ndarray) -> np.ndarray:
    """``a.T`` as native uint64 in C order, its rows _SKEW words longer than they need to be."""
    out = np.empty((a.shape[1], a.shape[0] + _SKEW), dtype=np.uint64)[:, :a.shape[0]]
    out[...] = a.T
    return out


def _runs(shape: tuple[int, ...], k: int) -> tuple[int, int]:
    """(runs, words per run): rows whose bits end on a byte boundary are one continuous bitstream,
    so they are packed as one run; otherwise each row is its own run."""
    width = shape[-1]
    n = math.prod(shape)
    return (1, n) if (width * k) % 8 == 0 else (n // width, width)


def pack_words(words: np.ndarray, k: int) -> np.ndarray:
    """uint64 ring words of any shape ``[..., W]`` -> uint8 ``[..., ceil(W * k / 8)]``.
    Refuses a word that is not below 2^k (it would not be a ring element)."""
    k = _check_bits(k)
    words = np.asarray(words)
    if words.dtype != np.uint64:
        raise PackingError(f"ring words must be uint64, got {words.dtype}")
    shape = words.shape
    out_shape = packed_shape(shape, k)
    if words.size and int(words.max()) >> k:
        raise PackingError(f"a word is not below 2^{k}")
    p, q, layout = _layout(k)
    runs, length = _runs(shape, k)
    groups = -(-length // p)
    flat = words.reshape(runs, length)
    if groups * p != length:
        flat = np.zeros((runs, groups * p), dtype=np.uint64)
        flat[:, :length] = words.reshape(runs, length)
    lanes = _transposed(flat.reshape(runs * groups, p))  # [P, G]: word j of every group
    words_out = np.zeros((q, runs * groups + _SKEW), dtype=np.uint64)[:, :runs * groups]  # uint64 t of every group
    for j, (t, shift, spills) in enumerate(layout):
        words_out[t] |= lanes[j] << np.uint64(shift)
        if spills:
            words_out[t + 1] |= lanes[j] >> np.uint64(64 - shift)
    out = np.ascontiguousarray(words_out.T)
    run_bytes = (length * k + 7) // 8
    packed = out.astype("<u8", copy=False).view(np.uint8).reshape(runs, groups * q * 8)[:, :run_bytes]
    return np.ascontiguousarray(packed).reshape(out_shape)


def unpack_words(packed: np.ndarray, shape: tuple[int, ...], k: int) -> np.ndarray:
    """The inverse of :func:`pack_words`: uint8 ``[..., ceil(W * k / 8)]`` -> uint64 of ``shape``.
    PackingError for a wrong k, dtype or shape, or a set unused bit."""
    k = _check_bits(k)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise PackingError(f"a packed vector is uint8, got {packed.dtype}")
    shape = tuple(int(d) for d in shape)
    want = packed_shape(shape, k)
    if packed.shape != want:
        raise PackingError(f"packed vector has shape {list(packed.shape)}, the announced shape at k={k} "
                           f"gives {list(want)}")
    width, row_bytes = shape[-1], want[-1]
    rows = packed.reshape(-1, row_bytes)
    spare = row_bytes * 8 - width * k
    if spare and np.any(rows[:, -1] >> np.uint8(8 - spare)):
        raise PackingError("unused bits after the last word of a row are set")
    p, q, layout = _layout(k)
    runs, length = _runs(shape, k)
    groups = -(-length // p)
    run_bytes = (length * k + 7) // 8
    if run_bytes == groups * q * 8:
        buf = rows.reshape(runs, run_bytes)
    else:
        buf = np.zeros((runs, groups * q * 8), dtype=np.uint8)
        buf[:, :run_bytes] = rows.reshape(runs, run_bytes)
    u = _transposed(np.ascontiguousarray(buf).view("<u8").reshape(runs * groups, q))  # [Q, G]
    mask = np.uint64((1 << k) - 1)
    n = runs * groups
    lanes = np.empty((p, n + _SKEW), dtype=np.uint64)[:, :n]
    for j, (t, shift, spills) in enumerate(layout):
        np.right_shift(u[t], np.uint64(shift), out=lanes[j])
        if spills:
            lanes[j] |= u[t + 1] << np.uint64(64 - shift)
    lanes &= mask
    return np.ascontiguousarray(lanes.T).reshape(runs, groups * p)[:, :length].reshape(shape)

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

Both directions take a fixed number of whole-array operations whatever k: the layout repeats every
P = 64 / gcd(k, 64) words (exactly Q = k / gcd(k, 64) little-endian uint64), so the words are
handled as lanes [P, groups] (word j of every period in one contiguous row) whose rows are shifted
and gathered to, or from, the rows of [Q, groups] uint64 with precomputed index arrays.
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
def _layout(k: int) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """The periodic layout of k-bit words in 64-bit words: P words of k bits fill exactly Q uint64.
    Word j of a period starts in uint64 t[j] at bit s[j] and spills its high bits into uint64
    t[j] + 1 when s[j] + k > 64.

    Returns (P, Q, t, t_next, s, starting, spilling): ``t_next`` = min(t + 1, Q - 1), s as a column (one more 0 for the zero lane);
    ``starting[r][q]`` is the r-th word starting in uint64 q and ``spilling[q]`` the word that may
    spill into it (the last one starting before it); P (a zero lane) where there is none."""
    g = math.gcd(k, 64)
    p, q = 64 // g, k // g
    bits = np.arange(p, dtype=np.int64) * k
    t = bits // 64
    first = np.searchsorted(t, np.arange(q))  # every uint64 has a word starting in it (k < 64)
    counts = np.bincount(t, minlength=q)
    starting = tuple(np.where(counts > r, first + r, p) for r in range(int(counts.max())))
    spilling = np.where(np.arange(q) > 0, first - 1, p)
    shift = np.append(bits % 64, 0).astype(np.uint64)[:, None]  # and 0 for the zero lane
    return p, q, t, np.minimum(t + 1, q - 1), shift, starting, spilling


_CHUNK_WORDS = 1 << 14  # words handled at a time: every temporary stays small and in cache


def _chunk(p: int) -> int:
    """Periods of P words a chunk holds."""
    return max(1, _CHUNK_WORDS // p)


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
    p, q, _, _, shift, starting, spilling = _layout(k)
    runs, length = _runs(shape, k)
    groups = -(-length // p)
    flat = words.reshape(runs, length)
    if groups * p != length:  # padding words are zero
        flat = np.zeros((runs, groups * p), dtype=np.uint64)
        flat[:, :length] = words.reshape(runs, length)
    flat = flat.reshape(runs * groups, p)
    words64 = np.empty((runs * groups, q), dtype="<u8")
    for c in range(0, runs * groups, _chunk(p)):
        part = flat[c:c + _chunk(p)]
        lanes = np.zeros((p + 1, len(part)), dtype=np.uint64)  # row P stays zero: "no word"
        lanes[:p] = part.T
        low = lanes << shift  # the part of each word in the uint64 it starts in
        high = (lanes >> (np.uint64(63) - shift)) >> np.uint64(1)  # the part it spills: w >> (64 - s), 0 if none
        out = high[spilling]  # disjoint bit fields: their sum is their OR
        for idx in starting:
            out += low[idx]
        words64[c:c + _chunk(p)] = out.T
    run_bytes = (length * k + 7) // 8
    packed = words64.view(np.uint8).reshape(runs, groups * q * 8)[:, :run_bytes]
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
    p, q, t, t_next, shift, _, _ = _layout(k)
    runs, length = _runs(shape, k)
    groups = -(-length // p)
    run_bytes = (length * k + 7) // 8
    if run_bytes == groups * q * 8:
        buf = np.ascontiguousarray(rows.reshape(runs, run_bytes))
    else:
        buf = np.zeros((runs, groups * q * 8), dtype=np.uint8)
        buf[:, :run_bytes] = rows.reshape(runs, run_bytes)
    u = buf.view("<u8").reshape(runs * groups, q)
    out = np.empty((runs * groups, p), dtype=np.uint64)
    mask = np.uint64((1 << k) - 1)
    for c in range(0, runs * groups, _chunk(p)):
        part = np.ascontiguousarray(u[c:c + _chunk(p)].T, dtype=np.uint64)  # [Q, groups of the chunk]
        # word j: its low part from uint64 t[j] shifted down, its spilled part from t[j] + 1 shifted up
        # ((x << (63 - s)) << 1 is x << (64 - s) without a 64-bit shift; what it adds above k bits is masked off)
        lanes = part[t] >> shift[:p]
        lanes |= (part[t_next] << (np.uint64(63) - shift[:p])) << np.uint64(1)
        lanes &= mask
        out[c:c + _chunk(p)] = lanes.T
    return out.reshape(runs, groups * p)[:, :length].reshape(shape)

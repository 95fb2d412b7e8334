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

import numpy as np

from secgan.core.errors import ProtocolError

MIN_BITS, MAX_BITS = 2, 63  # the ring widths a FixedPointCodec allows
_LANE = 8  # words per group: 8 words of k bits are exactly k bytes


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


def _offsets(k: int) -> list[tuple[int, int]]:
    """(byte, shift) where word j of a group of 8 starts."""
    return [((j * k) // 8, (j * k) % 8) for j in range(_LANE)]


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
    rows = words.reshape(-1, shape[-1])
    n_rows, width = rows.shape
    groups = -(-width // _LANE)
    lanes = np.zeros((n_rows, groups * _LANE), dtype=np.uint64)
    lanes[:, :width] = rows
    lanes = lanes.reshape(n_rows * groups, _LANE)
    out = np.zeros((n_rows * groups, k + 8), dtype=np.uint8)  # k bytes a group, + room for the last word
    for j, (byte, shift) in enumerate(_offsets(k)):
        w = np.ascontiguousarray(lanes[:, j])
        out[:, byte:byte + 8] |= (w << np.uint64(shift)).view(np.uint8).reshape(-1, 8)
        if shift and k + shift > 64:  # bits that leave the 8-byte window
            out[:, byte + 8] |= (w >> np.uint64(64 - shift)).astype(np.uint8)
    packed = out[:, :k].reshape(n_rows, groups * k)[:, :out_shape[-1]]
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
    n_rows = rows.shape[0]
    spare = row_bytes * 8 - width * k
    if spare and np.any(rows[:, -1] >> np.uint8(8 - spare)):
        raise PackingError("unused bits after the last word of a row are set")
    groups = -(-width // _LANE)
    buf = np.zeros((n_rows, groups * k + 8), dtype=np.uint8)
    buf[:, :row_bytes] = rows
    grouped = np.zeros((n_rows * groups, k + 8), dtype=np.uint8)
    grouped[:, :k] = buf[:, :groups * k].reshape(n_rows * groups, k)
    mask = np.uint64((1 << k) - 1)
    lanes = np.empty((n_rows * groups, _LANE), dtype=np.uint64)
    for j, (byte, shift) in enumerate(_offsets(k)):
        w = np.ascontiguousarray(grouped[:, byte:byte + 8]).view(np.uint64).reshape(-1) >> np.uint64(shift)
        if shift and k + shift > 64:
            w |= grouped[:, byte + 8].astype(np.uint64) << np.uint64(64 - shift)
        lanes[:, j] = w & mask
    return lanes.reshape(n_rows, groups * _LANE)[:, :width].reshape(shape)

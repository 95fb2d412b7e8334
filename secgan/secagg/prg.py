"""Mask expansion: a 32-byte key -> a stream of uniform ring elements, with ChaCha20.

Raw primitive module. The full 32-byte key is the cipher key (never a seed for a statistical
generator such as Mersenne twister). The nonce is fixed (all zero, block counter starting at 0)
because every key is used for exactly one mask: keys are unique per (pair, run, round, step,
attempt, participant set) by construction in ``kdf.pair_key``.

Each ring element is 8 keystream bytes read little-endian, reduced mod 2^k by masking the low k
bits; 2^k divides 2^64, so the result is exactly uniform on Z_{2^k}.

A site's mask is a signed sum of such streams (:func:`signed_stream_sum`). It is computed in
vector operations without materialising any stream: each key's keystream is written, a chunk at a
time, into one reused buffer that is viewed as little-endian words and added to (or subtracted
from) the running sum in place; the sum is reduced mod 2^k once at the end (uint64 arithmetic is
mod 2^64, a multiple of 2^k, so this equals reducing every stream first). The outputs are those of
one stream at a time (known answers: tests/vectors/secagg_mask_expansion.json).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from secgan.core.errors import CryptoError

NONCE = bytes(16)  # 4-byte little-endian block counter (0) || 12-byte nonce (0)
MAX_STREAM_BYTES = 2**38  # 2^32 blocks of 64 bytes per key
# words a keystream chunk holds (256 KiB): the chunk, its keystream and the sum's slice stay in cache
CHUNK_WORDS = 1 << 15


def _encryptor(key: bytes, nonce: bytes):
    if len(key) != 32:
        raise CryptoError("mask key must be 32 bytes")
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()


def keystream(key: bytes, n_bytes: int, *, nonce: bytes = NONCE) -> bytes:
    """ChaCha20 keystream (RFC 8439 block function; cryptography's 16-byte nonce layout)."""
    enc = _encryptor(key, nonce)
    if n_bytes < 0 or n_bytes > MAX_STREAM_BYTES:
        raise CryptoError("keystream length out of range")
    return enc.update(bytes(n_bytes)) + enc.finalize()


def _ring_mask(modulus_bits: int) -> np.uint64:
    if not 1 <= modulus_bits <= 64:
        raise CryptoError("modulus_bits out of range")
    return np.uint64((1 << modulus_bits) - 1)


def signed_stream_sum(streams: Sequence[tuple[bytes, bool]], n_words: int, modulus_bits: int) -> np.ndarray:
    """sum over ``(key, negative)`` of -+ ``expand_mask(key, n_words, modulus_bits)`` mod 2^k, as
    n_words uint64 (``negative`` subtracts that key's stream)."""
    mask = _ring_mask(modulus_bits)
    if n_words < 0 or 8 * n_words > MAX_STREAM_BYTES:
        raise CryptoError("keystream length out of range")
    encs = [(_encryptor(key, NONCE), negative) for key, negative in streams]
    total = np.zeros(n_words, dtype=np.uint64)
    chunk = max(1, min(n_words, CHUNK_WORDS))
    zeros = np.zeros(8 * chunk, dtype=np.uint8)
    buf = np.empty(8 * chunk, dtype=np.uint8)
    words = buf.view("<u8")
    for start in range(0, n_words, chunk):
        m = min(chunk, n_words - start)
        part = total[start:start + m]
        for enc, negative in encs:
            enc.update_into(zeros[:8 * m], buf[:8 * m])  # the next 8m keystream bytes of this key
            (np.subtract if negative else np.add)(part, words[:m], out=part)
    if modulus_bits < 64:
        total &= mask
    return total


def expand_mask(key: bytes, n_words: int, modulus_bits: int) -> np.ndarray:
    """n_words uniform elements of Z_{2^k} as uint64."""
    return signed_stream_sum([(key, False)], n_words, modulus_bits)

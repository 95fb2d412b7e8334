"""Mask expansion: a 32-byte key -> a stream of uniform ring elements, with ChaCha20.

Raw primitive module. The full 32-byte key is the cipher key (never a seed for a statistical
generator such as Mersenne twister). The nonce is fixed (all zero, block counter starting at 0)
because every key is used for exactly one mask: keys are unique per (pair, run, round, step,
attempt, participant set) by construction in ``kdf.pair_key``.

Each ring element is 8 keystream bytes read little-endian, reduced mod 2^k by masking the low k
bits; 2^k divides 2^64, so the result is exactly uniform on Z_{2^k}.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from secgan.core.errors import CryptoError

NONCE = bytes(16)  # 4-byte little-endian block counter (0) || 12-byte nonce (0)


def keystream(key: bytes, n_bytes: int, *, nonce: bytes = NONCE) -> bytes:
    """ChaCha20 keystream (RFC 8439 block function; cryptography's 16-byte nonce layout)."""
    if len(key) != 32:
        raise CryptoError("mask key must be 32 bytes")
    if n_bytes < 0 or n_bytes > 2**38:  # 2^32 blocks of 64 bytes per key
        raise CryptoError("keystream length out of range")
    enc = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    return enc.update(bytes(n_bytes)) + enc.finalize()


def expand_mask(key: bytes, n_words: int, modulus_bits: int) -> np.ndarray:
    """n_words uniform elements of Z_{2^k} as uint64."""
    if not 1 <= modulus_bits <= 64:
        raise CryptoError("modulus_bits out of range")
    words = np.frombuffer(keystream(key, 8 * n_words), dtype="<u8").astype(np.uint64, copy=True)
    if modulus_bits < 64:
        words &= np.uint64((1 << modulus_bits) - 1)
    return words

"""Fixed-point encoding of real vectors into the ring Z_{2^k}, for secure summation.

Why fixed point: pairwise masks only cancel exactly in modular integer arithmetic; floats would
leak through rounding and could not be masked uniformly.

Encoding of one coordinate x at a site:

    q = round(clip(x, -C, C) * 2^f)            (then optional noise share, see below)
    e = q mod 2^k                              (two's complement, kept in a uint64)

Decoding a sum s of n encodings: s' = s - 2^k if s >= 2^(k-1), then s' / 2^f.

Headroom: k is chosen per participant count n so that n * 2C * 2^f (plus a 20-sigma tail of the
summed Gaussian noise, when there is any) stays below 2^(k-1): the sum cannot wrap, so decoding is
exact up to rounding. Individual encodings may wrap freely (that is what makes masking work); only
the final sum needs to fit.

Quantisation bound (known answer, tested): with no clipping in effect, each site's rounding error is
at most 2^-(f+1), so |decoded sum - plain sum| <= n * 2^-(f+1) per coordinate. With clipping the
bound holds against the sum of the clipped values.

Defaults: f = 32 fractional bits (resolution 2.3e-10, far below float32 gradient precision) and
C = 64.0 per coordinate (GAN image gradients are orders of magnitude smaller; the clip only guards
the range). Arithmetic is numpy uint64 with k <= 63.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from secgan.core.errors import ConfigError, SecganError

DEFAULT_FRAC_BITS = 32
DEFAULT_CLIP = 64.0
MAX_MODULUS_BITS = 63
# Tail of the summed Gaussian noise kept inside the range: P(|N| > 20 sigma) ~ 5e-89.
NOISE_TAIL_SIGMAS = 20.0


def modulus_bits_for(n_sites: int, *, clip: float, frac_bits: int, noise_std_total: float = 0.0) -> int:
    """Smallest k with n * 2C * 2^f + tail * sigma * 2^f < 2^(k-1); ConfigError if k > 63."""
    if n_sites < 1:
        raise ConfigError(f"secure-sum: number of sites must be >= 1, got {n_sites}")
    _check_params(clip, frac_bits)
    if not (math.isfinite(noise_std_total) and noise_std_total >= 0.0):
        raise ConfigError(f"secure-sum: noise_std_total must be finite and >= 0, got {noise_std_total}")
    bound = (n_sites * 2.0 * clip + NOISE_TAIL_SIGMAS * noise_std_total) * 2.0**frac_bits
    k = max(2, math.floor(math.log2(bound)) + 2)  # 2^(k-1) > bound
    while 2.0 ** (k - 1) <= bound:
        k += 1
    if k > MAX_MODULUS_BITS:
        raise ConfigError(
            f"secure-sum: {n_sites} sites with clip={clip} and frac_bits={frac_bits} need a "
            f"{k}-bit modulus (> {MAX_MODULUS_BITS}); lower frac_bits or clip"
        )
    return k


def _check_params(clip: float, frac_bits: int) -> None:
    if not isinstance(frac_bits, int) or isinstance(frac_bits, bool) or not 0 <= frac_bits <= 48:
        raise ConfigError(f"secure-sum: frac_bits must be an int in [0, 48], got {frac_bits!r}")
    if not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
        raise ConfigError(f"secure-sum: clip must be a finite float > 0, got {clip!r}")
    # x * 2^f must stay exactly representable in float64 before rounding.
    if clip * 2.0**frac_bits >= 2.0**52:
        raise ConfigError("secure-sum: clip * 2^frac_bits must stay below 2^52")


@dataclass(frozen=True)
class FixedPointCodec:
    """Parameters of one secure-sum attempt's ring; every participant must use the same ones."""

    frac_bits: int = DEFAULT_FRAC_BITS
    clip: float = DEFAULT_CLIP
    modulus_bits: int = MAX_MODULUS_BITS

    def __post_init__(self) -> None:
        _check_params(self.clip, self.frac_bits)
        if not isinstance(self.modulus_bits, int) or not 2 <= self.modulus_bits <= MAX_MODULUS_BITS:
            raise ConfigError(f"secure-sum: modulus_bits must be in [2, 63], got {self.modulus_bits!r}")

    @classmethod
    def for_sites(
        cls, n_sites: int, *, clip: float = DEFAULT_CLIP, frac_bits: int = DEFAULT_FRAC_BITS,
        noise_std_total: float = 0.0,
    ) -> "FixedPointCodec":
        k = modulus_bits_for(n_sites, clip=clip, frac_bits=frac_bits, noise_std_total=noise_std_total)
        return cls(frac_bits=frac_bits, clip=float(clip), modulus_bits=k)

    @property
    def mask(self) -> np.uint64:
        return np.uint64((1 << self.modulus_bits) - 1)

    def supports(self, n_sites: int, *, noise_std_total: float = 0.0) -> bool:
        """True if a sum of n_sites encodings (plus noise) cannot wrap in this ring."""
        try:
            need = modulus_bits_for(n_sites, clip=self.clip, frac_bits=self.frac_bits,
                                    noise_std_total=noise_std_total)
        except ConfigError:
            return False
        return need <= self.modulus_bits

    def quantisation_bound(self, n_sites: int) -> float:
        """Largest per-coordinate |decoded sum - sum of clipped inputs| for n_sites contributions."""
        return n_sites * 2.0 ** -(self.frac_bits + 1)

    def clip_values(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Clip to [-C, C]; returns the clipped float64 array and how many coordinates moved."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise SecganError("secure-sum: gradient has non-finite values; refusing to encode")
        clipped = np.clip(x, -self.clip, self.clip)
        return clipped, int(np.count_nonzero(clipped != x))

    def encode(self, x: np.ndarray, *, noise: np.ndarray | None = None) -> np.ndarray:
        """Clip x, add the (unclipped) noise share, scale, round, reduce mod 2^k -> flat uint64."""
        clipped, _ = self.clip_values(np.ravel(x))
        return self.encode_clipped(clipped, noise=noise)

    def encode_clipped(self, clipped: np.ndarray, *, noise: np.ndarray | None = None) -> np.ndarray:
        """:meth:`encode` of values :meth:`clip_values` already returned (not clipped again)."""
        clipped = np.ravel(clipped)
        if noise is not None:
            noise = np.ravel(np.asarray(noise, dtype=np.float64))
            if noise.shape != clipped.shape or not np.all(np.isfinite(noise)):
                raise SecganError("secure-sum: noise share has the wrong shape or non-finite values")
        scaled = np.multiply(clipped, 2.0**self.frac_bits) if noise is None else (clipped + noise) * 2.0**self.frac_bits
        np.rint(scaled, out=scaled)
        if scaled.size and max(-float(scaled.min()), float(scaled.max())) >= 2.0**62:
            raise SecganError("secure-sum: value out of the fixed-point range (noise too large?)")
        out = scaled.astype(np.int64).view(np.uint64)
        out &= self.mask
        return out

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + b) & self.mask  # uint64 overflow wraps mod 2^64, a multiple of 2^k

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a - b) & self.mask

    def decode_sum(self, s: np.ndarray) -> np.ndarray:
        """Map a ring element back to a signed real (float64)."""
        s = np.asarray(s, dtype=np.uint64) & self.mask
        half = np.uint64(1 << (self.modulus_bits - 1))
        negative = s >= half
        magnitude = np.where(negative, (np.uint64(0) - s) & self.mask, s)  # 2^k - s for negatives
        signed = magnitude.astype(np.int64)
        signed = np.where(negative, -signed, signed)
        return signed.astype(np.float64) / 2.0**self.frac_bits

    def to_dict(self) -> dict:
        return {"frac_bits": self.frac_bits, "clip": float(self.clip), "modulus_bits": self.modulus_bits}

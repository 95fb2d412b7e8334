"""Patient-level sampling, the randomness privacy amplification rests on.

The unit of privacy is the patient: a step samples patients (not slices) and one slice per sampled
patient (or ``policy.slices_per_patient`` slices, averaged into one row before the clip by
``secgan.privacy.multislice``), so one patient is one row. Every draw comes from a ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import hashlib

import numpy as np

from secgan.core.errors import PrivacyError


def sample_rate(*, expected_batch_size: int, n_patients: int) -> float:
    """Poisson rate q = expected batch / patients (capped at 1)."""
    if n_patients < 1:
        raise PrivacyError("a site needs at least one patient to sample from")
    if expected_batch_size < 1:
        raise PrivacyError(f"expected_batch_size must be >= 1, got {expected_batch_size}")
    return min(1.0, expected_batch_size / n_patients)


def poisson_patients(n_patients: int, *, rate: float, generator: np.random.Generator) -> np.ndarray:
    """Each patient independently with probability ``rate``; sorted int64 indices (possibly empty).

    The batch size is itself random: a fixed-size batch would break the Poisson-subsampling
    analysis the accountant assumes.
    """
    if not isinstance(generator, np.random.Generator):
        raise TypeError("generator must be a numpy.random.Generator")
    if not 0.0 <= rate <= 1.0:
        raise PrivacyError(f"sampling rate must be in [0, 1], got {rate}")
    if n_patients < 0:
        raise PrivacyError(f"n_patients must be >= 0, got {n_patients}")
    return np.flatnonzero(generator.random(n_patients) < rate).astype(np.int64)


def patient_shards(dataset, *, shards: int, seed: int) -> np.ndarray:
    """Shard index of every patient (``[n_patients]`` int64) for ``sanitize`` mode.

    Decided per patient by a keyed hash of that patient's own arrays, never by a permutation of
    the whole set: adding or removing one patient moves no other patient to another shard, which
    is what makes "one patient affects one discriminator" true.
    """
    if shards < 1:
        raise PrivacyError(f"shards must be >= 1, got {shards}")
    key = (int(seed) % 2**64).to_bytes(8, "big")
    out = np.empty(dataset.n_patients, dtype=np.int64)
    for i in range(dataset.n_patients):
        h = hashlib.sha256(b"secgan.shard.v1\0" + key)
        h.update(np.ascontiguousarray(dataset.images(i)).tobytes())
        h.update(np.ascontiguousarray(dataset.conds(i)).tobytes())
        out[i] = int.from_bytes(h.digest()[:8], "big") % shards
    return out

"""Pairwise masks (Bonawitz et al. 2017, all-to-all; no secret sharing since sites are few and a
dropout is handled by retrying the round with fresh masks).

Raw primitive module. For participants ordered by site id, site i's total mask is

    M_i = sum_{j > i} PRG(k_ij) - sum_{j < i} PRG(k_ij)      (mod 2^k)

so sum_i M_i = 0 over the exact participant set the keys were derived for. Any proper subset of
the masked vectors is still masked by at least one PRG stream whose key the holder of the subset
does not know, hence uniform.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secgan.secagg.kdf import pair_key, shared_secret
from secgan.secagg.prg import signed_stream_sum


def pairwise_mask(
    *,
    own_id: str,
    own_key: X25519PrivateKey,
    peers: Mapping[str, X25519PublicKey],
    context_digest: bytes,
    n_words: int,
    modulus_bits: int,
    secret_cache: MutableMapping[str, bytes] | None = None,
) -> np.ndarray:
    """Site own_id's total mask M_i (uint64, reduced mod 2^k) for one attempt: one pair key per peer
    (HKDF), then every pair's stream summed in vector operations (``prg.signed_stream_sum``)."""
    streams = []
    for peer_id in sorted(peers):
        if peer_id == own_id:
            continue
        secret = None if secret_cache is None else secret_cache.get(peer_id)
        if secret is None:
            secret = shared_secret(own_key, peers[peer_id])
            if secret_cache is not None:
                secret_cache[peer_id] = secret
        key = pair_key(secret, id_a=own_id, id_b=peer_id, context_digest=context_digest)
        streams.append((key, peer_id < own_id))  # + for j > i, - for j < i
    return signed_stream_sum(streams, n_words, modulus_bits)

"""Key agreement (X25519) and key derivation (HKDF-SHA256) for pairwise masks.

Raw primitive module: callers outside ``secgan.secagg`` use the protocol's state machines, never
``pair_key`` directly. The agreement key itself (generate, its 0600 file, the manifest's hex form)
is ``secgan.keys.agreement``.

Derivation of one pair's mask key for one attempt:

    shared = X25519(own secret, peer public)                      (32 bytes, all-zero refused)
    key    = HKDF-SHA256(ikm=shared, salt=context digest, length=32,
                         info=INFO_LABEL || 0x00 || id_lo || 0x00 || id_hi || 0x00 || digest)

The context digest (see ``protocol.RoundContext``) covers run id, round, step, attempt, the exact
participant set with each participant's public key, and the codec parameters, so a mask is never
reused across attempts and a participant-set disagreement makes masks not cancel (no leak).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secgan.core.errors import CryptoError

INFO_LABEL = b"secgan/secagg/v1/pairwise-mask-key"


def shared_secret(own: X25519PrivateKey, peer: X25519PublicKey) -> bytes:
    """Raw X25519 output; CryptoError for low-order peer keys (all-zero output)."""
    try:
        out = own.exchange(peer)
    except ValueError as exc:
        raise CryptoError("x25519 key agreement failed (low-order public key)") from exc
    if out == bytes(32):  # pragma: no cover - cryptography already refuses this
        raise CryptoError("x25519 key agreement produced the all-zero secret")
    return out


def pair_info(id_a: str, id_b: str, context_digest: bytes) -> bytes:
    """The HKDF info string for the unordered pair {id_a, id_b} under one attempt's context."""
    if id_a == id_b:
        raise CryptoError("a site cannot derive a mask with itself")
    lo, hi = sorted((id_a, id_b))
    return b"\x00".join((INFO_LABEL, lo.encode("utf-8"), hi.encode("utf-8"), context_digest))


def pair_key(shared: bytes, *, id_a: str, id_b: str, context_digest: bytes) -> bytes:
    """32-byte mask key for one pair and one attempt (symmetric in id_a, id_b)."""
    if len(shared) != 32 or len(context_digest) != 32:
        raise CryptoError("pair_key needs a 32-byte shared secret and a 32-byte context digest")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=context_digest,
                info=pair_info(id_a, id_b, context_digest))
    return hkdf.derive(shared)

"""Key agreement (X25519) and key derivation (HKDF-SHA256) for pairwise masks.

Raw primitive module: callers outside ``secgan.secagg`` use the recipes exposed by the package
(``generate_agreement_key``, ``write_agreement_key``, ``load_agreement_key``, ...), never
``pair_key`` directly.

Key separation: the X25519 agreement key is its own key pair, distinct from the site's CURVE
transport key and its Ed25519 signing key. It is generated at provisioning, its secret half is a
0600 PEM file next to the site's other keys, and its public half is published in the signed
federation manifest as ``x25519_public`` (64 lowercase hex characters). A separate key (rather
than one derived from the Ed25519 seed) keeps rotation independent and means a leaked agreement
key says nothing about the signing key, at the cost of one more file.

Derivation of one pair's mask key for one attempt:

    shared = X25519(own secret, peer public)                      (32 bytes, all-zero refused)
    key    = HKDF-SHA256(ikm=shared, salt=context digest, length=32,
                         info=INFO_LABEL || 0x00 || id_lo || 0x00 || id_hi || 0x00 || digest)

The context digest (see ``protocol.RoundContext``) covers run id, round, step, attempt, the exact
participant set with each participant's public key, and the codec parameters, so a mask is never
reused across attempts and a participant-set disagreement makes masks not cancel (no leak).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secgan.errors import CryptoError
from secgan.fsio import write_secret

INFO_LABEL = b"secgan/secagg/v1/pairwise-mask-key"
PUBLIC_HEX_LEN = 64


def generate_agreement_key() -> X25519PrivateKey:
    """A fresh X25519 key pair from the OS CSPRNG."""
    return X25519PrivateKey.generate()


def public_hex(key: X25519PrivateKey | X25519PublicKey) -> str:
    """The manifest encoding of a public key: 64 lowercase hex characters of the raw 32 bytes."""
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def parse_public_hex(text: str) -> X25519PublicKey:
    """Parse a manifest ``x25519_public`` value; CryptoError if malformed."""
    if not isinstance(text, str) or len(text) != PUBLIC_HEX_LEN or text != text.lower():
        raise CryptoError("x25519_public must be 64 lowercase hex characters")
    try:
        return X25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except ValueError as exc:
        raise CryptoError("x25519_public is not a valid key") from exc


def write_agreement_key(path: str | os.PathLike[str], key: X25519PrivateKey) -> str:
    """Write the secret key as PKCS8 PEM with mode 0600; returns the public hex for the manifest."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret(path, pem)
    return public_hex(key)


def load_agreement_key(path: str | os.PathLike[str]) -> X25519PrivateKey:
    """Load a secret agreement key, refusing a file readable by group or others."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise CryptoError(f"cannot read agreement key file {path.name}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CryptoError(f"agreement key file {path.name} is accessible by group/others (chmod 600)")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"agreement key file {path.name} is not a PEM private key") from exc
    if not isinstance(key, X25519PrivateKey):
        raise CryptoError(f"agreement key file {path.name} does not hold an X25519 key")
    return key


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

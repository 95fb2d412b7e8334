"""X25519 agreement keys for secure-sum: generate them, write and load the secret file, and the
manifest's hex form of the public key. The protocol math (shared secret, HKDF) is
``secgan.secagg.kdf``.

Key separation: the X25519 agreement key is its own key pair, distinct from the site's CURVE
transport key and its Ed25519 signing key. It is generated at provisioning, its secret half is a
0600 PEM file next to the site's other keys (read and written through ``secgan.keys.files``, like
every other secret), and its public half is published in the signed federation manifest as
``x25519_public`` (64 lowercase hex characters). A separate key (rather than one derived from the
Ed25519 seed) keeps rotation independent and means a leaked agreement key says nothing about the
signing key, at the cost of one more file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secgan.core.errors import ConfigError, CryptoError
from secgan.keys.files import read_private_pem, write_private_pem

_PUBLIC_HEX_RE = re.compile(r"[0-9a-f]{64}")


def generate_agreement_key() -> X25519PrivateKey:
    """A fresh X25519 key pair from the OS CSPRNG."""
    return X25519PrivateKey.generate()


def public_hex(key: X25519PrivateKey | X25519PublicKey) -> str:
    """The manifest encoding of a public key: 64 lowercase hex characters of the raw 32 bytes."""
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def is_public_hex(text: Any) -> bool:
    """True for 64 lowercase hex characters (the form of ``x25519_public``)."""
    return isinstance(text, str) and _PUBLIC_HEX_RE.fullmatch(text) is not None


def parse_public_hex(text: str) -> X25519PublicKey:
    """Parse a manifest ``x25519_public`` value; CryptoError if malformed."""
    if not is_public_hex(text):
        raise CryptoError("x25519_public must be 64 lowercase hex characters")
    try:
        return X25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except ValueError as exc:
        raise CryptoError("x25519_public is not a valid key") from exc


def write_agreement_key(path: str | os.PathLike[str], key: X25519PrivateKey) -> str:
    """Write the secret key as PKCS8 PEM with mode 0600; returns the public hex for the manifest."""
    write_private_pem(path, key)
    return public_hex(key)


def load_agreement_key(path: str | os.PathLike[str]) -> X25519PrivateKey:
    """Load a secret agreement key; ConfigError naming the file if it is missing, a symlink, not
    a regular file, accessible by group or others, not PEM, or not an X25519 key."""
    path = Path(path)
    key = read_private_pem(path)
    if not isinstance(key, X25519PrivateKey):
        raise ConfigError(f"{path}: not an X25519 private key")
    return key

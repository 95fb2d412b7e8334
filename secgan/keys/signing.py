"""Ed25519 recipes: signing and verify keys on disk, canonical JSON, signed JSON documents.

Callers get whole recipes (load a key safely, sign a JSON object, verify a signed file); raw
primitives stay in here. Every signature failure is the same opaque
``CryptoError("signature verification failed")``.

Signed JSON: ``sign_json`` adds ``"signature": {"alg": "ed25519", "key_id": ..., "value": ...}``
where ``value`` is the base64 Ed25519 signature of ``SIGNING_CONTEXT + canonical_json(obj)``
(``obj`` without the signature member; the context string keeps a secgan signature from being
valid for any other protocol) and ``key_id`` is the first 16 hex digits of sha256(raw public key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secgan.core.errors import ConfigError, CryptoError
from secgan.keys.files import read_private_pem, read_public_file, write_private_pem, write_public_file
from secgan.core.strictjson import parse_strict_json

SIGNING_CONTEXT = b"secgan-signed-json-v1\n"
SIGNATURE_ALG = "ed25519"
_VERIFY_FAILED = "signature verification failed"


# ---------------------------------------------------------------------------------------------
# signing and verify keys


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_raw(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_b64(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The raw 32-byte public key in standard base64 (the manifest's form)."""
    return base64.b64encode(public_raw(key)).decode("ascii")


def verify_key_from_b64(text: str) -> Ed25519PublicKey:
    """Inverse of :func:`public_b64`; ValueError if malformed."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """First 16 hex digits of sha256 over the raw public key."""
    return hashlib.sha256(public_raw(key)).hexdigest()[:16]


def write_signing_key(path: str | os.PathLike[str], key: Ed25519PrivateKey) -> None:
    """PEM PKCS#8 (unencrypted: protected by its 0600 mode), written 0600 from the first byte."""
    write_private_pem(path, key)


def write_verify_key(path: str | os.PathLike[str], key: Ed25519PublicKey | Ed25519PrivateKey) -> None:
    """PEM SubjectPublicKeyInfo, 0644."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_public_file(path, pem)


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    path = Path(path)
    key = read_private_pem(path)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 private key")
    return key


def load_verify_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file or a file holding the raw key in base64."""
    path = Path(path)
    data = read_public_file(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except Exception:
            raise ConfigError(f"{path}: not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path}: not an Ed25519 public key")
        return key
    try:
        return verify_key_from_b64(data.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path}: not an Ed25519 public key (PEM or base64 raw)") from None


# ---------------------------------------------------------------------------------------------
# canonical JSON and signatures


def _check_canonical(obj: Any, where: str = "$") -> None:
    if obj is None or isinstance(obj, (bool, str)):
        return
    if isinstance(obj, int):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise CryptoError(f"cannot sign: non-finite number at {where}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_canonical(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CryptoError(f"cannot sign: non-string key at {where}")
            _check_canonical(v, f"{where}.{k}")
        return
    raise CryptoError(f"cannot sign: {type(obj).__name__} at {where} is not JSON")


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN/Infinity; only str keys and JSON values.
    CryptoError for anything else (so two encoders can never disagree silently)."""
    _check_canonical(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def sign_json(obj: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``obj`` with a ``signature`` member added."""
    if not isinstance(obj, Mapping) or "signature" in obj:
        raise CryptoError("cannot sign: expected a JSON object without a 'signature' member")
    body = dict(obj)
    value = key.sign(SIGNING_CONTEXT + canonical_json(body))
    body["signature"] = {
        "alg": SIGNATURE_ALG,
        "key_id": key_id(key),
        "value": base64.b64encode(value).decode("ascii"),
    }
    return body


def _allowlist(keys: Any) -> dict[str, Ed25519PublicKey]:
    if isinstance(keys, (Ed25519PublicKey, Ed25519PrivateKey)):
        keys = [keys]
    elif isinstance(keys, Mapping):
        keys = list(keys.values())
    out = {}
    for k in keys:
        if isinstance(k, Ed25519PrivateKey):
            k = k.public_key()
        if isinstance(k, Ed25519PublicKey):
            out[key_id(k)] = k
    return out


def verify_json(
    signed: Any, public_key: Ed25519PublicKey | Iterable[Ed25519PublicKey] | Mapping[Any, Ed25519PublicKey]
) -> dict[str, Any]:
    """The object without its ``signature`` member if the signature is valid under one of the
    given keys; otherwise CryptoError("signature verification failed"), whatever the cause."""
    try:
        allowed = _allowlist(public_key)
        if not isinstance(signed, Mapping):
            raise ValueError
        sig = signed.get("signature")
        if not isinstance(sig, Mapping) or set(sig) != {"alg", "key_id", "value"}:
            raise ValueError
        if sig["alg"] != SIGNATURE_ALG or not isinstance(sig["key_id"], str) or not isinstance(sig["value"], str):
            raise ValueError
        key = allowed.get(sig["key_id"])
        if key is None:
            raise ValueError
        value = base64.b64decode(sig["value"].encode("ascii"), validate=True)
        if len(value) != 64:
            raise ValueError
        body = {k: v for k, v in signed.items() if k != "signature"}
        key.verify(value, SIGNING_CONTEXT + canonical_json(body))
        # re-parse so the caller gets a copy that shares nothing with its input
        return json.loads(canonical_json(body))
    except (ValueError, TypeError, KeyError, UnicodeError, binascii.Error, CryptoError, InvalidSignature):
        raise CryptoError(_VERIFY_FAILED) from None


def write_signed_json(path: str | os.PathLike[str], obj: Mapping[str, Any], key: Ed25519PrivateKey) -> None:
    data = json.dumps(sign_json(obj, key), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    write_public_file(path, data.encode("utf-8") + b"\n")


def read_signed_json(path: str | os.PathLike[str], public_key: Any) -> dict[str, Any]:
    """Read and verify; ConfigError if unreadable/not JSON, CryptoError if the signature fails."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        obj = parse_strict_json(data)
    except ValueError:
        raise ConfigError(f"{path}: not valid JSON") from None
    try:
        return verify_json(obj, public_key)
    except CryptoError:
        raise CryptoError(f"{path}: {_VERIFY_FAILED}") from None

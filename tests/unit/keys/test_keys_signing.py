"""Ed25519 key files and signed JSON: known answers and one negative per parameter."""

from __future__ import annotations

import base64
import copy
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secgan.core.errors import ConfigError, CryptoError
from secgan.keys import signing

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "keys_ed25519.json"


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def test_signing_key_with_loose_mode_is_refused(tmp_path):
    path = tmp_path / "signing.pem"
    signing.write_signing_key(path, signing.generate_signing_key())
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="signing.pem"):
        signing.load_signing_key(path)


def test_signing_key_files_round_trip(tmp_path):
    key = signing.generate_signing_key()
    signing.write_signing_key(tmp_path / "s.pem", key)
    signing.write_verify_key(tmp_path / "s.pub", key)
    assert signing.public_raw(signing.load_signing_key(tmp_path / "s.pem")) == signing.public_raw(key)
    assert signing.public_raw(signing.load_verify_key(tmp_path / "s.pub")) == signing.public_raw(key)
    (tmp_path / "raw.pub").write_text(signing.public_b64(key) + "\n")
    assert signing.public_raw(signing.load_verify_key(tmp_path / "raw.pub")) == signing.public_raw(key)
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="bad.pub"):
        signing.load_verify_key(tmp_path / "bad.pub")
    (tmp_path / "bad.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    os.chmod(tmp_path / "bad.pem", 0o600)
    with pytest.raises(ConfigError, match="bad.pem"):
        signing.load_signing_key(tmp_path / "bad.pem")


def test_rfc8032_vectors(vectors):
    for v in vectors["rfc8032"]:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["secret"]))
        assert signing.public_raw(key).hex() == v["public"]
        assert key.sign(bytes.fromhex(v["message"])).hex() == v["signature"]


def test_sign_json_known_answer(vectors):
    v = vectors["sign_json"]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["secret"]))
    assert signing.SIGNING_CONTEXT.decode() == v["context"]
    assert signing.canonical_json(v["object"]).hex() == v["canonical_hex"]
    assert signing.sign_json(v["object"], key) == v["signed"]
    assert signing.verify_json(v["signed"], key.public_key()) == v["object"]
    assert v["signed"]["signature"]["key_id"] == signing.key_id(key)


def test_canonical_json_rules():
    assert signing.canonical_json({"b": 1, "a": [1.5, None, True, "é"]}) == '{"a":[1.5,null,true,"é"],"b":1}'.encode()
    for bad in ({"x": float("nan")}, {"x": float("inf")}, {1: "int key"}, {"x": b"bytes"}, {"x": {1, 2}}):
        with pytest.raises(CryptoError):
            signing.canonical_json(bad)


def _verify_fails(signed, key):
    with pytest.raises(CryptoError) as exc:
        signing.verify_json(signed, key)
    assert str(exc.value) == "signature verification failed"


@pytest.fixture()
def signed(vectors):
    return copy.deepcopy(vectors["sign_json"]["signed"])


@pytest.fixture()
def pub(vectors):
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vectors["sign_json"]["secret"])).public_key()


def test_tampered_body(signed, pub):
    signed["epsilon"] = 1.6
    _verify_fails(signed, pub)


def test_wrong_key(signed):
    _verify_fails(signed, signing.generate_signing_key().public_key())


def test_wrong_alg(signed, pub):
    signed["signature"]["alg"] = "rsa"
    _verify_fails(signed, pub)


def test_truncated_signature(signed, pub):
    raw = base64.b64decode(signed["signature"]["value"])
    signed["signature"]["value"] = base64.b64encode(raw[:63]).decode()
    _verify_fails(signed, pub)


def test_malformed_signature_value(signed, pub):
    signed["signature"]["value"] = "!!!not base64!!!"
    _verify_fails(signed, pub)


def test_extra_field_after_signing(signed, pub):
    signed["added"] = "later"
    _verify_fails(signed, pub)


def test_extra_member_in_signature(signed, pub):
    signed["signature"]["note"] = "x"
    _verify_fails(signed, pub)


def test_wrong_key_id(signed, pub):
    signed["signature"]["key_id"] = "0" * 16
    _verify_fails(signed, pub)


def test_missing_signature_and_non_objects(signed, pub):
    _verify_fails({k: v for k, v in signed.items() if k != "signature"}, pub)
    _verify_fails([signed], pub)
    _verify_fails("text", pub)
    _verify_fails({"signature": None}, pub)


def test_allowlist_of_keys(signed, pub):
    other = signing.generate_signing_key().public_key()
    assert signing.verify_json(signed, [other, pub])["federation"] == "demo"
    assert signing.verify_json(signed, {"a": other, "b": pub})["federation"] == "demo"
    _verify_fails(signed, [other])
    _verify_fails(signed, [])


def test_sign_refuses_already_signed(signed):
    with pytest.raises(CryptoError):
        signing.sign_json(signed, signing.generate_signing_key())

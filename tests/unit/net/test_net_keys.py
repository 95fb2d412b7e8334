"""Key files, signatures (known answers and one negative per parameter), manifest checks."""

from __future__ import annotations

import base64
import copy
import json
import os
from pathlib import Path

import pytest
import zmq.auth
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secgan import keys
from secgan.errors import ConfigError, CryptoError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "keys_ed25519.json"


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


# --- CURVE key files ------------------------------------------------------------------------


def test_curve_keypair_files_modes_and_round_trip(tmp_path):
    pub_path, sec_path = keys.write_curve_keypair(tmp_path, "site-1")
    assert (pub_path.name, sec_path.name) == ("site-1.key", "site-1.key_secret")
    assert oct(os.stat(sec_path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(pub_path).st_mode & 0o777) == "0o644"
    public, secret = keys.load_curve_keypair(tmp_path, "site-1")
    assert keys.is_z85_key(public) and keys.is_z85_key(secret) and public != secret
    assert keys.load_curve_public(pub_path) == public
    assert b"secret-key" not in pub_path.read_bytes()
    # ZeroMQ's own certificate reader understands the files
    assert zmq.auth.load_certificate(sec_path) == (public, secret)
    assert zmq.auth.load_certificate(pub_path) == (public, None)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o620])
def test_secret_file_with_loose_mode_is_refused(tmp_path, mode):
    _, sec_path = keys.write_curve_keypair(tmp_path, "c")
    os.chmod(sec_path, mode)
    with pytest.raises(ConfigError) as exc:
        keys.load_curve_keypair(tmp_path, "c")
    assert str(sec_path) in str(exc.value)
    secret_text = sec_path.read_text()
    assert secret_text.split('secret-key = "')[1][:40] not in str(exc.value)


def test_signing_key_with_loose_mode_is_refused(tmp_path):
    path = tmp_path / "signing.pem"
    keys.write_signing_key(path, keys.generate_signing_key())
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="signing.pem"):
        keys.load_signing_key(path)


def test_secret_symlink_and_missing_are_refused(tmp_path):
    _, sec_path = keys.write_curve_keypair(tmp_path, "c")
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.key_secret").symlink_to(sec_path)
    with pytest.raises(ConfigError):
        keys.load_curve_keypair(other, "c")
    with pytest.raises(ConfigError, match="not found"):
        keys.load_curve_keypair(tmp_path, "nobody")


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"curve\n    public-key = \"short\"\n    secret-key = \"short\"\n",
        b"nonsense\n",
        b"metadata\ncurve\n    public-key = \"" + b"A" * 40 + b"\"\n",  # no secret
        b"metadata\ncurve\n    public-key = \"" + b"~" * 40 + b"\"\n    secret-key = \"" + b"~" * 40 + b"\"\n",
        b"\x00\xff" * 10,
    ],
)
def test_malformed_curve_secret_file(tmp_path, text):
    path = tmp_path / "c.key_secret"
    path.write_bytes(text)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="c.key_secret"):
        keys.load_curve_keypair(tmp_path, "c")


def test_curve_public_must_match_secret(tmp_path):
    keys.write_curve_keypair(tmp_path, "a")
    keys.write_curve_keypair(tmp_path / "b", "a")
    # swap in another key pair's public file
    (tmp_path / "a.key").write_bytes((tmp_path / "b" / "a.key").read_bytes())
    with pytest.raises(ConfigError, match="does not match"):
        keys.load_curve_keypair(tmp_path, "a")
    # a secret certificate whose public line was edited
    sec = (tmp_path / "b" / "a.key_secret")
    other_pub, _ = keys.generate_curve_keypair()
    lines = sec.read_text().splitlines()
    lines = [f'    public-key = "{other_pub.decode()}"' if "public-key" in ln else ln for ln in lines]
    sec.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="does not belong"):
        keys.load_curve_keypair(tmp_path / "b", "a")


def test_public_file_with_secret_is_refused(tmp_path):
    _, sec_path = keys.write_curve_keypair(tmp_path, "c")
    pub = tmp_path / "leak.key"
    pub.write_bytes(sec_path.read_bytes())
    with pytest.raises(ConfigError, match="must not contain a secret"):
        keys.load_curve_public(pub)


def test_signing_key_files_round_trip(tmp_path):
    key = keys.generate_signing_key()
    keys.write_signing_key(tmp_path / "s.pem", key)
    keys.write_verify_key(tmp_path / "s.pub", key)
    assert keys.public_raw(keys.load_signing_key(tmp_path / "s.pem")) == keys.public_raw(key)
    assert keys.public_raw(keys.load_verify_key(tmp_path / "s.pub")) == keys.public_raw(key)
    (tmp_path / "raw.pub").write_text(keys.public_b64(key) + "\n")
    assert keys.public_raw(keys.load_verify_key(tmp_path / "raw.pub")) == keys.public_raw(key)
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="bad.pub"):
        keys.load_verify_key(tmp_path / "bad.pub")
    (tmp_path / "bad.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    os.chmod(tmp_path / "bad.pem", 0o600)
    with pytest.raises(ConfigError, match="bad.pem"):
        keys.load_signing_key(tmp_path / "bad.pem")


# --- signatures: known answers ---------------------------------------------------------------


def test_rfc8032_vectors(vectors):
    for v in vectors["rfc8032"]:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["secret"]))
        assert keys.public_raw(key).hex() == v["public"]
        assert key.sign(bytes.fromhex(v["message"])).hex() == v["signature"]


def test_sign_json_known_answer(vectors):
    v = vectors["sign_json"]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["secret"]))
    assert keys.SIGNING_CONTEXT.decode() == v["context"]
    assert keys.canonical_json(v["object"]).hex() == v["canonical_hex"]
    assert keys.sign_json(v["object"], key) == v["signed"]
    assert keys.verify_json(v["signed"], key.public_key()) == v["object"]
    assert v["signed"]["signature"]["key_id"] == keys.key_id(key)


def test_canonical_json_rules():
    assert keys.canonical_json({"b": 1, "a": [1.5, None, True, "é"]}) == '{"a":[1.5,null,true,"é"],"b":1}'.encode()
    for bad in ({"x": float("nan")}, {"x": float("inf")}, {1: "int key"}, {"x": b"bytes"}, {"x": {1, 2}}):
        with pytest.raises(CryptoError):
            keys.canonical_json(bad)


# --- signatures: one negative per parameter ---------------------------------------------------


def _verify_fails(signed, key):
    with pytest.raises(CryptoError) as exc:
        keys.verify_json(signed, key)
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
    _verify_fails(signed, keys.generate_signing_key().public_key())


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
    other = keys.generate_signing_key().public_key()
    assert keys.verify_json(signed, [other, pub])["federation"] == "demo"
    assert keys.verify_json(signed, {"a": other, "b": pub})["federation"] == "demo"
    _verify_fails(signed, [other])
    _verify_fails(signed, [])


def test_sign_refuses_already_signed(signed):
    with pytest.raises(CryptoError):
        keys.sign_json(signed, keys.generate_signing_key())


# --- manifest ---------------------------------------------------------------------------------


def make_manifest(tmp_path, n_sites=2, **overrides):
    ckey = keys.generate_signing_key()
    cpub, _ = keys.generate_curve_keypair()
    sites = [(f"site-{i}", keys.generate_curve_keypair()[0], keys.generate_signing_key()) for i in range(1, n_sites + 1)]
    kw = dict(
        federation="demo", coordinator_curve_public=cpub, coordinator_verify_key=ckey,
        endpoint="tcp://127.0.0.1:5555", sites=sites, created="2026-01-01T00:00:00Z", run_id="run-1",
    )
    kw.update(overrides)
    body = keys.manifest_dict(**kw)
    path = tmp_path / "manifest.json"
    keys.write_manifest(path, body, ckey)
    return path, ckey, body


def test_manifest_round_trip(tmp_path):
    path, ckey, body = make_manifest(tmp_path, n_sites=3)
    m = keys.load_manifest(path, coordinator_verify_key=ckey.public_key())
    assert m.federation == "demo" and m.run_id == "run-1" and len(m.sites) == 3
    assert m.coordinator.endpoint == "tcp://127.0.0.1:5555"
    s2 = m.site("site-2")
    assert s2 is not None and m.site_by_curve_key(s2.curve_public) == s2
    assert m.site_by_curve_key(s2.curve_public.decode()) == s2
    assert m.site("site-9") is None and m.site_by_curve_key(b"x" * 40) is None
    assert m.site_curve_keys() == tuple(s.curve_public for s in m.sites)


def test_manifest_tamper_and_wrong_key(tmp_path):
    path, ckey, _ = make_manifest(tmp_path)
    with pytest.raises(CryptoError, match="signature verification failed"):
        keys.load_manifest(path, coordinator_verify_key=keys.generate_signing_key().public_key())
    data = json.loads(path.read_text())
    data["sites"][0]["curve_public"] = keys.generate_curve_keypair()[0].decode()  # swap in an attacker key
    path.write_text(json.dumps(data))
    with pytest.raises(CryptoError, match="signature verification failed"):
        keys.load_manifest(path, coordinator_verify_key=ckey.public_key())
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        keys.load_manifest(path, coordinator_verify_key=ckey.public_key())


def test_manifest_signed_by_other_than_listed_coordinator_is_refused(tmp_path):
    path, ckey, body = make_manifest(tmp_path)
    rogue = keys.generate_signing_key()
    keys.write_manifest(path, body, rogue)  # validly signed, but not by the key it lists
    with pytest.raises(ConfigError, match="not the key that signed"):
        keys.load_manifest(path, coordinator_verify_key=rogue.public_key())


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda m: m["sites"].append(dict(m["sites"][0])), "site ids must be unique"),
        (lambda m: m["sites"][1].update(curve_public=m["sites"][0]["curve_public"]), "CURVE public keys must be unique"),
        (lambda m: m["sites"][1].update(ed25519_public=m["sites"][0]["ed25519_public"]), "Ed25519 public keys must be unique"),
        (lambda m: m["sites"][0].update(curve_public="x" * 39), r"sites\[0\].curve_public"),
        (lambda m: m["sites"][0].update(ed25519_public="AAAA"), r"sites\[0\].ed25519_public"),
        (lambda m: m["sites"][0].update(site_id="Site 1"), r"sites\[0\].site_id"),
        (lambda m: m["sites"][0].update(extra=1), "unknown key"),
        (lambda m: m["coordinator"].update(endpoint="ipc://coordinator"), "endpoint"),
        (lambda m: m["coordinator"].update(endpoint="tcp://host:70000"), "endpoint"),
        (lambda m: m.pop("created"), "missing created"),
        (lambda m: m.update(sites=[]), "sites must be"),
        (lambda m: m.update(run_id="has space"), "run_id"),
    ],
)
def test_manifest_schema_errors_name_the_field(tmp_path, mutate, match):
    path, ckey, body = make_manifest(tmp_path)
    body = copy.deepcopy(body)
    mutate(body)
    keys.write_signed_json(path, body, ckey)  # signed, so only the schema can fail
    with pytest.raises(ConfigError, match=match):
        keys.load_manifest(path, coordinator_verify_key=ckey.public_key())


def test_manifest_dict_refuses_invalid_input(tmp_path):
    with pytest.raises(ConfigError):
        make_manifest(tmp_path, endpoint="not an endpoint")


def test_keys_module_does_not_pull_in_torch():
    import subprocess
    import sys

    code = "import sys, secgan.keys; raise SystemExit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_manifest_strict_json_and_site_keys(tmp_path):
    path, ckey, body = make_manifest(tmp_path)
    m = keys.load_manifest(path, coordinator_verify_key=ckey.public_key())
    assert m.site_keys() == {s.site_id: s.curve_public for s in m.sites}
    text = path.read_text()
    # a duplicate key could make two parsers see different manifests: refused before verification
    path.write_text(text.replace('"federation": "demo"', '"federation": "demo", "federation": "evil"'))
    with pytest.raises(ConfigError, match="not valid JSON"):
        keys.load_manifest(path, coordinator_verify_key=ckey.public_key())
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ConfigError, match="not valid JSON"):
        keys.load_manifest(path, coordinator_verify_key=ckey.public_key())

"""The signed federation manifest: round trip, tampering, the signer, schema errors naming the field."""

from __future__ import annotations

import copy
import json

import pytest

from secgan.core.errors import ConfigError, CryptoError
from secgan.keys import curve, manifest, signing


def make_manifest(tmp_path, n_sites=2, **overrides):
    ckey = signing.generate_signing_key()
    cpub, _ = curve.generate_curve_keypair()
    sites = [(f"site-{i}", curve.generate_curve_keypair()[0], signing.generate_signing_key()) for i in range(1, n_sites + 1)]
    kw = dict(
        federation="demo", coordinator_curve_public=cpub, coordinator_verify_key=ckey,
        endpoint="tcp://127.0.0.1:5555", sites=sites, created="2026-01-01T00:00:00Z", run_id="run-1",
    )
    kw.update(overrides)
    body = manifest.manifest_dict(**kw)
    path = tmp_path / "manifest.json"
    manifest.write_manifest(path, body, ckey)
    return path, ckey, body


def test_manifest_round_trip(tmp_path):
    path, ckey, body = make_manifest(tmp_path, n_sites=3)
    m = manifest.load_manifest(path, coordinator_verify_key=ckey.public_key())
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
        manifest.load_manifest(path, coordinator_verify_key=signing.generate_signing_key().public_key())
    data = json.loads(path.read_text())
    data["sites"][0]["curve_public"] = curve.generate_curve_keypair()[0].decode()  # swap in an attacker key
    path.write_text(json.dumps(data))
    with pytest.raises(CryptoError, match="signature verification failed"):
        manifest.load_manifest(path, coordinator_verify_key=ckey.public_key())
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        manifest.load_manifest(path, coordinator_verify_key=ckey.public_key())


def test_manifest_signed_by_other_than_listed_coordinator_is_refused(tmp_path):
    path, ckey, body = make_manifest(tmp_path)
    rogue = signing.generate_signing_key()
    manifest.write_manifest(path, body, rogue)  # validly signed, but not by the key it lists
    with pytest.raises(ConfigError, match="not the key that signed"):
        manifest.load_manifest(path, coordinator_verify_key=rogue.public_key())


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
    signing.write_signed_json(path, body, ckey)  # signed, so only the schema can fail
    with pytest.raises(ConfigError, match=match):
        manifest.load_manifest(path, coordinator_verify_key=ckey.public_key())


def test_manifest_dict_refuses_invalid_input(tmp_path):
    with pytest.raises(ConfigError):
        make_manifest(tmp_path, endpoint="not an endpoint")


def test_manifest_strict_json_and_site_keys(tmp_path):
    path, ckey, body = make_manifest(tmp_path)
    m = manifest.load_manifest(path, coordinator_verify_key=ckey.public_key())
    assert m.site_keys() == {s.site_id: s.curve_public for s in m.sites}
    text = path.read_text()
    # a duplicate key could make two parsers see different manifests: refused before verification
    path.write_text(text.replace('"federation": "demo"', '"federation": "demo", "federation": "evil"'))
    with pytest.raises(ConfigError, match="not valid JSON"):
        manifest.load_manifest(path, coordinator_verify_key=ckey.public_key())
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ConfigError, match="not valid JSON"):
        manifest.load_manifest(path, coordinator_verify_key=ckey.public_key())

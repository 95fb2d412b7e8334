"""Secure-sum plumbing of the network layer: the two messages on the wire, x25519_public in the
signed manifest, agreement keys in a provisioned kit, the coordinator/site config checks."""

from __future__ import annotations

import copy
import os
import stat

import pytest
import torch

from secgan.net import codec
from secgan.commands.provision import provision
from secgan.core.errors import ConfigError, ProtocolError
from secgan.keys.agreement import generate_agreement_key, load_agreement_key, public_hex, write_agreement_key
from secgan.keys.curve import generate_curve_keypair
from secgan.keys.manifest import manifest_dict, parse_manifest
from secgan.keys.signing import generate_signing_key
from secgan.net.schema import SecAggAnnounce, SecAggMasked
from secgan.settings import load_site_config, verify_site_federation

from coordinator.config import CoordinatorConfig, load_coordinator_config, verify_coordinator_federation

H = "ab" * 32


def _ann(**kw):
    base = dict(run_id="r", round=3, step=2, attempt=1, participants=[["site-1", H], ["site-2", "cd" * 32]],
                frac_bits=32, clip=64.0, modulus_bits=44, shape=[2, 4, 8, 8], set_digest="0f" * 32)
    base.update(kw)
    return SecAggAnnounce(**base)


def _enc(msg):
    return codec.encode(msg, run_id=msg.run_id, round=msg.round, step=msg.step, site="site-1", seq=5)


def test_messages_round_trip():
    env, got = codec.decode(_enc(_ann()))
    assert env.type == "secagg_announce" and got.participants == _ann().participants
    assert list(got.shape) == [2, 4, 8, 8] and got.clip == 64.0 and got.set_digest == "0f" * 32
    masked = torch.tensor([[0, 255, 7], [128, 1, 0]], dtype=torch.uint8)  # ring words packed to k bits
    m = SecAggMasked(run_id="r", round=3, step=2, attempt=0, set_digest="aa" * 32, masked=masked, budget_left=None)
    _, back = codec.decode(_enc(m))
    assert torch.equal(back.masked, masked) and back.budget_left is None and back.attempt == 0


@pytest.mark.parametrize("field, value, code", [
    ("participants", [["site-1", "AB" * 32]], "out_of_range"),  # upper-case hex
    ("participants", [["site-1", H[:-2]]], "out_of_range"),
    ("participants", [["site 1", H]], "out_of_range"),
    ("participants", [["site-1", H, "x"]], "bad_type"),
    ("participants", [], "out_of_range"),
    ("set_digest", "zz" * 32, "out_of_range"),
    ("modulus_bits", 64, "out_of_range"),
    ("frac_bits", True, "bad_type"),
    ("clip", 0.0, "out_of_range"),
    ("shape", [], "out_of_range"),
])
def test_bad_announcements_are_refused(field, value, code):
    with pytest.raises(ProtocolError) as exc:
        _enc(_ann(**{field: value}))
    assert exc.value.code == code


@pytest.mark.parametrize("masked", [torch.zeros(4), torch.zeros(4, dtype=torch.int64)])
def test_masked_vector_must_be_packed_bytes(masked):
    # protocol 3 carries packed k-bit words (uint8); int64 words were protocol 2's form
    m = SecAggMasked(run_id="r", round=1, step=0, attempt=0, set_digest="aa" * 32, masked=masked)
    with pytest.raises(ProtocolError) as exc:
        _enc(m)
    assert exc.value.code == "bad_dtype"


def _manifest(**site_extra):
    csign = generate_signing_key()
    sites = []
    for i in (1, 2, 3):
        entry = (f"site-{i}", generate_curve_keypair()[0], generate_signing_key(),
                 public_hex(generate_agreement_key()))
        sites.append(entry)
    return manifest_dict(federation="f", coordinator_curve_public=generate_curve_keypair()[0],
                         coordinator_verify_key=csign, endpoint="tcp://127.0.0.1:5555", sites=sites,
                         created="now")


def test_manifest_carries_and_checks_x25519_public():
    body = _manifest()
    m = parse_manifest(body)
    roster = m.agreement_roster()
    assert sorted(roster) == ["site-1", "site-2", "site-3"] and all(len(v) == 64 for v in roster.values())
    for bad in ("AB" * 32, "ab" * 31, "00" * 32, 7, None):
        b = copy.deepcopy(body)
        b["sites"][0]["x25519_public"] = bad
        with pytest.raises(ConfigError, match="x25519_public"):
            parse_manifest(b)
    b = copy.deepcopy(body)
    b["sites"][1]["x25519_public"] = b["sites"][0]["x25519_public"]
    with pytest.raises(ConfigError, match="unique"):
        parse_manifest(b)
    b = copy.deepcopy(body)
    del b["sites"][2]["x25519_public"]  # an older kit still loads, but cannot run secure-sum
    m = parse_manifest(b)
    assert m.sites[2].x25519_public is None
    with pytest.raises(ConfigError, match="site-3"):
        m.agreement_roster()


def test_provisioned_kit_has_agreement_keys_in_the_signed_manifest(tmp_path):
    out = tmp_path / "fed"
    provision(out, sites=3, run_id="r1", aggregation="secure-sum")
    ccfg = load_coordinator_config(out / "coordinator" / "coordinator.toml")
    assert ccfg.aggregation == "secure-sum"
    roster = verify_coordinator_federation(ccfg).agreement_roster()
    for k in (1, 2, 3):
        sdir = out / f"site-{k}"
        path = sdir / "keys" / f"site-{k}.x25519"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert public_hex(load_agreement_key(path)) == roster[f"site-{k}"]
        scfg = load_site_config(sdir / "site.toml")
        assert scfg.agreement_key_path == path
        verify_site_federation(scfg)
    # a site whose agreement key is not the manifest's is refused at start
    write_agreement_key(out / "site-1" / "keys" / "site-1.x25519", generate_agreement_key())
    with pytest.raises(ConfigError, match="agreement_key"):
        verify_site_federation(load_site_config(out / "site-1" / "site.toml"))


def test_coordinator_config_rules_for_secure_sum(tmp_path):
    with pytest.raises(ValueError, match="min_sites"):
        CoordinatorConfig(aggregation="secure-sum", min_sites=2)
    with pytest.raises(ValueError, match="procedural"):
        CoordinatorConfig(aggregation="secure-sum", min_sites=3, condition_source="site")
    out = tmp_path / "fed"
    provision(out, sites=6, run_id="r1")
    path = out / "coordinator" / "coordinator.toml"
    text = path.read_text().replace('aggregation = "routed"', 'aggregation = "secure-sum"')
    path.write_text(text.replace("min_sites = 6", "min_sites = 3"))
    with pytest.raises(ConfigError, match="threshold 4"):  # 6 sites: a strict majority is 4
        verify_coordinator_federation(load_coordinator_config(path))

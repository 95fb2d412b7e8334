"""The CURVE allow-list policy and its ZAP reply, without sockets."""

from __future__ import annotations

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from zmq.utils import z85

from secgan.core.errors import ConfigError, CryptoError
from secgan.net.transport import AllowListPolicy, ZapAuthenticator, ZAP_DOMAIN


def _keys(n: int) -> list[bytes]:
    return [zmq.curve_keypair()[0] for _ in range(n)]


def test_known_key_maps_to_its_site_id():
    k1, k2 = _keys(2)
    policy = AllowListPolicy({"site-1": k1, "site-2": k2})
    d = policy.decide(domain=ZAP_DOMAIN, mechanism="CURVE", credentials=[z85.decode(k2)])
    assert d.allowed and d.user_id == "site-2" and d.status_code == b"200"
    assert policy.allowed == 1 and policy.denied == 0


def test_unknown_key_is_denied_and_remembered():
    (k1,) = _keys(1)
    (stranger,) = _keys(1)
    policy = AllowListPolicy({"site-1": k1})
    d = policy.decide(domain=ZAP_DOMAIN, mechanism="CURVE", credentials=[z85.decode(stranger)])
    assert not d.allowed and d.user_id == "" and d.reason == "unknown_key" and d.status_code == b"400"
    assert policy.was_denied(stranger) and not policy.was_denied(k1)


@pytest.mark.parametrize(
    "domain, mechanism, creds, reason",
    [
        ("other", "CURVE", None, "wrong_domain"),
        (ZAP_DOMAIN, "NULL", None, "mechanism_not_allowed"),
        (ZAP_DOMAIN, "PLAIN", None, "mechanism_not_allowed"),
        (ZAP_DOMAIN, "CURVE", [b"short"], "bad_credentials"),
        (ZAP_DOMAIN, "CURVE", [], "bad_credentials"),
    ],
)
def test_everything_else_is_denied(domain, mechanism, creds, reason):
    (k1,) = _keys(1)
    policy = AllowListPolicy({"site-1": k1})
    d = policy.decide(domain=domain, mechanism=mechanism, credentials=[z85.decode(k1)] if creds is None else creds)
    assert not d.allowed and d.reason == reason


def test_shared_or_malformed_keys_are_refused_at_construction():
    (k1,) = _keys(1)
    with pytest.raises(ConfigError, match="share one CURVE key"):
        AllowListPolicy({"site-1": k1, "site-2": k1})
    with pytest.raises(CryptoError):
        AllowListPolicy({"site-1": b"not a key"})
    with pytest.raises(ConfigError):
        AllowListPolicy({"": k1})


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_random_keys_are_never_allowed(raw):
    k1, k2 = _keys(2)
    policy = AllowListPolicy({"site-1": k1, "site-2": k2})
    d = policy.decide(domain=ZAP_DOMAIN, mechanism="CURVE", credentials=[raw])
    assert d.allowed == (raw in (z85.decode(k1), z85.decode(k2)))


def test_zap_answer_frames_follow_rfc27():
    (k1,) = _keys(1)
    zap = ZapAuthenticator(zmq.Context.instance(), AllowListPolicy({"site-1": k1}))
    ok = zap.answer([b"1.0", b"r1", ZAP_DOMAIN.encode(), b"127.0.0.1", b"", b"CURVE", z85.decode(k1)])
    assert ok == [b"1.0", b"r1", b"200", b"ok", b"site-1", b""]
    no = zap.answer([b"1.0", b"r2", ZAP_DOMAIN.encode(), b"127.0.0.1", b"", b"NULL"])
    assert no[:3] == [b"1.0", b"r2", b"400"] and no[4] == b""
    bad = zap.answer([b"0.9", b"r3"])
    assert bad[2] == b"500" and bad[4] == b""


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=9))
def test_zap_answer_never_allows_garbage(frames):
    (k1,) = _keys(1)
    zap = ZapAuthenticator(zmq.Context.instance(), AllowListPolicy({"site-1": k1}))
    reply = zap.answer(frames)
    assert len(reply) == 6 and reply[2] != b"200" and reply[4] == b""

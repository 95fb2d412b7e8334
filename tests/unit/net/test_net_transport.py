"""Socket options, ZAP identity and the start-up self-check, over real sockets on 127.0.0.1."""

from __future__ import annotations

import pytest
import zmq

from secgan.net import transport
from secgan.net.limits import WireLimits, max_message_bytes
from secgan.core.errors import ConfigError, CryptoError
from secgan.net.transport import (
    AllowListPolicy,
    SocketTuning,
    ZapAuthenticator,
    make_dealer,
    make_router,
    peer_user_id,
    self_check_rejects_unknown,
)

LIMITS = WireLimits()


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def test_router_options_are_set_explicitly(ctx):
    spub, ssec = zmq.curve_keypair()
    tuning = SocketTuning(sndhwm=7, rcvhwm=9, linger_ms=11, heartbeat_ivl_ms=123, heartbeat_timeout_ms=456)
    r = make_router(ctx, bind="tcp://127.0.0.1:0", server_secret=ssec, server_public=spub, limits=LIMITS,
                    tuning=tuning)
    assert r.getsockopt(zmq.MAXMSGSIZE) == transport.max_message_bytes(LIMITS) > max_message_bytes(LIMITS)
    assert (r.getsockopt(zmq.SNDHWM), r.getsockopt(zmq.RCVHWM), r.getsockopt(zmq.LINGER)) == (7, 9, 11)
    assert r.getsockopt(zmq.HEARTBEAT_IVL) == 123 and r.getsockopt(zmq.HEARTBEAT_TIMEOUT) == 456
    assert r.getsockopt(zmq.CURVE_SERVER) == 1 and r.getsockopt(zmq.ZAP_ENFORCE_DOMAIN) == 1
    r.close(0)
    cpub, csec = zmq.curve_keypair()
    d = make_dealer(ctx, endpoint="tcp://127.0.0.1:9", client_public=cpub, client_secret=csec, server_public=spub,
                    limits=LIMITS, tuning=SocketTuning(reconnect_ivl_ms=50, reconnect_ivl_max_ms=800))
    assert d.getsockopt(zmq.RECONNECT_IVL) == 50 and d.getsockopt(zmq.RECONNECT_IVL_MAX) == 800
    assert d.getsockopt(zmq.IMMEDIATE) == 1 and d.getsockopt(zmq.MAXMSGSIZE) == transport.max_message_bytes(LIMITS)
    d.close(0)


def test_missing_keys_and_remote_plaintext_are_refused(ctx):
    with pytest.raises(CryptoError):
        make_router(ctx, bind="tcp://127.0.0.1:0", server_secret=None, server_public=None, limits=LIMITS)
    with pytest.raises(CryptoError):
        make_router(ctx, bind="tcp://127.0.0.1:0", server_secret=b"x" * 40, server_public=b"short", limits=LIMITS)
    with pytest.raises(ConfigError, match="test-only"):
        make_router(ctx, bind="tcp://0.0.0.0:0", server_secret=None, server_public=None, limits=LIMITS,
                    insecure_loopback_for_tests=True)
    with pytest.raises(ConfigError, match="test-only"):
        make_dealer(ctx, endpoint="tcp://10.0.0.1:5555", client_public=None, client_secret=None,
                    server_public=None, limits=LIMITS, insecure_loopback_for_tests=True)


def test_user_id_is_the_manifest_site_and_strangers_are_refused(ctx):
    spub, ssec = zmq.curve_keypair()
    cpub, csec = zmq.curve_keypair()
    policy = AllowListPolicy({"site-7": cpub})
    with ZapAuthenticator(ctx, policy):
        r = make_router(ctx, bind="tcp://127.0.0.1:0", server_secret=ssec, server_public=spub, limits=LIMITS)
        endpoint = r.getsockopt(zmq.LAST_ENDPOINT).decode()
        self_check_rejects_unknown(ctx, endpoint=endpoint, server_public=spub, policy=policy, limits=LIMITS)
        d = make_dealer(ctx, endpoint=endpoint, client_public=cpub, client_secret=csec, server_public=spub,
                        limits=LIMITS)
        d.send_multipart([b"hello"])
        assert r.poll(5000)
        frames = r.recv_multipart(copy=False)
        assert [peer_user_id(f) for f in frames] == ["site-7", "site-7"]
        assert policy.allowed == 1 and policy.denied == 1
        d.close(0)
        r.close(0)


def test_self_check_fails_loudly_without_an_authenticator(ctx):
    spub, ssec = zmq.curve_keypair()
    policy = AllowListPolicy({"site-1": zmq.curve_keypair()[0]})
    r = make_router(ctx, bind="tcp://127.0.0.1:0", server_secret=ssec, server_public=spub, limits=LIMITS)
    endpoint = r.getsockopt(zmq.LAST_ENDPOINT).decode()
    with pytest.raises(CryptoError, match="not refused"):
        self_check_rejects_unknown(ctx, endpoint=endpoint, server_public=spub, policy=policy, limits=LIMITS,
                                   timeout_s=1.5)
    r.close(0)

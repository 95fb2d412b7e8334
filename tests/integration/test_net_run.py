"""A real federation on 127.0.0.1: coordinator + 3 site processes over CURVE, from `secgan provision`.

While the coordinator waits for its sites, a client with an unknown CURVE key and a plaintext
client try to get in; both must be refused at the handshake, and the run must then complete as if
they had never come.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from secgan.net import codec
from secgan.net.limits import WireLimits
from secgan.net.schema import PROTOCOL_VERSION, Hello
from secgan.net.transport import make_dealer

from tests.integration.net_helpers import coordinator_proc, free_port, make_kit, site_proc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED)


def _intruder(endpoint: str, server_public: bytes, *, plaintext: bool) -> int:
    """Connect, say Hello, return the monitor event that ended the handshake; assert no reply."""
    ctx = zmq.Context()
    pub, sec = zmq.curve_keypair()
    sock = make_dealer(ctx, endpoint=endpoint, client_public=None if plaintext else pub,
                       client_secret=None if plaintext else sec, server_public=None if plaintext else server_public,
                       limits=WireLimits(), insecure_loopback_for_tests=plaintext)
    mon = sock.get_monitor_socket(FAILED)
    try:
        hello = codec.encode(Hello(versions=(PROTOCOL_VERSION,), policy={"mode": "off", "accept_sources": ["procedural"]}),
                            run_id="", round=0, step=0, site="site-1", seq=1)
        try:
            sock.send_multipart(hello, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # never connected: exactly what we want
        assert mon.poll(10_000), "no handshake event within 10 s"
        event = recv_monitor_message(mon)["event"]
        assert not sock.poll(1000), "the coordinator answered an unauthenticated client"
        return event
    finally:
        sock.disable_monitor()
        mon.close(0)
        sock.close(0)
        ctx.term()


def test_three_site_run_completes_and_strangers_are_refused(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=3, port=port,
                   coordinator={"min_sites": 3})
    coord = coordinator_proc(kit, tmp_path / "logs" / "coordinator.log", "--log-json")
    # the sites start loading while the intruders knock; the coordinator waits for all three
    sites = [site_proc(kit, f"site-{k}", tmp_path / "logs" / f"site-{k}.log", "--log-json") for k in (1, 2, 3)]
    try:
        coord.wait_event("auth_self_check_passed", timeout=90)
        coord.wait_event("coordinator_listening", timeout=30)
        from secgan.keys.curve import load_curve_public

        spub = load_curve_public(tmp_path / "kit" / "coordinator" / "keys" / "coordinator.key")
        endpoint = f"tcp://127.0.0.1:{port}"
        assert _intruder(endpoint, spub, plaintext=False) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert _intruder(endpoint, spub, plaintext=True) != zmq.EVENT_HANDSHAKE_SUCCEEDED
        coord.wait_event("handshake_rejected", timeout=10, count=2, reason="auth")  # self-check + intruder
        coord.wait_event("handshake_rejected", timeout=10,
                         where=lambda e: e.get("reason") in ("protocol", "no_detail"))  # the plaintext client

        assert coord.wait(timeout=120) == 0, coord.tail()
        for s in sites:
            assert s.wait(timeout=30) == 0, s.tail()
            assert s.events("stop_received"), s.tail()
    finally:
        for p in [coord, *sites]:
            p.close()

    state = tmp_path / "kit" / "coordinator" / "state"
    run = json.loads((state / "run.json").read_text())
    assert run["status"] == "completed" and run["stop_reason"] == "completed"
    assert run["steps_done"] == 4 and run["rounds"] == 4 and run["incarnation"] == 1
    assert run["step_time_s"]["n"] == 4 and run["wall_time_s"] > 0
    # the intruder (perhaps more than once: it may reconnect); the self-check probe is not counted
    assert run["auth"]["denied"] >= 1 and run["handshake_failures"].get("auth", 0) >= 1
    assert run["drops_by_code"] == {} and run["protocol_errors"] == {}
    for k in (1, 2, 3):
        s = run["sites"][f"site-{k}"]
        assert s["steps_served"] == 4 and s["mode"] == "off" and s["hellos"] >= 1
        assert s["stop_reason"] == "completed" and s["budget_left"] is None and "epsilon" not in s
        assert s["mean_bytes_in_per_step"] > 2 * 4 * 32 * 32 * 4  # at least the float32 gradient
        assert s["mean_bytes_out_per_step"] > s["mean_bytes_in_per_step"]  # cond + fake out, grad in
    # nothing about patients in the logs or run.json
    assert "case" not in json.dumps(run).lower()

    from secgan.gan.synthetic import sample_generator

    images, conds = sample_generator(state / "checkpoint.safetensors", n=3, seed=0)
    assert images.shape == (3, 4, 32, 32) and conds.shape == (3, 4, 32, 32)
    assert np.isfinite(images).all() and images.min() >= -1.0 and images.max() <= 1.0

"""Hostile but authenticated peers against LIVE processes (real CURVE keys from the kit):

1. the test plays site-1 against a live coordinator training with a real site-2: every field of
   every message type gets arbitrary JSON values (huge integers, -0.0, nested containers, long
   strings, hypothesis-drawn values); replies for far-future rounds and seq = 2**53 - 1 are
   refused without locking site-1 out; 5,000 bad frames write a bounded log while their counts
   reach run.json; the coordinator keeps serving throughout and site-2 keeps training.
2. the test plays the coordinator against a live site: the same, in the other direction.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secgan.core.exitcodes import INTERRUPTED
from secgan.net import codec, fields
from secgan.keys.curve import load_curve_keypair, load_curve_public
from secgan.net.schema import PROTOCOL_VERSION, ErrorReply, FakeBatch, GradientReply, Heartbeat, Hello, Stop, Welcome
from secgan.net.transport import make_dealer

from tests.integration.net_helpers import coordinator_proc, free_port, make_kit, site_proc, stand_in_coordinator
from tests.integration.test_net_badframes import LIMITS, POLICY, Peer
from tests.property.test_wire_fields import FIELDS, NASTY, json_any, substitute

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLOOD = 5000
# every nasty value but the 100 kB string (a header_too_large like the 5 kB one, only slower)
LIVE_NASTY = [v for v in NASTY if not (isinstance(v, str) and len(v) > 10_000)] + ["y" * 5000]


def fuzzed(field: tuple[str, str, str], value, *, run: str, round: int, seq: int, site: str) -> list[bytes]:
    """A valid message of the field's type with that one field replaced by ``value``."""
    mtype, where, key = field
    return substitute(mtype, where, key, value, run=run, round=round, step=0, seq=seq, site=site)


def drain(sock: zmq.Socket, *, routed: bool) -> list:
    out = []
    while sock.poll(0):
        frames = sock.recv_multipart()
        out.append(codec.decode(frames[1:] if routed else frames)[1])
    return out


def fuzz_every_field(me: Peer, *, run: str, round: int, site: str, routed: bool, alive) -> int:
    """Every field x every nasty value, then hypothesis-drawn values over all fields. Returns the
    number of frames sent. ``alive()`` is asserted after each field."""
    sent = 0
    for field in FIELDS:
        for value in LIVE_NASTY:
            me.send_raw(fuzzed(field, value, run=run, round=round, seq=me.next_seq(), site=site))
            sent += 1
        drain(me.sock, routed=routed)
        assert alive(), field

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(FIELDS), json_any)
    def drawn(field, value):
        me.send_raw(fuzzed(field, value, run=run, round=round, seq=me.next_seq(), site=site))
        drain(me.sock, routed=routed)

    drawn()
    return sent + 300


def flood(me: Peer, *, routed: bool) -> None:
    for i in range(FLOOD):
        me.send_raw([b"\x00 not json"])
        if i % 100 == 99:
            deadline = time.monotonic() + 10
            while me.sock.poll(20) and time.monotonic() < deadline:  # read the answers as they come
                drain(me.sock, routed=routed)


def wait_json(path, pred, *, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = json.loads(path.read_text())
            if pred(data):
                return data
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{path} never satisfied the condition: {path.read_text() if path.exists() else 'missing'}")


def test_live_coordinator_against_a_hostile_site(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=2, port=port,
                   coordinator={"min_sites": 1, "round_deadline_s": 10.0, "train": {"steps": 100000},
                                "heartbeat_timeout_s": 60.0})
    logs = tmp_path / "logs"
    coord = coordinator_proc(kit, logs / "coordinator.log")
    site2 = site_proc(kit, "site-2", logs / "site-2.log")
    run_json = tmp_path / "kit" / "coordinator" / "state" / "run.json"
    ctx = zmq.Context()
    try:
        run_id = coord.wait_for(r"coordinator_listening .*run_id=(\S+)", timeout=90).group(1)
        coord.wait_for(r"step_done step=1 ", timeout=90)
        pub, sec = load_curve_keypair(tmp_path / "kit" / "site-1" / "keys", "site-1")
        spub = load_curve_public(tmp_path / "kit" / "site-1" / "coordinator.key")
        sock = make_dealer(ctx, endpoint=f"tcp://127.0.0.1:{port}", client_public=pub, client_secret=sec,
                           server_public=spub, limits=LIMITS)
        me = Peer(sock, site="site-1")
        me.send(Hello(versions=(PROTOCOL_VERSION,), policy=POLICY), run="")
        me.expect(Welcome, timeout=30)

        # item 11: far-future round, far-future step and seq = 2**53 - 1 are refused, not remembered
        _, batch = me.expect(FakeBatch, timeout=30)
        far = GradientReply(run_id=run_id, round=batch.round + 10**6, step=batch.step, grad=torch.zeros_like(batch.fake))
        me.send(far, run=run_id)
        assert me.expect(ErrorReply)[1].code == "future_round"
        me.send(Heartbeat(), run=run_id, round=batch.round, step=batch.step + 10**6)
        assert me.expect(ErrorReply)[1].code == "future_round"
        me.send(Heartbeat(), run=run_id, round=batch.round, seq=fields.MAX_INT)
        assert me.expect(ErrorReply)[1].code == "seq_ahead"
        me.send(Hello(versions=(PROTOCOL_VERSION,), policy=POLICY), run="", seq=fields.MAX_INT)
        assert me.expect(ErrorReply)[1].code == "seq_ahead"
        me.send(GradientReply(run_id=run_id, round=batch.round, step=batch.step, grad=torch.zeros_like(batch.fake)),
                run=run_id)
        _, nxt = me.expect(FakeBatch, timeout=30)  # the normal reply was accepted: the next step came
        assert nxt.step == batch.step + 1

        # item 7: every field of every type, arbitrary JSON; the process keeps serving
        sent = fuzz_every_field(me, run=run_id, round=nxt.round, site="site-1", routed=False,
                                alive=lambda: coord.p.poll() is None)
        assert sent > 1000

        # item 12: a flood of bad frames writes a bounded log; the counts reach run.json
        before = wait_json(run_json, lambda d: True, timeout=10)["protocol_errors"].get("bad_json", 0)
        size_before, lines_before = len(coord.text()), coord.count(r"inbound_rejected")
        flood(me, routed=False)
        run = wait_json(run_json, lambda d: d["protocol_errors"].get("bad_json", 0) >= before + FLOOD, timeout=60)
        added = coord.text()[size_before:]
        assert coord.count(r"inbound_rejected") - lines_before <= 11, added[-2000:]
        assert len(added.encode()) < 20_000, f"{len(added.encode())} bytes of log for {FLOOD} bad frames"
        assert run["log_lines_suppressed"] >= FLOOD - 11

        # still serving: a fresh session, a batch, a correct reply accepted, site-2 still training
        me.send(Hello(versions=(PROTOCOL_VERSION,), policy=POLICY), run="")
        me.expect(Welcome, timeout=30)
        _, b = me.expect(FakeBatch, timeout=30)
        me.send(GradientReply(run_id=run_id, round=b.round, step=b.step, grad=torch.zeros_like(b.fake)), run=run_id)
        _, b2 = me.expect(FakeBatch, timeout=30)
        assert b2.step == b.step + 1
        served = site2.count(r"batch_served")
        coord.wait_for(r"step_done", timeout=60, count=coord.count(r"step_done") + 2)
        assert site2.count(r"batch_served") > served
        sock.close(0)
        coord.terminate()
        assert coord.wait(timeout=60) == INTERRUPTED  # SIGTERM: state saved, continue with --resume
        site2.terminate()
        assert site2.wait(timeout=30) == 0
    finally:
        ctx.destroy(linger=0)
        coord.close()
        site2.close()

    run = json.loads(run_json.read_text())
    assert run["internal_errors"] == {}, run["internal_errors"]  # every bad value was a ProtocolError
    pe = run["protocol_errors"]
    assert pe["bad_json"] >= FLOOD and pe["future_round"] >= 2 and pe["seq_ahead"] >= 2
    for code in ("out_of_range", "bad_type", "bad_fields", "bad_tensor_table", "unknown_type", "bad_dtype"):
        assert pe.get(code, 0) >= 1, code
    assert "malformed" not in pe
    assert run["sites"]["site-2"]["drops"] == {} and run["sites"]["site-2"]["steps_served"] > 3
    assert "Traceback" not in coord.text()


def test_live_site_against_a_hostile_coordinator(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=1, port=port)
    with stand_in_coordinator(tmp_path / "kit", port, LIMITS) as router:
        site = site_proc(kit, "site-1", tmp_path / "logs" / "site-1.log")
        status = tmp_path / "kit" / "site-1" / "state" / "site.json"
        run_id = "fake-run"
        shape = (2, 4, 32, 32)
        try:
            assert router.poll(90_000), site.tail()
            frames = router.recv_multipart()
            me = Peer(router, site="site-1", routing_id=frames[0])
            assert isinstance(codec.decode(frames[1:])[1], Hello)
            me.send(Welcome(version=PROTOCOL_VERSION, run_id=run_id, image_size=32, model={}, condition_source="procedural", planned_steps=200),
                    run=run_id, round=1)
            site.wait_for(r"welcomed site=site-1", timeout=10)

            # item 11: a far-future batch and seq = 2**53 - 1 are refused; the next real batch is served
            me.send(FakeBatch(run_id=run_id, round=2 + 10**6, step=0, cond=torch.zeros(shape), fake=torch.zeros(shape)),
                    run=run_id)
            assert me.expect(ErrorReply)[1].code == "future_round"
            me.send(Heartbeat(), run=run_id, round=1, seq=fields.MAX_INT)
            assert me.expect(ErrorReply)[1].code == "seq_ahead"
            me.send(FakeBatch(run_id=run_id, round=2, step=0, cond=torch.zeros(shape), fake=torch.rand(shape) * 2 - 1),
                    run=run_id)
            assert me.expect(GradientReply, timeout=30)[1].round == 2

            # item 7: every field of every coordinator-bound... every type, in a run the site is not in
            # (so no fuzzed message that happens to be valid can end the site: a valid Stop of
            # another run is refused as wrong_run)
            sent = fuzz_every_field(me, run="other-run", round=2, site="site-1", routed=True,
                                    alive=lambda: site.p.poll() is None)
            assert sent > 1000

            # item 12: flood, bounded log, counts in site.json
            size_before, lines_before = len(site.text()), site.count(r"inbound_rejected")
            flood(me, routed=True)
            counts = wait_json(status, lambda d: d["counts"].get("rejected_bad_json", 0) >= FLOOD, timeout=60)["counts"]
            added = site.text()[size_before:]
            assert site.count(r"inbound_rejected") - lines_before <= 11, added[-2000:]
            assert len(added.encode()) < 20_000
            assert counts.get("internal_error", 0) == 0 and not any(k.startswith("rejected_malformed") for k in counts)

            # still serving (a fuzzed error code may have started a new session: welcome it again)
            drain(router, routed=True)
            me.send(Welcome(version=PROTOCOL_VERSION, run_id=run_id, image_size=32, model={}, condition_source="procedural", planned_steps=200),
                    run=run_id, round=3)
            me.send(FakeBatch(run_id=run_id, round=4, step=1, cond=torch.zeros(shape), fake=torch.rand(shape) * 2 - 1),
                    run=run_id)
            assert me.expect(GradientReply, timeout=30)[1].round == 4
            me.send(Stop(run_id=run_id, reason="done"), run=run_id, round=4)
            assert site.wait(timeout=30) == 0
        finally:
            site.close()
    assert "site_exiting reason=stop:done" in site.text()
    assert "Traceback" not in site.text()

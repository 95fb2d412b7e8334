"""Malformed and out-of-place messages against live processes, sent with VALID CURVE keys.

1. The test plays site-1 (its real key from the kit) against a live coordinator that is training
   with a real site-2: hand-made bad frames, hypothesis-generated garbage and protocol-stage
   violations each get an ErrorReply with the expected code and a logged reason, site-2's run goes
   on, and the next good message (Hello, then a correct gradient) still works.
2. The test plays the coordinator (its real keys, bound where the site connects) against a live
   site: same idea in the other direction, ending with a Stop the site obeys.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secgan.net import codec, replay, transport
from secgan.net.errors import PROTOCOL_ERRORS
from secgan.net.limits import WireLimits
from secgan.keys.curve import load_curve_keypair, load_curve_public
from secgan.net.schema import PROTOCOL_VERSION, ErrorReply, FakeBatch, GradientReply, Heartbeat, Hello, Refusal, Stop, Welcome
from secgan.net.transport import make_dealer

from tests.integration.net_helpers import coordinator_proc, free_port, make_kit, site_proc, stand_in_coordinator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POLICY = {"mode": "off", "target_epsilon": None, "delta": None, "accept_sources": ["procedural"]}
LIMITS = WireLimits()


def _mutate(frames: list[bytes], **changes) -> list[bytes]:
    """Re-encode the header frame with some fields changed (``tensors`` entries via ``t0_*``)."""
    header = json.loads(frames[0])
    for k, v in changes.items():
        if k.startswith("t0_"):
            header["tensors"][0][k[3:]] = v
        else:
            header[k] = v
    return [json.dumps(header).encode(), *frames[1:]]


def bad_frames(*, run: str, site: str, seq: int, msg) -> list[tuple[str, list[bytes], str]]:
    """(name, frames, expected ProtocolError code) for one valid message ``msg`` with a tensor."""
    rnd, step = getattr(msg, "round", 0), getattr(msg, "step", 0)
    good = codec.encode(msg, run_id=run, round=rnd, step=step, site=site, seq=seq)
    t = good[1]
    header = json.loads(good[0])
    return [
        ("garbage", [b"\x00\xffnot json at all"], "bad_json"),
        ("truncated", [good[0], t[: len(t) // 2], *good[2:]], "size_mismatch"),
        ("missing_frame", good[:-1], "frame_count"),
        ("too_many_frames", [good[0]] + [b"x"] * 9, "frame_count"),
        ("oversized_header", [json.dumps({**header, "pad": "x" * (LIMITS.max_header_bytes + 10)}).encode(),
                              *good[1:]], "header_too_large"),
        ("wrong_dtype", _mutate(good, t0_dtype="float64"), "bad_dtype"),
        ("unknown_dtype", _mutate(good, t0_dtype="object"), "bad_dtype"),
        ("shape_lie", _mutate(good, t0_shape=[header["tensors"][0]["shape"][0] + 1, 4, 32, 32]), "size_mismatch"),
        ("wrong_version", _mutate(good, v=99), "unsupported_version"),
        ("unknown_type", _mutate(good, type="exfiltrate"), "unknown_type"),
        ("nan_tensor", [good[0], torch.full((len(t) // 4,), float("nan")).numpy().tobytes(), *good[2:]], "non_finite"),
        ("bool_as_int", _mutate(good, seq=True), "bad_type"),
    ]


class Peer:
    """One socket and its own sequence numbers; ``expect`` skips messages of other types."""

    def __init__(self, sock: zmq.Socket, *, site: str, routing_id: bytes | None = None) -> None:
        self.sock, self.site, self.routing_id = sock, site, routing_id
        self.seq = replay.initial_seq()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send_raw(self, frames: list[bytes]) -> None:
        prefix = [self.routing_id] if self.routing_id is not None else []
        self.sock.send_multipart([*prefix, *frames])

    def send(self, msg, *, run: str, round: int = 0, step: int = 0, seq: int | None = None) -> int:
        seq = self.next_seq() if seq is None else seq
        self.send_raw(codec.encode(msg, run_id=getattr(msg, "run_id", run), round=getattr(msg, "round", round),
                                  step=getattr(msg, "step", step), site=self.site, seq=seq))
        return seq

    def expect(self, cls, *, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sock.poll(100):
                continue
            frames = self.sock.recv_multipart()
            if self.routing_id is not None:
                frames = frames[1:]
            env, msg = codec.decode(frames)
            if isinstance(msg, cls):
                return env, msg
        raise AssertionError(f"no {cls.__name__} within {timeout}s")


def test_coordinator_survives_bad_frames_from_an_authenticated_site(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=2, port=port,
                   coordinator={"min_sites": 1, "round_deadline_s": 5.0, "train": {"steps": 100000},
                                "heartbeat_timeout_s": 30.0})
    logs = tmp_path / "logs"
    coord = coordinator_proc(kit, logs / "coordinator.log")
    site2 = site_proc(kit, "site-2", logs / "site-2.log")
    ctx = zmq.Context()
    try:
        run_id = coord.wait_for(r"coordinator_listening .*run_id=(\S+)", timeout=90).group(1)
        coord.wait_for(r"step_done step=1 ", timeout=90)  # site-2 is training
        pub, sec = load_curve_keypair(tmp_path / "kit" / "site-1" / "keys", "site-1")
        spub = load_curve_public(tmp_path / "kit" / "site-1" / "coordinator.key")
        sock = make_dealer(ctx, endpoint=f"tcp://127.0.0.1:{port}", client_public=pub, client_secret=sec,
                           server_public=spub, limits=LIMITS)
        me = Peer(sock, site="site-1")

        # protocol stage: a reply before Welcome, a heartbeat without a session
        # (envelope rounds stay at 0 until Welcome: the replay guard drops anything older than seen)
        grad = GradientReply(run_id=run_id, round=0, step=0, grad=torch.zeros(2, 4, 32, 32))
        me.send(grad, run=run_id)
        assert me.expect(ErrorReply)[1].code == "unexpected_message"
        me.send(Heartbeat(), run=run_id)
        assert me.expect(ErrorReply)[1].code == "not_welcomed"
        # identity: the header claims site-2, the key is site-1's
        me.send_raw(codec.encode(Heartbeat(), run_id=run_id, round=0, step=0, site="site-2", seq=me.next_seq()))
        assert me.expect(ErrorReply)[1].code == "identity_mismatch"
        # replay: the same sequence number twice. Only an accepted message is remembered (a refused
        # one leaves the seq usable), so the first is one always allowed: an ErrorReply, answered by nothing
        seq = me.next_seq()
        me.send(ErrorReply(code="bad_json"), run=run_id, seq=seq)
        me.send(Heartbeat(), run=run_id, seq=seq)
        assert me.expect(ErrorReply)[1].code == "replay"
        # hand-made bad frames
        for name, frames, code in bad_frames(run=run_id, site="site-1", seq=me.next_seq(), msg=grad):
            me.send_raw(frames)
            got = me.expect(ErrorReply)[1].code
            assert got == code, f"{name}: expected {code}, got {got}"
            coord.wait_for(rf"inbound_rejected site=site-1 code={code}", timeout=10)

        # hypothesis: arbitrary frames never crash it and are always answered
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
        def garbage(frames):
            me.send_raw(frames)
            assert me.expect(ErrorReply, timeout=10)[1].code in PROTOCOL_ERRORS

        garbage()

        # a frame above ZMQ_MAXMSGSIZE: libzmq drops the connection, the DEALER reconnects by itself
        sock.send_multipart([b"{}", b"\0" * (transport.max_message_bytes(LIMITS) + 1)])
        assert not sock.poll(1500)

        # handshake refusals: a version it does not speak, a policy refusing this run's condition source
        me.send(Hello(versions=(99,), policy=POLICY), run="")
        assert me.expect(ErrorReply)[1].code == "unsupported_version"
        me.send(Hello(versions=(PROTOCOL_VERSION,), policy={**POLICY, "accept_sources": ["bank"]}), run="")
        err = me.expect(ErrorReply)[1]
        assert err.code == "source_refused" and "procedural" in err.detail
        coord.wait_for(r"site_excluded site=site-1 reason=source_refused", timeout=10)

        # the next good messages work: Hello -> Welcome, then a correct gradient for our batch
        me.send(Hello(versions=(PROTOCOL_VERSION,), policy=POLICY), run="")
        welcome = me.expect(Welcome, timeout=30)[1]
        assert welcome.run_id == run_id and welcome.image_size == 32
        _, batch = me.expect(FakeBatch, timeout=30)
        bad = GradientReply(run_id=run_id, round=batch.round, step=batch.step, grad=torch.zeros(1, 4, 32, 32))
        me.send(bad, run=run_id)
        assert me.expect(ErrorReply)[1].code == "bad_shape"
        other = GradientReply(run_id=run_id, round=batch.round, step=batch.step + 7, grad=torch.zeros_like(batch.fake))
        me.send(other, run=run_id)
        assert me.expect(ErrorReply)[1].code == "future_round"  # a step the coordinator never sent
        me.send(GradientReply(run_id=run_id, round=batch.round, step=batch.step, grad=torch.zeros_like(batch.fake)),
                run=run_id)
        _, nxt = me.expect(FakeBatch, timeout=30)
        assert nxt.round > batch.round and nxt.step == batch.step + 1
        # a final refusal (budget spent) removes site-1 for the rest of the run; site-2 carries on
        me.send(Refusal(run_id=run_id, round=nxt.round, step=nxt.step, code="budget_exhausted",
                        reason="epsilon after this release would exceed the target", final=True), run=run_id)
        coord.wait_for(r"site_refused site=site-1 code=budget_exhausted final=True", timeout=10)
        me.send(Hello(versions=(PROTOCOL_VERSION,), policy=POLICY), run="")
        assert me.expect(Stop, timeout=10)[1].reason == "budget_exhausted"  # no readmission
        sock.close(0)

        served_before = site2.count(r"batch_served")
        coord.wait_for(r"step_done", timeout=30, count=coord.count(r"step_done") + 2)
        assert site2.count(r"batch_served") > served_before
        coord.terminate()
        assert coord.wait(timeout=60) == 130  # interrupted (secgan.core.exitcodes.INTERRUPTED)
        site2.terminate()  # no Stop was sent (the run is resumable): the site leaves on SIGTERM
        assert site2.wait(timeout=30) == 0
        assert "site_exiting reason=signal:SIGTERM" in site2.text()
    finally:
        ctx.destroy(linger=0)
        coord.close()
        site2.close()

    run = json.loads((tmp_path / "kit" / "coordinator" / "state" / "run.json").read_text())
    assert run["status"] == "interrupted" and run["stop_reason"] == "SIGTERM"
    s1 = run["sites"]["site-1"]
    assert s1["steps_served"] >= 1 and s1["hellos"] >= 3
    assert s1["state"] == "removed" and s1["stop_reason"] == "budget_exhausted"
    assert s1["refusals"] == {"budget_exhausted": 1}
    assert run["sites"]["site-2"]["state"] == "welcomed" and run["sites"]["site-2"]["steps_served"] > 3
    for code in ("bad_json", "size_mismatch", "bad_dtype", "unsupported_version", "replay", "identity_mismatch",
                 "header_too_large", "unexpected_message", "not_welcomed", "bad_shape"):
        assert s1["drops"].get(code, 0) >= 1, code
    assert run["sites"]["site-2"]["drops"] == {}
    # the log names codes, never payload bytes
    assert "not json at all" not in coord.text()


def test_site_survives_bad_frames_from_its_coordinator(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=1, port=port)
    with stand_in_coordinator(tmp_path / "kit", port, LIMITS) as router:
        site = site_proc(kit, "site-1", tmp_path / "logs" / "site-1.log")
        run_id = "fake-run"
        try:
            assert router.poll(90_000), site.tail()
            frames = router.recv_multipart()
            me = Peer(router, site="site-1", routing_id=frames[0])
            assert isinstance(codec.decode(frames[1:])[1], Hello)

            shape = (2, 4, 32, 32)
            batch = FakeBatch(run_id=run_id, round=1, step=0, cond=torch.zeros(shape), fake=torch.zeros(shape))
            me.send(batch, run=run_id)
            assert me.expect(ErrorReply)[1].code == "not_welcomed"
            for name, bad, code in bad_frames(run=run_id, site="site-1", seq=me.next_seq(), msg=batch):
                me.send_raw(bad)
                got = me.expect(ErrorReply)[1].code
                assert got == code, f"{name}: expected {code}, got {got}"
                site.wait_for(rf"inbound_rejected code={code}", timeout=10)
            assert site.p.poll() is None

            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
            def garbage(frames):
                me.send_raw(frames)
                assert me.expect(ErrorReply, timeout=10)[1].code in PROTOCOL_ERRORS

            garbage()
            assert site.p.poll() is None

            # (the envelope's round must not go back: the refused batch above was round 1)
            me.send(Welcome(version=PROTOCOL_VERSION, run_id=run_id, image_size=32, model={}, condition_source="procedural",
                            planned_steps=4),
                    run=run_id, round=1)
            site.wait_for(r"welcomed site=site-1", timeout=10)
            seq = me.next_seq()
            me.send(Heartbeat(), run=run_id, round=1, seq=seq)
            me.send(Heartbeat(), run=run_id, round=1, seq=seq)
            assert me.expect(ErrorReply)[1].code == "replay"
            # a batch of the wrong image size passes the codec but not the learner's checks
            small = FakeBatch(run_id=run_id, round=2, step=0, cond=torch.zeros(2, 4, 16, 16), fake=torch.zeros(2, 4, 16, 16))
            me.send(small, run=run_id)
            assert me.expect(ErrorReply)[1].code == "bad_shape"
            good = FakeBatch(run_id=run_id, round=3, step=0, cond=torch.zeros(shape), fake=torch.rand(shape) * 2 - 1)
            me.send(good, run=run_id)
            env, reply = me.expect(GradientReply, timeout=30)
            assert env.site == "site-1" and (reply.round, reply.step) == (3, 0)
            assert reply.grad.shape == shape and torch.isfinite(reply.grad).all()
            me.send(good, run=run_id)  # the same round again: a replay, refused
            assert me.expect(ErrorReply)[1].code == "replay"
            me.send(Stop(run_id=run_id, reason="done"), run=run_id, round=3)
            assert site.wait(timeout=30) == 0
        finally:
            site.close()
    assert "stop_received" in site.text()
    assert "site_exiting reason=stop:done" in site.text()

"""Coordinator._handle_inbound end to end without sockets: a real Coordinator (tiny real G, real
registry, scheduler, guard and codec) fed frames that carry a ZAP User-Id like libzmq's, and a
router stand-in that decodes what the coordinator sends back."""

from __future__ import annotations

import logging

import pytest
import torch
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secgan.net import codec, fields, replay
from secgan.net.schema import PROTOCOL_VERSION, ErrorReply, FakeBatch, GradientReply, Heartbeat, Hello, Refusal, Stop, Welcome
from secgan.gan.config import ModelConfig, TrainConfig
from secgan.core.spec import ImageSpec

from coordinator.registry import EXCLUDED, REMOVED, WELCOMED
from coordinator.config import CoordinatorConfig
from coordinator.scheduler import START
from coordinator.service import Coordinator, ServiceConfig

SITES = ("site-1", "site-2")
POLICY = {"mode": "off", "accept_sources": ["procedural"]}
REFUSING = {"mode": "off", "accept_sources": ["bank"]}


class Frame(bytes):
    """A received frame: bytes plus the ZAP User-Id libzmq attaches (``zmq.Frame.get``)."""

    def __new__(cls, data: bytes, user_id: str | None = None):
        f = super().__new__(cls, data)
        f.user_id = user_id
        return f

    @property
    def bytes(self) -> bytes:
        return bytes(self)

    def get(self, name):
        if name != "User-Id" or self.user_id is None:
            raise zmq.ZMQError()
        return self.user_id


class Router:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def send_multipart(self, frames, flags=0, copy=True):
        self.sent.append((bytes(frames[0]), codec.decode(frames[1:])[1]))

    def last(self, rid: bytes, cls=object):
        for r, msg in reversed(self.sent):
            if r == rid and isinstance(msg, cls):
                return msg
        return None


class Site:
    """One authenticated peer: its own seq, its routing id."""

    def __init__(self, coord: Coordinator, site: str) -> None:
        self.coord, self.site, self.rid = coord, site, site.encode()
        self.seq = replay.initial_seq()
        self.now = 0.0

    def raw(self, frames: list[bytes]) -> None:
        self.now += 0.01
        self.coord._handle_inbound([Frame(self.rid), *(Frame(f, self.site) for f in frames)], self.now)

    def send(self, msg, *, round: int = 0, step: int = 0, seq: int | None = None) -> None:
        if seq is None:
            self.seq += 1
        self.raw(codec.encode(msg, run_id=getattr(msg, "run_id", "r" if not isinstance(msg, Hello) else ""),
                             round=getattr(msg, "round", round), step=getattr(msg, "step", step), site=self.site,
                             seq=self.seq if seq is None else seq))

    def hello(self, policy=POLICY, **kw) -> None:
        self.send(Hello(versions=(PROTOCOL_VERSION,), policy=policy), **kw)

    def reply(self, batch: FakeBatch, **kw) -> None:
        self.send(GradientReply(run_id="r", round=batch.round, step=batch.step, grad=torch.zeros_like(batch.fake)),
                  **kw)


def make_coordinator(state_dir) -> Coordinator:
    keys = {s: zmq.curve_keypair()[0] for s in SITES}
    spub, ssec = zmq.curve_keypair()
    conf = CoordinatorConfig(port=1, state_dir=str(state_dir), run_id="r", image=ImageSpec(size=16),
                             model=ModelConfig(g_width=8, g_depth=2, d_width=8, d_layers=2, noise_dim=4),
                             train=TrainConfig(steps=1000, batch_size=2, checkpoint_every=1000),
                             round_deadline_s=60.0, startup_grace_s=0.0, self_check=False)
    cfg = ServiceConfig(settings=conf, server_public=spub, server_secret=ssec, site_keys=keys)
    c = Coordinator(cfg)
    c.router = Router()
    return c


@pytest.fixture
def coord(tmp_path):
    return make_coordinator(tmp_path)


def start_round(c: Coordinator, now: float = 1.0):
    assert c.scheduler.current is None and c.scheduler.readiness(now)[0] == START
    return c.scheduler.start_round(now, lambda s, m: c._send(s, m))


def close_round(c: Coordinator):
    assert c.scheduler.round_done(1e9)
    return c.scheduler.close_round()


# --- item 11: protocol state -----------------------------------------------------------------


def test_far_future_reply_does_not_lock_the_site_out(coord):
    s1 = Site(coord, "site-1")
    s1.hello()
    assert isinstance(coord.router.last(s1.rid), Welcome)
    start_round(coord)
    batch = coord.router.last(s1.rid, FakeBatch)
    far = GradientReply(run_id="r", round=batch.round + 10**6, step=batch.step, grad=torch.zeros_like(batch.fake))
    s1.send(far)
    assert coord.router.last(s1.rid, ErrorReply).code == "future_round"
    s1.send(Heartbeat(), round=batch.round + 10**9)  # a valid heartbeat, but a round never sent
    assert coord.router.last(s1.rid, ErrorReply).code == "future_round"
    s1.send(Heartbeat(), round=batch.round, step=batch.step + 10**6)
    assert coord.router.last(s1.rid, ErrorReply).code == "future_round"
    s1.reply(batch)  # the real answer still counts
    assert coord.scheduler.current.replies and close_round(coord).stepped
    assert coord.registry["site-1"].drops == {"future_round": 3}


@pytest.mark.parametrize("kind", ["heartbeat", "reply", "hello", "error"])
def test_max_seq_does_not_lock_the_site_out(coord, kind):
    s1 = Site(coord, "site-1")
    s1.hello()
    start_round(coord)
    batch = coord.router.last(s1.rid, FakeBatch)
    n = len(coord.router.sent)
    top = fields.MAX_INT
    if kind == "heartbeat":
        s1.send(Heartbeat(), round=batch.round, seq=top)
    elif kind == "reply":
        s1.reply(batch, seq=top)
    elif kind == "hello":
        s1.hello(seq=top)
    else:
        s1.send(ErrorReply(code="bad_json"), round=batch.round, seq=top)
    if kind == "error":  # an error report is never answered with another error (test_net_no_error_echo)
        assert len(coord.router.sent) == n and coord.registry["site-1"].drops["seq_ahead"] == 1
    else:
        assert coord.router.last(s1.rid, ErrorReply).code == "seq_ahead" and len(coord.router.sent) == n + 1
    s1.reply(batch)  # the next normal message, with the next normal seq
    assert "site-1" in coord.scheduler.current.replies
    assert close_round(coord).stepped


def test_a_jump_within_the_window_is_accepted_beyond_it_refused(coord):
    s1 = Site(coord, "site-1")
    s1.hello()
    s1.send(Heartbeat(), seq=s1.seq + replay.MAX_SEQ_AHEAD + 1)
    assert coord.router.last(s1.rid, ErrorReply).code == "seq_ahead"
    s1.seq += replay.MAX_SEQ_AHEAD - 1  # dropped sends: a gap, not a forgery (next seq = last + window)
    n = len(coord.router.sent)
    s1.send(Heartbeat())
    # accepted: answered with the coordinator's own heartbeat (the site's dead-link check), no error
    assert [type(m) for _, m in coord.router.sent[n:]] == [Heartbeat]


def test_refused_messages_never_move_the_guard(coord):
    """Messages refused after the codec (stage, identity, scheduler checks) leave the replay state
    as it was: the same seq is still usable by the genuine next message."""
    s1 = Site(coord, "site-1")
    s1.hello()
    start_round(coord)
    batch = coord.router.last(s1.rid, FakeBatch)
    seq = s1.seq + 1
    bad_shape = GradientReply(run_id="r", round=batch.round, step=batch.step, grad=torch.zeros(1, 4, 16, 16))
    s1.send(bad_shape, seq=seq)
    assert coord.router.last(s1.rid, ErrorReply).code == "bad_shape"
    s1.send(GradientReply(run_id="r", round=batch.round, step=batch.step + 1, grad=torch.zeros_like(batch.fake)),
            seq=seq)
    assert coord.router.last(s1.rid, ErrorReply).code == "future_round"
    s1.send(Welcome(version=PROTOCOL_VERSION, run_id="r", image_size=16, model={}, condition_source="procedural", planned_steps=200),
            round=batch.round, seq=seq)
    assert coord.router.last(s1.rid, ErrorReply).code == "unexpected_message"
    s1.raw(codec.encode(Heartbeat(), run_id="r", round=batch.round, step=0, site="site-2", seq=seq))
    assert coord.router.last(s1.rid, ErrorReply).code == "identity_mismatch"
    s1.reply(batch, seq=seq)  # the same seq: nothing before it was accepted
    assert "site-1" in coord.scheduler.current.replies


OPS = st.lists(st.sampled_from(["hello", "hello_refusing", "hello_bad_version", "hello_bad_policy", "heartbeat",
                                "reply", "refusal", "error", "round"]), max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(before=OPS, after=OPS)
def test_a_removed_site_never_returns(tmp_path_factory, before, after):
    """Any order of Hellos (accepting or refusing the source, malformed), heartbeats, replies,
    refusals and rounds, before and after a final Refusal: once removed, the site stays removed,
    is never scheduled again, and keeps the reason it was removed for."""
    c = make_coordinator(tmp_path_factory.mktemp("c"))
    s1, s2 = Site(c, "site-1"), Site(c, "site-2")
    s2.hello()

    def do(op: str) -> None:
        batch = c.router.last(s1.rid, FakeBatch)
        rnd = batch.round if batch is not None else 0
        if op == "hello":
            s1.hello()
        elif op == "hello_refusing":
            s1.hello(REFUSING)
        elif op == "hello_bad_version":
            s1.send(Hello(versions=(99,), policy=POLICY))
        elif op == "hello_bad_policy":
            s1.hello({"mode": "nonsense"})
        elif op == "heartbeat":
            s1.send(Heartbeat(), round=rnd)
        elif op == "reply" and batch is not None:
            s1.reply(batch)
        elif op == "refusal" and batch is not None:
            s1.send(Refusal(run_id="r", round=batch.round, step=batch.step, code="busy", reason="later"))
        elif op == "error":
            s1.send(ErrorReply(code="bad_json"), round=rnd)
        elif op == "round":
            if c.scheduler.current is not None:
                close_round(c)
            if c.scheduler.readiness(2.0)[0] == START:
                start_round(c, 2.0)

    for op in before:
        do(op)
    # the final refusal: for a batch in flight if there is one, else after joining a round
    if c.registry["site-1"].state != WELCOMED:
        s1.hello()
    if c.scheduler.current is None:
        start_round(c)
    elif "site-1" not in c.scheduler.current.in_flight:
        close_round(c)
        start_round(c)
    batch = c.router.last(s1.rid, FakeBatch)
    s1.send(Refusal(run_id="r", round=batch.round, step=batch.step, code="budget_exhausted", reason="spent",
                    final=True))
    assert c.registry["site-1"].state == REMOVED
    for op in after + ["hello_refusing", "hello", "round", "round"]:
        do(op)
        rec = c.registry["site-1"]
        assert rec.state == REMOVED and rec.stop_reason == "budget_exhausted"
        assert "site-1" not in c.registry.live() and "site-1" not in c.registry.able()
        if c.scheduler.current is not None:
            assert "site-1" not in c.scheduler.current.in_flight
    # a Hello is answered with a Stop, never a Welcome
    n = len(c.router.sent)
    s1.hello()
    assert [type(m) for r, m in c.router.sent[n:] if r == s1.rid] == [Stop]


def test_the_reported_sequence_refusing_hello_then_normal_hello(coord):
    s1 = Site(coord, "site-1")
    s1.hello()
    start_round(coord)
    batch = coord.router.last(s1.rid, FakeBatch)
    s1.send(Refusal(run_id="r", round=batch.round, step=batch.step, code="budget_exhausted", reason="spent",
                    final=True))
    s1.hello(REFUSING)
    assert coord.registry["site-1"].state == REMOVED
    s1.hello()
    assert coord.registry["site-1"].state == REMOVED and coord.registry.live() == []
    assert isinstance(coord.router.last(s1.rid), Stop)


def test_excluded_site_can_come_back_with_an_accepting_policy(coord):
    s1 = Site(coord, "site-1")
    s1.hello(REFUSING)
    assert coord.registry["site-1"].state == EXCLUDED
    assert coord.router.last(s1.rid, ErrorReply).code == "source_refused"
    s1.hello()
    assert coord.registry["site-1"].state == WELCOMED


# --- item 7 (defence in depth) and item 12 -----------------------------------------------------


def test_an_unexpected_exception_is_counted_by_type_and_the_loop_goes_on(coord, monkeypatch, caplog):
    s1 = Site(coord, "site-1")
    s1.hello()
    start_round(coord)
    batch = coord.router.last(s1.rid, FakeBatch)
    real = coord.scheduler.on_gradient

    def boom(site, msg, nbytes):
        raise OverflowError("a defect somewhere below the handler")

    monkeypatch.setattr(coord.scheduler, "on_gradient", boom)
    with caplog.at_level(logging.WARNING):
        s1.reply(batch)
    assert coord.internal_errors == {"OverflowError": 1} and coord.registry["site-1"].drops["internal"] == 1
    assert any(r.getMessage() == "inbound_failed" for r in caplog.records)
    assert "a defect somewhere" not in caplog.text  # type name only, no message or payload
    monkeypatch.setattr(coord.scheduler, "on_gradient", real)
    s1.reply(batch)
    assert close_round(coord).stepped
    snap = coord._write_run_json("running", None)
    assert snap["internal_errors"] == {"OverflowError": 1}


def test_the_decode_crash_of_the_report_is_a_protocol_error_now(coord):
    s1 = Site(coord, "site-1")
    s1.hello()
    start_round(coord)
    batch = coord.router.last(s1.rid, FakeBatch)
    import json

    frames = codec.encode(GradientReply(run_id="r", round=batch.round, step=batch.step,
                                       grad=torch.zeros_like(batch.fake)),
                         run_id="r", round=batch.round, step=batch.step, site="site-1", seq=s1.seq + 1)
    header = json.loads(frames[0])
    header["body"]["budget_left"] = 10**400  # the float field of a reply (protocol 1: epsilon)
    s1.raw([json.dumps(header).encode(), *frames[1:]])
    assert coord.router.last(s1.rid, ErrorReply).code == "out_of_range"
    assert coord.internal_errors == {}
    s1.reply(batch)
    assert "site-1" in coord.scheduler.current.replies


def test_a_flood_of_bad_frames_writes_bounded_lines_and_full_counts(coord, caplog):
    s1, s2 = Site(coord, "site-1"), Site(coord, "site-2")
    with caplog.at_level(logging.WARNING, logger="coordinator.service"):
        for i in range(5000):
            (s1 if i % 2 else s2).raw([b"\x00 not json"])
        for i in range(50):
            s1.send(Heartbeat())  # not_welcomed
    lines = [r for r in caplog.records if r.getMessage() == "inbound_rejected"]
    assert len(lines) <= 3 * coord.log_limiter.burst
    assert coord.runlog.protocol_errors["bad_json"] == 5000 and coord.runlog.protocol_errors["not_welcomed"] == 50
    assert coord.registry["site-1"].drops["bad_json"] == 2500
    assert coord.log_limiter.suppressed_total == 5050 - len(lines)
    snap = coord._write_run_json("running", None)
    assert snap["protocol_errors"]["bad_json"] == 5000 and snap["log_lines_suppressed"] > 0

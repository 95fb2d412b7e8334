"""SiteNode.handle and the coordinator's messages: refused messages never move the site's replay
state, implausible rounds and sequence numbers are refused without locking the real coordinator
out, nothing one message does ends the loop, and a flood writes bounded log lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from secgan.net import codec, fields, replay
from secgan.net.schema import PROTOCOL_VERSION, ErrorReply, FakeBatch, GradientReply, Heartbeat, Hello, SecAggAnnounce, Stop, Welcome

from sites.node import MAX_ROUND_AHEAD
from tests.unit.sites.fakes import FakeLearner, fake_node

SHAPE = (2, 4, 16, 16)


class Learner(FakeLearner):
    def serve(self, msg, *, distributed_noise: bool = False):
        if tuple(msg.fake.shape) != SHAPE:
            from secgan.core.errors import ProtocolError

            raise ProtocolError("bad_shape", "not this site's image size")
        return super().serve(msg, distributed_noise=distributed_noise)


class Coord:
    def __init__(self) -> None:
        self.seq = replay.initial_seq()

    def frames(self, msg, *, round=0, step=0, seq=None):
        if seq is None:
            self.seq += 1
        return codec.encode(msg, run_id=getattr(msg, "run_id", "r1"), round=getattr(msg, "round", round),
                           step=getattr(msg, "step", step), site="site-1", seq=self.seq if seq is None else seq)


def welcomed(tmp_path: Path):
    learner = Learner()
    node = fake_node(tmp_path, learner)
    c = Coord()
    node._hello()
    node.handle(c.frames(Welcome(version=PROTOCOL_VERSION, run_id="r1", image_size=16, model={}, condition_source="procedural", planned_steps=200),
                         round=5))
    assert node.welcomed
    return node, node.sock, learner, c


def batch(rnd, step=None, shape=SHAPE):
    return FakeBatch(run_id="r1", round=rnd, step=rnd if step is None else step, cond=torch.zeros(shape),
                     fake=torch.zeros(shape))


def test_far_future_round_is_refused_and_the_next_batch_is_served(tmp_path):
    node, sock, learner, c = welcomed(tmp_path)
    node.handle(c.frames(batch(6)))
    assert learner.served == [(6, 6)]
    node.handle(c.frames(batch(6 + MAX_ROUND_AHEAD + 1)))
    assert sock.sent[-1].code == "future_round" and learner.served == [(6, 6)]
    node.handle(c.frames(Heartbeat(), round=10**15))  # not served, and no lock-out either
    assert sock.sent[-1].code == "future_round"
    node.handle(c.frames(batch(7)))
    assert learner.served == [(6, 6), (7, 7)] and isinstance(sock.sent[-1], GradientReply)


def test_max_seq_is_refused_and_the_next_batch_is_served(tmp_path):
    node, sock, learner, c = welcomed(tmp_path)
    node.handle(c.frames(Heartbeat(), round=5, seq=fields.MAX_INT))
    assert sock.sent[-1].code == "seq_ahead"
    node.handle(c.frames(batch(6)))
    assert learner.served == [(6, 6)]


def test_refused_batches_do_not_move_the_replay_state(tmp_path):
    """Before: the guard remembered round 50 of a batch the learner refused (wrong image size),
    so the coordinator's next real batch (round 6) was 'stale' and never served."""
    node, sock, learner, c = welcomed(tmp_path)
    seq = c.seq + 1
    node.handle(c.frames(batch(50, shape=(2, 4, 32, 32)), seq=seq))
    assert sock.sent[-1].code == "bad_shape"
    node.handle(c.frames(Stop(run_id="other", reason="x"), round=60, seq=seq))
    assert sock.sent[-1].code == "wrong_run" and node.exit_reason is None
    node.handle(c.frames(batch(6), seq=seq))  # the same seq: neither refused message was remembered
    assert learner.served == [(6, 6)]


def test_seq_of_the_coordinator_is_not_windowed_only_clock_bounded(tmp_path):
    """The coordinator numbers its messages to all sites in one sequence: a big gap is normal."""
    node, sock, learner, c = welcomed(tmp_path)
    c.seq += 10**9  # a billion messages to other sites
    node.handle(c.frames(batch(6)))
    assert learner.served == [(6, 6)]


@pytest.mark.parametrize("code", ["replay", "future_round", "not_welcomed"])
def test_session_errors_start_a_new_session(tmp_path, code):
    node, sock, learner, c = welcomed(tmp_path)
    n = len(sock.sent)
    node.handle(c.frames(ErrorReply(code=code), round=5))
    assert isinstance(sock.sent[n], Hello) and not node.welcomed


def test_an_unexpected_exception_is_counted_and_the_site_keeps_serving(tmp_path, caplog):
    node, sock, learner, c = welcomed(tmp_path)

    def boom(_):
        raise ZeroDivisionError("a defect below the handler")

    node._on_batch = boom
    with caplog.at_level(logging.WARNING):
        node.handle(c.frames(batch(6)))
    assert node.counts["internal_error"] == 1 and node.counts["internal_ZeroDivisionError"] == 1
    assert "a defect below" not in caplog.text and "inbound_failed" in caplog.text
    del node._on_batch
    node.handle(c.frames(batch(7)))
    assert learner.served == [(7, 7)]


def test_the_reported_crash_epsilon_and_clip_are_protocol_errors(tmp_path):
    node, sock, learner, c = welcomed(tmp_path)
    node.aggregation = "secure-sum"
    node.secagg = object()
    ann = SecAggAnnounce(run_id="r1", round=6, step=6, attempt=0, participants=[["site-1", "0" * 64]], frac_bits=16,
                         clip=1.0, modulus_bits=32, shape=list(SHAPE), set_digest="0" * 64)
    frames = c.frames(ann)
    header = json.loads(frames[0])
    header["body"]["clip"] = 10**400
    node.handle([json.dumps(header).encode(), *frames[1:]])
    assert sock.sent[-1].code == "out_of_range" and node.counts.get("internal_error", 0) == 0


def test_a_flood_writes_bounded_lines(tmp_path, caplog):
    node, sock, learner, c = welcomed(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sites.node"):
        for _ in range(5000):
            node.handle([b"\x00 not json"])
    lines = [r for r in caplog.records if r.getMessage() == "inbound_rejected"]
    assert 1 <= len(lines) <= node.log_limiter.burst
    assert node.counts["rejected_bad_json"] == 5000
    node.handle(c.frames(batch(6)))
    assert learner.served == [(6, 6)]

"""The site's session rules without sockets: a fake socket records what the node sends."""

from __future__ import annotations

from pathlib import Path

import torch

from secgan.net import codec, replay
from secgan.net.schema import PROTOCOL_VERSION, ErrorReply, FakeBatch, GradientReply, Hello, Stop, StopAck, Welcome

from sites.node import SiteNode
from tests.unit.sites.fakes import FakeLearner, FakeSocket, fake_node


def _node(tmp_path: Path) -> tuple[SiteNode, FakeSocket, FakeLearner]:
    learner = FakeLearner()
    node = fake_node(tmp_path, learner)
    return node, node.sock, learner


class _Coordinator:
    def __init__(self) -> None:
        self.seq = replay.initial_seq()

    def frames(self, msg, *, run="r1", round=0, step=0, seq=None):
        self.seq += 1
        return codec.encode(msg, run_id=getattr(msg, "run_id", run), round=getattr(msg, "round", round),
                           step=getattr(msg, "step", step), site="site-1", seq=self.seq if seq is None else seq)


def _welcome(run="r1"):
    return Welcome(version=PROTOCOL_VERSION, run_id=run, image_size=16, model={}, condition_source="procedural",
                   planned_steps=200)


def _batch(rnd):
    shape = (2, 4, 16, 16)
    return FakeBatch(run_id="r1", round=rnd, step=rnd, cond=torch.zeros(shape), fake=torch.zeros(shape))


def test_session_rules(tmp_path):
    node, sock, learner = _node(tmp_path)
    c = _Coordinator()
    node._hello()
    assert isinstance(sock.sent[-1], Hello) and not node.welcomed
    node.handle(c.frames(_batch(1)))  # before Welcome
    assert sock.sent[-1] == ErrorReply(code="not_welcomed", detail=sock.sent[-1].detail) and learner.releases == 0
    node.handle(c.frames(_welcome(), round=1))
    assert node.welcomed and node.run_id == "r1"
    node.handle(c.frames(_welcome(), round=1))  # answer to a repeated Hello: ignored
    assert node.welcomed and not isinstance(sock.sent[-1], GradientReply)
    node.handle(c.frames(_batch(2)))
    assert isinstance(sock.sent[-1], GradientReply) and sock.sent[-1].round == 2 and learner.releases == 1
    node.handle(c.frames(_batch(2)))  # the same round again
    assert sock.sent[-1].code == "replay" and learner.releases == 1
    sent, stale = len(sock.sent), node.counts["rejected_stale"]
    node.handle(c.frames(_batch(1)))  # older round: dropped silently (nothing sent, the drop counted)
    assert len(sock.sent) == sent and node.counts["rejected_stale"] == stale + 1 and learner.releases == 1

    # a new coordinator incarnation: its numbering restarts, it says not_welcomed, we say Hello again
    fresh = _Coordinator()
    fresh.seq = 0
    n = len(sock.sent)
    node.handle(fresh.frames(ErrorReply(code="not_welcomed"), round=0))
    assert isinstance(sock.sent[n], Hello) and not node.welcomed
    node.handle(fresh.frames(_welcome(), round=0))
    node.handle(fresh.frames(_batch(2)))  # round 2 again, but in the new session: served
    assert learner.releases == 2
    node.handle(fresh.frames(Stop(run_id="r1", reason="completed"), round=2))
    assert node.exit_reason == "stop:completed" and node.exit_code == 0


def test_a_stop_is_terminal_idempotent_and_acknowledged_each_time(tmp_path):
    node, sock, learner = _node(tmp_path)
    c = _Coordinator()
    node._hello()
    node.handle(c.frames(_welcome()))
    node.handle(c.frames(_batch(1)))
    node.handle(c.frames(Stop(run_id="other", reason="completed")))  # another run's Stop: refused
    assert sock.sent[-1].code == "wrong_run" and node.exit_reason is None
    node.handle(c.frames(Stop(run_id="r1", reason="completed"), round=1))
    assert node.exit_reason == "stop:completed" and node.exit_code == 0 and sock.sent[-1] == StopAck(run_id="r1")
    node.handle(c.frames(Stop(run_id="r1", reason="quorum_lost"), round=1))  # repeated by a lingering coordinator
    assert node.exit_reason == "stop:completed" and sock.sent[-1] == StopAck(run_id="r1")
    assert learner.releases == 1  # nothing charged by the end of the run


def test_a_stop_after_a_reconnect_ends_the_site_that_missed_it(tmp_path):
    node, sock, learner = _node(tmp_path)
    c = _Coordinator()
    node._hello()
    node.handle(c.frames(_welcome()))
    node.handle(c.frames(_batch(1)))
    node._hello()  # a new session: the coordinator's replay state is forgotten, the run id kept
    node.handle(c.frames(Stop(run_id="r1", reason="completed"), round=1))
    assert node.exit_reason == "stop:completed" and node.exit_code == 0 and sock.sent[-1] == StopAck(run_id="r1")
    fresh, fresh_sock, _ = _node(tmp_path / "late")  # a site started after the run: never welcomed
    fresh._hello()
    fresh.handle(_Coordinator().frames(Stop(run_id="r1", reason="completed")))
    assert fresh.exit_reason == "stop:completed" and fresh_sock.sent[-1] == StopAck(run_id="r1")


def test_fatal_codes_and_image_mismatch(tmp_path):
    node, sock, _ = _node(tmp_path)
    c = _Coordinator()
    node._hello()
    node.handle(c.frames(ErrorReply(code="source_refused", detail="no")))
    assert node.exit_code == 3
    node, sock, _ = _node(tmp_path)
    node._hello()
    node.handle(c.frames(Welcome(version=PROTOCOL_VERSION, run_id="r1", image_size=32, model={}, condition_source="procedural",
                                     planned_steps=200)))
    assert node.exit_code == 2 and node.exit_reason == "image_size_mismatch" and not node.welcomed


def test_a_failing_learner_refuses_the_step_and_keeps_serving(tmp_path):
    node, sock, learner = _node(tmp_path)
    c = _Coordinator()

    def boom(msg):
        raise RuntimeError("numerical trouble")

    learner.serve = boom
    node._hello()
    node.handle(c.frames(_welcome()))
    node.handle(c.frames(_batch(1)))
    assert sock.sent[-1].TYPE == "refusal" and sock.sent[-1].code == "site_error" and not sock.sent[-1].final
    assert node.exit_reason is None

"""An error report is never answered with another error, on either side.

Two peers that cannot read each other (another protocol version, a corrupt or forged ErrorReply)
would otherwise trade error replies for ever: each refuses the other's error and answers it with
one of its own. The codec marks a refusal whose header says ErrorReply (type "error", ``about_an_error``); the
coordinator and the site count and log it but send nothing. Any other refused message is still
answered, so a peer learns why it was refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secgan.core.errors import ProtocolError
from secgan.net import codec, replay
from secgan.net.schema import PROTOCOL_VERSION, ErrorReply, Heartbeat

from tests.unit.coordinator.test_coordinator_inbound import Router, Site, make_coordinator
from tests.unit.sites.fakes import FakeLearner, fake_node


def _frames(msg, *, version: int | None = None, site: str = "site-1", run: str = "r", seq: int | None = None):
    frames = codec.encode(msg, run_id=run, round=0, step=0, site=site,
                          seq=replay.initial_seq() + 1 if seq is None else seq)
    frames = [bytes(f) for f in frames]
    if version is not None:  # the same message as a peer of another protocol version sends it
        header = json.loads(frames[0])
        header["v"] = version
        frames[0] = json.dumps(header).encode()
    return frames


OTHER_VERSIONS = st.integers(min_value=0, max_value=2**31).filter(lambda v: v != PROTOCOL_VERSION)


@given(version=OTHER_VERSIONS)
def test_the_codec_marks_a_refused_error_reply_and_nothing_else(version):
    with pytest.raises(ProtocolError) as err:
        codec.decode(_frames(ErrorReply(code="unsupported_version"), version=version))
    assert err.value.code == "unsupported_version" and err.value.about_an_error
    with pytest.raises(ProtocolError) as other:
        codec.decode(_frames(Heartbeat(), version=version))
    assert other.value.code == "unsupported_version" and not other.value.about_an_error


def test_a_corrupt_error_reply_is_marked_and_an_unreadable_header_is_not():
    frames = _frames(ErrorReply(code="replay"))
    header = json.loads(frames[0])
    header["tensors"] = [{"name": "x"}]  # an ErrorReply that claims a tensor
    with pytest.raises(ProtocolError) as err:
        codec.decode([json.dumps(header).encode(), b"\0" * 4])
    assert err.value.about_an_error
    with pytest.raises(ProtocolError) as junk:
        codec.decode([b"not json"])
    assert junk.value.code == "bad_json" and not junk.value.about_an_error


def test_the_coordinator_does_not_answer_an_error_it_cannot_read(tmp_path):
    c = make_coordinator(tmp_path)
    c.router = Router()
    one = Site(c, "site-1")
    one.hello()
    n = len(c.router.sent)
    one.raw(_frames(ErrorReply(code="unsupported_version"), version=PROTOCOL_VERSION - 1))
    assert len(c.router.sent) == n  # counted, not answered
    assert c.registry["site-1"].drops["unsupported_version"] == 1
    one.send(ErrorReply(code="wrong_run"), seq=0)  # readable, but refused (a replayed seq): not answered either
    assert len(c.router.sent) == n
    one.raw(_frames(Heartbeat(), version=PROTOCOL_VERSION - 1))  # anything else refused is answered
    assert len(c.router.sent) == n + 1 and c.router.sent[-1][1].code == "unsupported_version"


def test_the_site_does_not_answer_an_error_it_cannot_read(tmp_path):
    node = fake_node(tmp_path, FakeLearner())
    sock = node.sock
    node._hello()
    n = len(sock.sent)
    node.handle(_frames(ErrorReply(code="unsupported_version"), version=PROTOCOL_VERSION + 1, site="site-1"))
    assert len(sock.sent) == n and node.counts["rejected_unsupported_version"] == 1
    node.handle(_frames(Heartbeat(), version=PROTOCOL_VERSION + 1, site="site-1"))
    assert len(sock.sent) == n + 1 and sock.sent[-1].code == "unsupported_version"

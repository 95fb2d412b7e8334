"""Hypothesis: the replay guard's invariants, raw tensor byte layout for every codec dtype, and
decoding real ZeroMQ frames received without copying."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from secgan.net import codec, replay, schema
from secgan.core.errors import ProtocolError
from secgan.net.schema import FakeBatch

envelopes = st.lists(
    st.tuples(st.sampled_from([b"A", b"B"]), st.sampled_from(["run-1", "run-2"]), st.integers(0, 5), st.integers(0, 20)),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(envelopes)
def test_replay_guard_invariants(seq):
    guard = replay.ReplayGuard()
    accepted: dict[bytes, list[tuple[str, int, int]]] = {}
    for peer, run, rnd, s in seq:
        env = schema.Envelope(version=1, type="heartbeat", run_id=run, round=rnd, step=0, site="x", seq=s)
        try:
            guard.accept(env, peer=peer)
        except ProtocolError as exc:
            assert exc.code in ("wrong_run", "stale", "replay", "seq_ahead", "future_round")
            continue
        accepted.setdefault(peer, []).append((run, rnd, s))
    total_dropped = sum(guard.counts.values())
    assert total_dropped + sum(len(v) for v in accepted.values()) == len(seq)
    for items in accepted.values():
        assert len({r for r, _, _ in items}) == 1  # one run per peer
        assert all(a[1] <= b[1] and a[2] < b[2] for a, b in zip(items, items[1:]))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(codec.DTYPES)), st.lists(st.integers(1, 5), min_size=0, max_size=4), st.integers(0, 2**32))
def test_raw_layout_is_little_endian_c_order(dtype, shape, seed):
    tdtype = codec.DTYPES[dtype][0]
    g = torch.Generator().manual_seed(seed)
    if tdtype.is_floating_point:
        t = torch.randn(shape, generator=g).to(tdtype)
    else:
        t = torch.randint(0, 255, shape, generator=g).to(tdtype)
    raw = codec._tensor_bytes(t)
    assert len(raw) == t.numel() * codec.DTYPES[dtype][1]
    back = codec._tensor_from(memoryview(raw), dtype, tuple(shape))
    assert back.dtype == tdtype and torch.equal(back, t)
    if dtype != "bfloat16":
        ref = np.asarray(t.numpy(), dtype=np.dtype(dtype).newbyteorder("<"), order="C").tobytes()
        assert raw == ref
    # the byte swap used on big-endian hosts is an involution and really reverses each element
    swapped = codec._swap(t)
    assert torch.equal(codec._swap(swapped), t)
    if t.element_size() > 1 and t.numel():
        flat = t.reshape(-1).view(torch.uint8).reshape(-1, t.element_size())
        assert torch.equal(swapped.reshape(-1).view(torch.uint8).reshape(-1, t.element_size()), flat.flip(-1))


def test_decode_zero_copy_zmq_frames_gives_owned_tensors():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://wire-test")
        b.connect("inproc://wire-test")
        b.setsockopt(zmq.RCVTIMEO, 5000)
        cond = torch.rand(4, 4, 32, 32)
        msg = FakeBatch(run_id="r", round=1, step=2, cond=cond, fake=cond * 2 - 1)
        a.send_multipart(codec.encode(msg, run_id="r", round=1, step=2, site="c", seq=1))
        frames = b.recv_multipart(copy=False)
        _, out = codec.decode(frames)
        del frames
        out.cond.mul_(0)  # writable
        assert torch.equal(out.fake, cond * 2 - 1)
        assert not torch.equal(out.cond, cond)
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


# --- check, then commit: only accepted messages move the guard ----------------------------------

guarded = st.lists(
    st.tuples(st.sampled_from([b"A", b"B"]), st.sampled_from(["run-1", "run-2"]),
              st.sampled_from([0, 1, 2, 3, 10**6, 2**53 - 1]), st.sampled_from([0, 1, 2, 10**6]),
              st.integers(0, 12) | st.sampled_from([2**20, 2**20 + 13, 2**53 - 1]),
              st.booleans(), st.booleans()),
    max_size=40,
)


def _outcome(guard, env, **kw):
    try:
        guard.check(env, **kw)
    except ProtocolError as exc:
        return exc.code
    return None


@settings(max_examples=150, deadline=None)
@given(guarded)
def test_messages_refused_by_the_receiver_leave_no_trace(seq):
    """A guard that saw messages the receiver refused after check() (stage, scheduler, ...) decides
    exactly like a guard that never saw them; check() alone never changes anything."""
    seen_all = replay.ReplayGuard(clock=lambda: 0, max_clock_ahead_us=2**53)
    seen_accepted = replay.ReplayGuard(clock=lambda: 0, max_clock_ahead_us=2**53)
    for peer, run, rnd, step, s, receiver_accepts, hello in seq:
        env = schema.Envelope(version=1, type="hello" if hello else "heartbeat", run_id=run, round=rnd, step=step,
                            site="x", seq=s)
        before = dict(seen_all._peers)
        got = _outcome(seen_all, env, peer=peer, new_session=hello, max_round=10**6)
        assert seen_all._peers == before  # check() only looks
        if got is None and receiver_accepts:
            assert _outcome(seen_accepted, env, peer=peer, new_session=hello, max_round=10**6) is None
            seen_all.commit(env, peer=peer, new_session=hello)
            seen_accepted.commit(env, peer=peer, new_session=hello)
        assert seen_all._peers == seen_accepted._peers


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**53 - 1), st.integers(0, 2**53 - 1), st.booleans()), max_size=30))
def test_no_accepted_message_moves_seq_or_round_out_of_bounds(msgs):
    now = 10**15
    guard = replay.ReplayGuard(clock=lambda: now)
    last_seq = None
    for rnd, s, hello in msgs:
        env = schema.Envelope(version=1, type="hello" if hello else "heartbeat", run_id="r", round=rnd, step=0,
                            site="x", seq=s)
        try:
            guard.accept(env, peer=b"A", new_session=hello, max_round=1000)
        except ProtocolError:
            continue
        assert rnd <= 1000 and s <= now + replay.MAX_CLOCK_AHEAD_US
        if last_seq is not None and not hello:
            assert last_seq < s <= last_seq + replay.MAX_SEQ_AHEAD
        last_seq = s


def test_site_side_round_window():
    guard = replay.ReplayGuard(max_round_ahead=100, max_seq_ahead=None)
    guard.accept(schema.Envelope(version=1, type="welcome", run_id="r", round=5, step=0, site="s", seq=10), peer="c")
    with pytest.raises(ProtocolError) as exc:
        guard.check(schema.Envelope(version=1, type="fake_batch", run_id="r", round=106, step=0, site="s", seq=11),
                    peer="c")
    assert exc.value.code == "future_round"
    # the coordinator's seq is shared by all its peers: a big gap is fine without a window
    guard.accept(schema.Envelope(version=1, type="fake_batch", run_id="r", round=105, step=0, site="s",
                               seq=10 + 10**9), peer="c")
    assert guard.last_round("c") == 105

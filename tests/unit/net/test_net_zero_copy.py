"""The zero-copy wire: encode frames over the tensor's own buffer, decode views over received
zmq.Frames (validated before use), copies of every other buffer, and the lifetime of a view."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import zmq

from secgan.core.errors import ProtocolError
from secgan.net import codec
from secgan.net.schema import FakeBatch, GradientReply

ENV = dict(run_id="run-1", round=2, step=5, site="site-1", seq=9)


def batch(b: int = 4, size: int = 16) -> FakeBatch:
    g = torch.Generator().manual_seed(1)
    return FakeBatch(run_id="run-1", round=2, step=5, cond=torch.rand(b, 4, size, size, generator=g),
                     fake=torch.rand(b, 4, size, size, generator=g) * 2 - 1)


def address(buf) -> int:
    return np.frombuffer(buf, dtype=np.uint8).ctypes.data


def received(frames) -> list[zmq.Frame]:
    """Frames as a receiver holds them: each a libzmq message owning a copy of the bytes."""
    return [zmq.Frame(bytes(f)) for f in frames]


@pytest.fixture()
def tcp_pair():
    """A PUSH/PULL pair over 127.0.0.1 (tcp: the kernel copies, as between processes)."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    yield push, pull
    push.close(0)
    pull.close(0)
    ctx.term()


def recv(pull: zmq.Socket) -> list[zmq.Frame]:
    if not pull.poll(5000):
        raise AssertionError("no message within 5 s")
    return pull.recv_multipart(copy=False)


def test_encode_frames_are_read_only_views_of_the_tensors_own_buffer():
    msg = batch()
    frames = codec.encode(msg, **ENV)
    assert isinstance(frames[0], bytes)
    for frame, t in zip(frames[1:], (msg.cond, msg.fake)):
        assert isinstance(frame, memoryview) and frame.readonly
        assert address(frame) == t.data_ptr() and len(frame) == t.numel() * 4  # no copy
        with pytest.raises(TypeError):
            frame[0] = 0


def test_encode_copies_only_what_is_not_contiguous_and_still_lays_out_c_order():
    msg = batch()
    wide = torch.rand(4, 16, 16, 4).permute(0, 3, 1, 2)  # [4, 4, 16, 16], not contiguous
    odd = FakeBatch(run_id="run-1", round=2, step=5, cond=wide, fake=msg.fake)
    frames = codec.encode(odd, **ENV)
    assert address(frames[1]) != wide.data_ptr() and address(frames[2]) == msg.fake.data_ptr()
    assert bytes(frames[1]) == wide.contiguous().numpy().astype("<f4").tobytes()


def test_decode_views_a_received_frame_and_checks_it_first():
    msg = batch()
    frames = received(codec.encode(msg, **ENV))
    _, out = codec.decode(frames)
    for t, frame, want in zip((out.cond, out.fake), frames[1:], (msg.cond, msg.fake)):
        assert t.data_ptr() == address(frame.buffer)  # a view, no copy
        assert torch.equal(t, want) and t.is_contiguous() and t.dtype == torch.float32
    bad = msg.fake.clone()
    bad[1, 2, 3, 4] = float("nan")
    raw = received(codec.encode(msg, **ENV))
    raw[2] = zmq.Frame(bad.numpy().tobytes())
    with pytest.raises(ProtocolError) as exc:  # the same refusal as a copied buffer gets
        codec.decode(raw)
    assert exc.value.code == "non_finite"


def test_in_process_round_trip_never_aliases_the_senders_tensors():
    msg = batch()
    frames = codec.encode(msg, **ENV)
    _, out = codec.decode(frames)
    assert out.fake.data_ptr() != msg.fake.data_ptr()
    msg.fake.add_(5.0)  # the sender mutates its tensor after the round trip
    assert float(out.fake.max()) <= 1.0
    # every non-Frame buffer type is copied too
    for wrap in (bytes, bytearray, memoryview):
        src = bytearray(frames[2])
        _, got = codec.decode([frames[0], frames[1], wrap(src)])
        src[:] = bytes(len(src))
        assert torch.equal(got.fake, msg.fake)


def test_a_misaligned_received_frame_is_copied_and_still_exact():
    msg = batch()
    frames = codec.encode(msg, **ENV)
    backing = zmq.Frame(b"\x00" + bytes(frames[2]))
    shifted = memoryview(backing.buffer)[1:]
    assert address(shifted) % 4 != 0

    # a received frame whose payload starts one byte in: viewed it would be a misaligned float32
    out = codec._tensor_from(shifted, "float32", tuple(msg.fake.shape), frame=backing)
    assert torch.equal(out, msg.fake) and out.data_ptr() % 4 == 0 and out.data_ptr() != address(shifted)
    aligned = memoryview(backing.buffer)[4:-1]  # the same frame, aligned (4 + 4k bytes in): a view
    assert codec._tensor_from(aligned, "float32", (len(aligned) // 4,), frame=backing).data_ptr() == address(aligned)


def test_tcp_round_trip_views_outlive_the_frames(tcp_pair):
    push, pull = tcp_pair
    msg = batch(b=8, size=32)  # above pyzmq's copy threshold: the frames go out zero-copy
    push.send_multipart(codec.encode(msg, **ENV), copy=False)
    frames = recv(pull)
    _, out = codec.decode(frames)
    assert out.fake.data_ptr() == address(frames[2].buffer)
    del frames
    gc.collect()
    assert torch.equal(out.cond, msg.cond) and torch.equal(out.fake, msg.fake)
    out.fake.mul_(0.0)  # writable; only this message's memory changes
    assert float(msg.fake.abs().max()) > 0


def test_int64_reply_views_and_big_values_survive(tcp_pair):
    push, pull = tcp_pair
    grad = torch.randint(-(2**62), 2**62, (8, 4, 32, 32), dtype=torch.int64)
    reply = GradientReply(run_id="run-1", round=2, step=5, grad=grad)
    push.send_multipart(codec.encode(reply, **ENV), copy=False)
    _, out = codec.decode(recv(pull))
    assert out.grad.dtype == torch.int64 and torch.equal(out.grad, grad)


def test_all_finite_matches_isfinite_for_every_float_dtype():
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for bad in (None, float("nan"), float("inf"), float("-inf")):
            t = (torch.randn(3, 5, 7, generator=g) * 1e4).to(dtype)
            t[0, 0, 0] = torch.finfo(dtype).max  # huge but finite: no false refusal
            t[0, 0, 1] = -torch.finfo(dtype).max
            if bad is not None:
                t[2, 4, 6] = bad
            assert codec.all_finite(t) == bool(torch.isfinite(t).all()), (dtype, bad)
            assert codec.all_finite(t.transpose(0, 2)) == bool(torch.isfinite(t).all())

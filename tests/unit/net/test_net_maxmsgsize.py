"""ZMQ_MAXMSGSIZE against the real libzmq: CURVE's per-frame overhead is measured, not assumed,
and every frame codec.encode lets through arrives through the project's own CURVE sockets."""

from __future__ import annotations

import pytest
import torch
import zmq

from secgan.net import codec, transport
from secgan.net.limits import WireLimits, max_message_bytes
from secgan.core.errors import ProtocolError
from secgan.net.schema import FakeBatch, GradientReply, Heartbeat
from secgan.net.transport import AllowListPolicy, ZapAuthenticator, make_dealer, make_router


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def _raw_curve_pair_delivers(ctx: zmq.Context, maxmsgsize: int, frame_bytes: int) -> bool:
    """Plain libzmq CURVE ROUTER/DEALER (no project code): does one frame of ``frame_bytes``
    arrive when the receiver's ZMQ_MAXMSGSIZE is ``maxmsgsize``?"""
    spub, ssec = zmq.curve_keypair()
    cpub, csec = zmq.curve_keypair()
    r, d = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        for s in (r, d):
            s.setsockopt(zmq.LINGER, 0)
        r.setsockopt(zmq.MAXMSGSIZE, maxmsgsize)  # before bind: the listener copies the options
        r.setsockopt(zmq.CURVE_SERVER, 1)
        r.setsockopt(zmq.CURVE_SECRETKEY, ssec)
        r.bind("tcp://127.0.0.1:0")
        d.setsockopt(zmq.CURVE_SERVERKEY, spub)
        d.setsockopt(zmq.CURVE_PUBLICKEY, cpub)
        d.setsockopt(zmq.CURVE_SECRETKEY, csec)
        d.connect(r.getsockopt(zmq.LAST_ENDPOINT).decode())
        d.send(b"\x01" * frame_bytes)
        if not r.poll(2000):
            return False
        return len(r.recv_multipart()[-1]) == frame_bytes
    finally:
        r.close(0)
        d.close(0)


def _measured_overhead(ctx: zmq.Context, frame_bytes: int) -> int:
    """Smallest MAXMSGSIZE that lets a frame through, minus the frame: what CURVE adds."""
    lo, hi = frame_bytes, frame_bytes + 256
    assert _raw_curve_pair_delivers(ctx, hi, frame_bytes) and not _raw_curve_pair_delivers(ctx, lo - 1, frame_bytes)
    while lo < hi:
        mid = (lo + hi) // 2
        if _raw_curve_pair_delivers(ctx, mid, frame_bytes):
            hi = mid
        else:
            lo = mid + 1
    return lo - frame_bytes


# (the CURVE handshake itself is subject to MAXMSGSIZE: its commands are a few hundred bytes)
@pytest.mark.parametrize("frame_bytes", [1000, 70_000])  # short and long ZMTP frame headers
def test_curve_overhead_is_covered(ctx, frame_bytes):
    overhead = _measured_overhead(ctx, frame_bytes)
    assert overhead > 0  # CURVE does add bytes before the size check: the reported defect
    assert overhead <= transport.CURVE_FRAME_OVERHEAD, f"libzmq's CURVE overhead is {overhead} bytes"


def _pair(ctx, limits):
    spub, ssec = zmq.curve_keypair()
    cpub, csec = zmq.curve_keypair()
    zap = ZapAuthenticator(ctx, AllowListPolicy({"site-1": cpub})).start()
    router = make_router(ctx, bind="tcp://127.0.0.1:0", server_secret=ssec, server_public=spub, limits=limits)
    dealer = make_dealer(ctx, endpoint=router.getsockopt(zmq.LAST_ENDPOINT).decode(), client_public=cpub,
                         client_secret=csec, server_public=spub, limits=limits)
    return zap, router, dealer


@pytest.mark.parametrize("direction", ["to_router", "to_dealer"])
def test_a_frame_exactly_at_the_encode_limit_arrives(ctx, direction):
    """The reported case, scaled down: a tensor frame of exactly limits.max_tensor_bytes (there, batch
    1024 at 32 px = 16 MiB) passed encode and was dropped by libzmq."""
    shape = (4, 4, 8, 8)
    limits = WireLimits(max_tensor_bytes=4 * 4 * 8 * 8 * 4, max_header_bytes=1024, max_total_bytes=1 << 20)
    zap, router, dealer = _pair(ctx, limits)
    try:
        grad = GradientReply(run_id="r", round=1, step=0, grad=torch.ones(shape))
        frames = codec.encode(grad, run_id="r", round=1, step=0, site="site-1", seq=1, limits=limits)
        assert len(frames[1]) == limits.max_tensor_bytes  # exactly at the limit
        if direction == "to_router":
            dealer.send_multipart(frames)
            assert router.poll(5000)
            got = router.recv_multipart()[1:]
        else:
            dealer.send_multipart(codec.encode(grad, run_id="r", round=1, step=0, site="site-1", seq=2, limits=limits))
            assert router.poll(5000)
            rid = router.recv_multipart()[0]
            router.send_multipart([rid, *frames])
            assert dealer.poll(5000)
            got = dealer.recv_multipart()
        _, msg = codec.decode(got, limits=limits)
        assert torch.equal(msg.grad, grad.grad)
        # one element more is refused by encode, so no peer ever sends what the receiver drops
        with pytest.raises(ProtocolError) as exc:
            codec.encode(GradientReply(run_id="r", round=1, step=0, grad=torch.ones(5, 4, 8, 8)), run_id="r", round=1,
                        step=0, site="site-1", seq=3, limits=limits)
        assert exc.value.code == "tensor_too_large"
    finally:
        router.close(0)
        dealer.close(0)
        zap.stop()


def test_a_header_exactly_at_its_limit_arrives(ctx):
    limits = WireLimits(max_tensor_bytes=256, max_header_bytes=4096, max_total_bytes=1 << 20)
    zap, router, dealer = _pair(ctx, limits)
    try:
        batch = FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(1, 4, 2, 2), fake=torch.zeros(1, 4, 2, 2))
        head = codec.encode(batch, run_id="r", round=1, step=0, site="site-1", seq=1, limits=limits)
        # JSON allows leading whitespace: the same header padded to exactly max_header_bytes, the
        # largest frame of these limits
        frame = b" " * (limits.max_header_bytes - len(head[0])) + head[0]
        assert len(frame) == limits.max_header_bytes == max_message_bytes(limits)
        dealer.send_multipart([frame, *head[1:]])
        assert router.poll(5000)
        _, msg = codec.decode(router.recv_multipart()[1:], limits=limits)
        assert isinstance(msg, FakeBatch)
    finally:
        router.close(0)
        dealer.close(0)
        zap.stop()


def test_maxmsgsize_is_the_largest_frame_plus_the_overhead(ctx):
    limits = WireLimits()
    spub, ssec = zmq.curve_keypair()
    r = make_router(ctx, bind="tcp://127.0.0.1:0", server_secret=ssec, server_public=spub, limits=limits)
    try:
        largest = max(limits.max_header_bytes, limits.max_tensor_bytes)
        assert max_message_bytes(limits) == largest
        assert r.getsockopt(zmq.MAXMSGSIZE) == largest + transport.CURVE_FRAME_OVERHEAD
    finally:
        r.close(0)


def test_the_smallest_limits_still_complete_the_curve_handshake(ctx):
    """The handshake's commands count against MAXMSGSIZE too: the floor keeps the smallest
    allowed limits connectable (without it, 256 + 33 bytes is below what INITIATE needs)."""
    limits = WireLimits(max_tensor_bytes=1, max_header_bytes=256, max_total_bytes=300)
    zap, router, dealer = _pair(ctx, limits)
    try:
        dealer.send_multipart(codec.encode(Heartbeat(), run_id="", round=0, step=0, site="site-1", seq=1,
                                          limits=limits))
        assert router.poll(5000)
        assert isinstance(codec.decode(router.recv_multipart()[1:], limits=limits)[1], Heartbeat)
    finally:
        router.close(0)
        dealer.close(0)
        zap.stop()

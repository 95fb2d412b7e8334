"""Hypothesis: every message type round-trips; arbitrary frames only ever raise ProtocolError."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secgan.net import codec, fields
from secgan.net.errors import PROTOCOL_ERRORS
from secgan.net.limits import WireLimits
from secgan.core.errors import ProtocolError
from secgan.net.schema import ErrorReply, FakeBatch, GradientReply, Heartbeat, Hello, Refusal, Stop, Welcome

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = WireLimits()

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-", min_size=1, max_size=64)
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf", "Co", "Cn", "Zs"))
    | st.just(" "),
    max_size=200,
)
ints = st.integers(min_value=0, max_value=2**53 - 1)
json_leaf = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats(allow_nan=False, allow_infinity=False) | texts
json_obj = st.dictionaries(
    st.text(alphabet="abcdefghij_", min_size=1, max_size=10),
    st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text("abc", min_size=1, max_size=3), c, max_size=3), max_leaves=8),
    max_size=6,
).filter(fields.JsonObject().range_ok)  # nesting deeper than the codec's limit is a separate, negative test


@st.composite
def tensor4(draw, dtypes=(torch.float32,)):
    b = draw(st.integers(1, 4))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**31))
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        t = torch.randn(b, 4, h, w, generator=g).to(dtype) * draw(st.sampled_from([1.0, 1e-30, 1e30]))
        t = t.nan_to_num(nan=0.0, posinf=1.0, neginf=-1.0)
    else:
        t = torch.randint(-(2**62), 2**62, (b, 4, h, w), generator=g, dtype=torch.int64)
    return t


@st.composite
def messages(draw):
    run = draw(ids)
    rnd, step = draw(ints), draw(ints)
    kind = draw(st.sampled_from(["hello", "welcome", "fake", "grad", "refusal", "heartbeat", "stop", "error"]))
    if kind == "hello":
        msg = Hello(versions=tuple(draw(st.lists(st.integers(1, 1000), min_size=1, max_size=16))),
                    policy=draw(json_obj), resume_step=draw(ints))
    elif kind == "welcome":
        msg = Welcome(version=draw(st.integers(1, 1000)), run_id=run, image_size=draw(st.integers(1, 4096)),
                      model=draw(json_obj), condition_source=draw(ids.filter(lambda s: len(s) <= 32)),
                      planned_steps=draw(st.integers(1, 2**53 - 1)),
                      aggregation=draw(st.sampled_from(["routed", "secure-sum"])))
    elif kind == "fake":
        cond = draw(tensor4())
        fake = torch.randn(cond.shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
        msg = FakeBatch(run_id=run, round=rnd, step=step, cond=cond, fake=fake, attempt=draw(st.integers(0, 2**16)))
    elif kind == "grad":
        msg = GradientReply(run_id=run, round=rnd, step=step, grad=draw(tensor4((torch.float32, torch.int64))),
                            budget_left=draw(st.none() | st.floats(0, 1)), attempt=draw(st.integers(0, 2**16)))
    elif kind == "refusal":
        msg = Refusal(run_id=run, round=rnd, step=step, code=draw(ids), reason=draw(texts), final=draw(st.booleans()))
    elif kind == "heartbeat":
        msg = Heartbeat()
    elif kind == "stop":
        msg = Stop(run_id=run, reason=draw(texts))
    else:
        msg = ErrorReply(code=draw(ids), detail=draw(texts))
    env = dict(run_id=run, round=rnd, step=step, site=draw(st.just("") | ids), seq=draw(ints))
    return msg, env


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b and type(a) is type(b) or (isinstance(a, float) and isinstance(b, float) and a == b)


@SETTINGS
@given(messages())
def test_round_trip(case):
    msg, env = case
    frames = codec.encode(msg, **env, limits=LIMITS)
    assert isinstance(frames[0], bytes)
    assert all(isinstance(f, memoryview) and f.readonly for f in frames[1:])  # views of the tensors
    # in-process (copied) and as a receiver holds them (zmq.Frames, viewed): the same message
    for given_frames in (frames, [zmq.Frame(bytes(f)) for f in frames]):
        envelope, out = codec.decode(given_frames, limits=LIMITS)
        assert (envelope.run_id, envelope.round, envelope.step, envelope.site, envelope.seq) == (
            env["run_id"], env["round"], env["step"], env["site"], env["seq"])
        assert envelope.type == type(msg).TYPE and type(out) is type(msg)
        for f in dataclasses.fields(msg):
            a, b = getattr(msg, f.name), getattr(out, f.name)
            if f.name == "epsilon" and a is not None:
                assert b == float(a)
            else:
                assert same(a, b), f.name


def _random_tensor(dtype: str, shape: list[int], seed: int, layout: str) -> torch.Tensor:
    tdtype = codec.DTYPES[dtype][0]
    g = torch.Generator().manual_seed(seed)
    if tdtype.is_floating_point:
        t = torch.randn(shape, generator=g).to(tdtype)
    elif tdtype == torch.int64:
        t = torch.randint(-(2**62), 2**62, shape, generator=g, dtype=torch.int64)
    else:
        t = torch.randint(0, 256, shape, generator=g).to(tdtype)
    if layout == "transposed" and t.dim() >= 2:
        t = t.transpose(0, -1).contiguous().transpose(0, -1)  # same values, not C-contiguous
    elif layout == "offset" and t.numel():
        t = torch.cat([t.reshape(-1)[:1], t.reshape(-1)])[1:].reshape(t.shape)  # storage offset of one item
    return t


@SETTINGS
@given(st.sampled_from(sorted(codec.DTYPES)), st.lists(st.integers(1, 9), min_size=0, max_size=4),
       st.integers(0, 2**32), st.sampled_from(["contiguous", "transposed", "offset"]))
def test_zero_copy_path_round_trips_any_dtype_and_shape(dtype, shape, seed, layout):
    """Tensor frames: out as a view (a copy only when not contiguous), in as a view of a received
    frame (a copy of any other buffer); both exact, little-endian, C order."""
    t = _random_tensor(dtype, shape, seed, layout)
    frame = codec._tensor_frame(t)
    assert frame.readonly and len(frame) == t.numel() * codec.DTYPES[dtype][1]
    if t.is_contiguous():
        assert np.frombuffer(frame, dtype=np.uint8).ctypes.data == t.data_ptr() or t.numel() == 0
    assert bytes(frame) == t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()  # host is little-endian
    received = zmq.Frame(bytes(frame))
    view = codec._tensor_from(memoryview(received), dtype, tuple(shape), frame=received)
    copy = codec._tensor_from(frame, dtype, tuple(shape))
    for back in (view, copy):
        assert back.dtype == t.dtype and tuple(back.shape) == tuple(shape) and torch.equal(back, t)
        assert back.is_contiguous()
    if t.numel():
        at = np.frombuffer(received.buffer, dtype=np.uint8).ctypes.data
        # a view of the frame, unless its start is misaligned for the dtype (then a copy)
        assert (view.data_ptr() == at) == (at % codec.DTYPES[dtype][1] == 0)
        assert copy.data_ptr() != t.data_ptr()


frame = st.binary(max_size=300) | st.builds(bytearray, st.binary(max_size=64)) | st.sampled_from([b"{}", b"[]", b"null", b'{"v":1}'])


@SETTINGS
@given(st.lists(frame, max_size=10))
def test_arbitrary_frames_raise_only_protocol_error(frames):
    try:
        codec.decode(frames, limits=LIMITS)
    except ProtocolError as exc:
        assert exc.code in PROTOCOL_ERRORS


json_any = st.recursive(json_leaf | st.sampled_from([2**60, -1, 1e308]),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20)


@st.composite
def mutated_headers(draw):
    """A valid message whose header has one key replaced by arbitrary JSON, plus random tensor frames."""
    msg, env = draw(messages())
    frames = codec.encode(msg, **env)
    header = json.loads(frames[0])
    where = draw(st.sampled_from(["top", "body", "tensor"]))
    value = draw(json_any)
    if where == "top":
        header[draw(st.sampled_from(sorted(header) + ["zz"]))] = value
    elif where == "body":
        header["body"][draw(st.sampled_from(sorted(header["body"]) + ["zz"]))] = value
    elif header["tensors"]:
        entry = header["tensors"][draw(st.integers(0, len(header["tensors"]) - 1))]
        entry[draw(st.sampled_from(["name", "dtype", "shape", "nbytes", "zz"]))] = value
    tail = frames[1:]
    if draw(st.booleans()) and tail:
        tail = [draw(st.binary(max_size=64)) for _ in tail]
    return [json.dumps(header).encode(), *tail]


@SETTINGS
@given(mutated_headers())
def test_mutated_headers_raise_only_protocol_error(frames):
    try:
        codec.decode(frames, limits=LIMITS)
    except ProtocolError as exc:
        assert exc.code in PROTOCOL_ERRORS


@SETTINGS
@given(messages(), st.data())
def test_any_single_byte_flip_in_header_is_handled(case, data):
    msg, env = case
    frames = codec.encode(msg, **env)
    head = bytearray(frames[0])
    i = data.draw(st.integers(0, len(head) - 1))
    head[i] = data.draw(st.integers(0, 255))
    try:
        codec.decode([bytes(head), *frames[1:]], limits=LIMITS)
    except ProtocolError as exc:
        assert exc.code in PROTOCOL_ERRORS

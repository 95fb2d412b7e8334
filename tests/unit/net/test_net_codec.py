"""The codec: round trips, hand-made bad frames (one per check), validation order, encode side, limits
and the frozen wire examples."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from secgan.net import codec, schema
from secgan.net.errors import PROTOCOL_ERRORS
from secgan.net.limits import WireLimits, max_message_bytes
from secgan.core.errors import ProtocolError
from secgan.net.schema import (
    PROTOCOL_VERSION,
    MESSAGE_TYPES,
    ErrorReply,
    FakeBatch,
    GradientReply,
    Heartbeat,
    Hello,
    Refusal,
    Stop,
    Welcome,
)

ENV = dict(run_id="run-1", round=2, step=5, site="site-1", seq=9)


def batch(b: int = 2, size: int = 8) -> FakeBatch:
    g = torch.Generator().manual_seed(0)
    return FakeBatch(
        run_id="run-1", round=2, step=5,
        cond=torch.rand(b, 4, size, size, generator=g), fake=torch.rand(b, 4, size, size, generator=g) * 2 - 1,
    )


def frames_of(msg=None, **env) -> list[bytes]:
    return codec.encode(msg or batch(), **{**ENV, **env})


def with_header(frames: list[bytes], mutate) -> list[bytes]:
    header = json.loads(frames[0])
    mutate(header)
    return [json.dumps(header).encode(), *frames[1:]]


def code_of(frames, **kw) -> str:
    with pytest.raises(ProtocolError) as exc:
        codec.decode(frames, **kw)
    assert exc.value.code in PROTOCOL_ERRORS
    return exc.value.code


def test_round_trip_fake_batch_is_exact_and_owned():
    msg = batch()
    frames = frames_of(msg)
    env, out = codec.decode(frames)
    assert env == schema.Envelope(version=PROTOCOL_VERSION, type="fake_batch", run_id="run-1", round=2, step=5, site="site-1", seq=9)
    assert torch.equal(out.cond, msg.cond) and torch.equal(out.fake, msg.fake)
    assert out.cond.dtype == torch.float32 and out.cond.is_contiguous()
    # writable, and not aliasing the frame buffer: changing it leaves a second decode unchanged
    out.fake.add_(1.0)
    _, again = codec.decode(frames)
    assert torch.equal(again.fake, msg.fake)
    buf = bytearray(frames[1])
    _, third = codec.decode([frames[0], buf, frames[2]])
    buf[:] = b"\x00" * len(buf)
    assert torch.equal(third.cond, msg.cond)


def test_accepts_memoryview_and_bytearray_frames():
    frames = frames_of()
    env, out = codec.decode([memoryview(frames[0]), bytearray(frames[1]), memoryview(frames[2])])
    assert env.seq == 9 and out.cond.shape == (2, 4, 8, 8)


def test_header_layout_is_documented_shape():
    header = json.loads(frames_of()[0])
    assert set(header) == {"v", "type", "run", "round", "step", "site", "seq", "body", "tensors"}
    assert header["body"] == {"attempt": 0}
    assert header["tensors"][0] == {"name": "cond", "dtype": "float32", "shape": [2, 4, 8, 8], "nbytes": 2 * 4 * 64 * 4}


def test_every_message_type_round_trips():
    msgs = [
        Hello(versions=(1,), policy={"mode": "dpsgd", "target_epsilon": 3.0, "accept_sources": ["procedural"]}),
        Welcome(version=1, run_id="run-1", image_size=64, model={"g_width": 32}, condition_source="procedural",
                planned_steps=200),
        batch(),
        GradientReply(run_id="run-1", round=2, step=5, grad=torch.randn(2, 4, 8, 8), budget_left=0.7, attempt=1),
        GradientReply(run_id="run-1", round=2, step=5, grad=torch.arange(2 * 4 * 4 * 4).reshape(2, 4, 4, 4)),
        Refusal(run_id="run-1", round=2, step=5, code="budget_exhausted", reason="epsilon 3.1 > 3.0", final=True),
        Heartbeat(),
        Stop(run_id="run-1", reason="done"),
        ErrorReply(code="replay", detail="seq"),
    ]
    for msg in msgs:
        _, out = codec.decode(frames_of(msg))
        assert type(out) is type(msg)
        for f in dataclasses.fields(msg):
            a, b = getattr(msg, f.name), getattr(out, f.name)
            if isinstance(a, torch.Tensor):
                assert a.dtype == b.dtype and torch.equal(a, b)
            else:
                assert a == b


# --- hand-made bad frames, one per check ---------------------------------------------------------


def test_bad_frame_objects():
    assert code_of([frames_of()[0], "a string", b""]) == "bad_frame"
    assert code_of([123]) == "bad_frame"


def test_frame_count():
    assert code_of([]) == "frame_count"
    assert code_of([b"{}"] * 9) == "frame_count"
    frames = frames_of()
    assert code_of(frames[:2]) == "frame_count"  # fake_batch needs 3
    assert code_of(frames + [b""]) == "frame_count"


def test_sizes():
    frames = frames_of()
    small = WireLimits(max_header_bytes=256, max_tensor_bytes=1024, max_total_bytes=4096)
    assert code_of(frames, limits=small) == "tensor_too_large"
    assert code_of([b" " * 300 + frames[0], *frames[1:]], limits=WireLimits(max_header_bytes=256)) == "header_too_large"
    assert code_of(frames, limits=WireLimits(max_total_bytes=4000, max_header_bytes=1000)) == "message_too_large"


@pytest.mark.parametrize(
    "header",
    [
        b"\xff\xfe garbage",
        b'{"v": 1, "type": "heartbeat"',  # truncated
        b"[1, 2, 3]",  # not an object
        b'{"v": 1, "v": 1}',  # duplicate key
        b'{"v": NaN}',
        b'{"v": Infinity}',
        b'{"v": 1e999}',
        b"[" * 50000 + b"]" * 50000,
        b"",
    ],
)
def test_bad_json(header):
    assert code_of([header], limits=WireLimits(max_header_bytes=200_000, max_total_bytes=200_000)) == "bad_json"


def test_version_and_type():
    frames = frames_of()
    assert code_of(with_header(frames, lambda h: h.update(v=PROTOCOL_VERSION + 1))) == "unsupported_version"
    # protocol 1 sent the exact epsilon with every reply: a version 1 peer is refused, not half understood
    assert code_of(with_header(frames, lambda h: h.update(v=1))) == "unsupported_version"
    assert code_of(with_header(frames, lambda h: h.update(v=True))) == "unsupported_version"
    assert code_of(with_header(frames, lambda h: h.pop("v"))) == "unsupported_version"
    assert code_of(with_header(frames, lambda h: h.update(type="pickle"))) == "unknown_type"
    assert code_of(with_header(frames, lambda h: h.update(type=["fake_batch"]))) == "unknown_type"


def test_envelope_and_body_fields():
    frames = frames_of()
    assert code_of(with_header(frames, lambda h: h.pop("seq"))) == "bad_header"
    assert code_of(with_header(frames, lambda h: h.update(extra=1))) == "bad_header"
    assert code_of(with_header(frames, lambda h: h.update(round=True))) == "bad_type"  # bool is not int
    assert code_of(with_header(frames, lambda h: h.update(round=1.0))) == "bad_type"
    assert code_of(with_header(frames, lambda h: h.update(run=5))) == "bad_type"
    assert code_of(with_header(frames, lambda h: h.update(body=[]))) == "bad_type"
    assert code_of(with_header(frames, lambda h: h["body"].update(extra=1))) == "bad_fields"
    assert code_of(with_header(frames, lambda h: h["body"].pop("attempt"))) == "bad_fields"
    assert code_of(with_header(frames, lambda h: h["body"].update(run_id="run-1"))) == "bad_fields"
    assert code_of(with_header(frames, lambda h: h["body"].update(attempt=False))) == "bad_type"


def test_ranges():
    frames = frames_of()
    assert code_of(with_header(frames, lambda h: h.update(round=-1))) == "out_of_range"
    assert code_of(with_header(frames, lambda h: h.update(seq=2**53))) == "out_of_range"
    assert code_of(with_header(frames, lambda h: h.update(run="x" * 65))) == "out_of_range"
    assert code_of(with_header(frames, lambda h: h.update(run="bad run"))) == "out_of_range"
    assert code_of(with_header(frames, lambda h: h.update(run=""))) == "out_of_range"  # fake_batch needs a run
    assert code_of(with_header(frames, lambda h: h["body"].update(attempt=2**20))) == "out_of_range"
    g = frames_of(GradientReply(run_id="run-1", round=2, step=5, grad=torch.zeros(1, 4, 2, 2), budget_left=1.0))
    assert code_of(with_header(g, lambda h: h["body"].update(budget_left=-0.5))) == "out_of_range"
    assert code_of(with_header(g, lambda h: h["body"].update(budget_left=1.5))) == "out_of_range"
    assert code_of(with_header(g, lambda h: h["body"].update(budget_left="1"))) == "bad_type"
    # the exact epsilon is no field of protocol 2 (it reveals the cohort size)
    assert code_of(with_header(g, lambda h: h["body"].update(epsilon=1.0))) == "bad_fields"
    r = frames_of(Refusal(run_id="run-1", round=2, step=5, code="x", reason="fine"))
    assert code_of(with_header(r, lambda h: h["body"].update(reason="line\nbreak"))) == "out_of_range"
    assert code_of(with_header(r, lambda h: h["body"].update(final=1))) == "bad_type"
    hello = frames_of(Hello(versions=(1,), policy={}))
    deep = {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}
    assert code_of(with_header(hello, lambda h: h["body"].update(policy=deep))) == "out_of_range"
    assert code_of(with_header(hello, lambda h: h["body"].update(versions=[]))) == "out_of_range"
    assert code_of(with_header(hello, lambda h: h["body"].update(versions=[1, "2"]))) == "bad_type"


def test_tensor_table():
    frames = frames_of()
    assert code_of(with_header(frames, lambda h: h["tensors"].pop())) == "bad_tensor_table"
    assert code_of(with_header(frames, lambda h: h["tensors"].reverse())) == "bad_tensor_table"
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(extra=1))) == "bad_tensor_table"
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(shape=[2, 4, 8.0, 8]))) == "bad_tensor_table"
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(nbytes=True))) == "bad_tensor_table"


def test_dtype_shape_size():
    frames = frames_of()
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(dtype="object"))) == "bad_dtype"
    # int64 is in the codec allow-list but not allowed for FakeBatch.cond
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(dtype="int64", shape=[2, 4, 8, 4]))) == "bad_dtype"
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(shape=[2, 4, 8, 8, 1]))) == "bad_shape"
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(shape=[0, 4, 8, 8]))) == "bad_shape"
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(shape=[1, 4, 8, 8]))) == "size_mismatch"
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(nbytes=100))) == "size_mismatch"
    assert code_of([frames[0], frames[1][:-4], frames[2]]) == "size_mismatch"  # truncated buffer
    # shape lie that keeps nbytes consistent but breaks the [B,4,H,W] agreement
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(shape=[2, 4, 4, 16]))) == "bad_shape"
    assert code_of(with_header(frames, lambda h: h["tensors"][0].update(shape=[4, 2, 8, 8]))) == "bad_shape"


def test_non_finite_tensors():
    grad = torch.zeros(1, 4, 2, 2)
    frames = frames_of(GradientReply(run_id="run-1", round=2, step=5, grad=grad))
    bad = grad.clone()
    bad[0, 1, 1, 0] = float("nan")
    raw = bad.numpy().tobytes()
    assert code_of([frames[0], raw]) == "non_finite"
    with pytest.raises(ProtocolError) as exc:
        frames_of(GradientReply(run_id="run-1", round=2, step=5, grad=bad))
    assert exc.value.code == "non_finite"
    inf = frames_of()
    fake = torch.frombuffer(bytearray(inf[2]), dtype=torch.float32).clone()
    fake[3] = float("inf")
    assert code_of([inf[0], inf[1], fake.numpy().tobytes()]) == "non_finite"


# --- validation order: two problems report the earlier check -----------------------------------


def test_validation_order():
    frames = frames_of()

    def both(h):
        h.update(v=99, type="nope")

    assert code_of(with_header(frames, both)) == "unsupported_version"
    # unknown type AND too many frames for the header: count check (before JSON) wins
    assert code_of(with_header(frames, lambda h: h.update(type="nope")) + [b""] * 6) == "frame_count"
    # oversized tensor AND garbage header: size check wins
    assert code_of([b"\xff", frames[1], frames[2]], limits=WireLimits(max_tensor_bytes=16)) == "tensor_too_large"
    # missing envelope key AND bad body type: envelope keys first
    assert code_of(with_header(frames, lambda h: (h.pop("site"), h["body"].update(attempt="x")))) == "bad_header"
    # body type wrong AND envelope out of range: all types before all ranges
    assert code_of(with_header(frames, lambda h: (h.update(round=-1), h["body"].update(attempt="x")))) == "bad_type"
    # out of range AND wrong dtype: header ranges before tensors
    assert code_of(with_header(frames, lambda h: (h.update(seq=-1), h["tensors"][0].update(dtype="x")))) == "out_of_range"
    # wrong dtype on the second tensor AND shape lie on the first: dtype stage covers all tensors first
    assert code_of(with_header(frames, lambda h: (h["tensors"][0].update(nbytes=1), h["tensors"][1].update(dtype="uint8")))) == "bad_dtype"
    # size mismatch AND NaN: sizes first
    nan = torch.full((2, 4, 8, 8), float("nan")).numpy().tobytes()
    assert code_of([frames[0], nan[:-4], frames[2]]) == "size_mismatch"


# --- encode side ------------------------------------------------------------------------------


def test_encode_refuses_envelope_mismatch_and_bad_values():
    with pytest.raises(ProtocolError) as exc:
        codec.encode(batch(), **{**ENV, "round": 3})
    assert exc.value.code == "envelope_mismatch"
    with pytest.raises(ProtocolError) as exc:
        codec.encode(Heartbeat(), **{**ENV, "seq": -1})
    assert exc.value.code == "out_of_range"
    with pytest.raises(ProtocolError) as exc:
        codec.encode(GradientReply(run_id="run-1", round=2, step=5, grad=torch.zeros(1, 4, 2, 2, dtype=torch.float64)), **ENV)
    assert exc.value.code == "bad_dtype"
    with pytest.raises(ProtocolError) as exc:
        codec.encode(batch(), **ENV, limits=WireLimits(max_tensor_bytes=64))
    assert exc.value.code == "tensor_too_large"
    with pytest.raises(ProtocolError) as exc:
        codec.encode(Hello(versions=(1,), policy={"x": object()}), **ENV)
    assert exc.value.code == "out_of_range"


def test_encode_non_contiguous_tensor():
    fake = torch.rand(2, 8, 8, 4).permute(0, 3, 1, 2)
    msg = FakeBatch(run_id="run-1", round=2, step=5, cond=fake.clone(), fake=fake)
    _, out = codec.decode(frames_of(msg))
    assert torch.equal(out.fake, fake)


def test_limits_and_maxmsgsize():
    lim = WireLimits()
    assert 64 * 4 * 64 * 64 * 4 <= lim.max_tensor_bytes
    assert 2 * 64 * 4 * 64 * 64 * 4 + lim.max_header_bytes <= lim.max_total_bytes
    assert max_message_bytes(lim) == lim.max_tensor_bytes
    with pytest.raises(ValueError):
        WireLimits(max_frames=0)
    with pytest.raises(ValueError):
        WireLimits(max_total_bytes=10, max_header_bytes=100)
    # a batch of 64 at 64x64 decodes under the default limits
    big = FakeBatch(run_id="r", round=0, step=0, cond=torch.zeros(64, 4, 64, 64), fake=torch.zeros(64, 4, 64, 64))
    codec.decode(codec.encode(big, run_id="r", round=0, step=0, site="", seq=0, limits=lim), limits=lim)


def test_error_codes_are_short_stable_strings():
    for code, meaning in PROTOCOL_ERRORS.items():
        assert code.isidentifier() and code.islower() and len(code) <= 24
        assert meaning and "\n" not in meaning


def test_frozen_wire_examples():
    from pathlib import Path

    data = json.loads((Path(__file__).resolve().parents[2] / "vectors" / "wire_examples.json").read_text())
    for case in data["cases"]:
        frames = [case["frames"][0].encode("utf-8"), *(bytes.fromhex(h) for h in case["frames"][1:])]
        env, msg = codec.decode(frames)
        assert (env.run_id, env.round, env.step, env.site, env.seq) == tuple(case["envelope"][k] for k in
                                                                           ("run_id", "round", "step", "site", "seq"))
        m = case["message"]
        dtype = getattr(torch, m["dtype"])
        if m["type"] == "fake_batch":
            expect = FakeBatch(run_id=env.run_id, round=env.round, step=env.step, attempt=m["attempt"],
                               cond=torch.tensor(m["cond"], dtype=dtype), fake=torch.tensor(m["fake"], dtype=dtype))
            assert torch.equal(msg.cond, expect.cond) and torch.equal(msg.fake, expect.fake)
        else:
            expect = GradientReply(run_id=env.run_id, round=env.round, step=env.step, budget_left=m["budget_left"],
                                   attempt=m["attempt"], grad=torch.tensor(m["grad"], dtype=dtype))
            assert torch.equal(msg.grad, expect.grad) and msg.budget_left == expect.budget_left
        # and encoding the expected message reproduces the frozen bytes exactly
        assert codec.encode(expect, **case["envelope"]) == frames

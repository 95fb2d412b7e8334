"""Hypothesis, field by field: for every message type, every envelope field, every body field and
every tensor-table field, an arbitrary JSON value in its place (huge integers, -0.0, nested
containers, very long strings, ...) either decodes to a valid message or raises ProtocolError
with a documented code, never anything else and never the codec's catch-all ``malformed`` (which
would mean a check that itself crashed).

Valid headers are built from the tables the codec reads (schema.BODY_SPECS, TENSOR_SPECS, derived
from the messages' field declarations), so a field added to a message is covered without touching
this file.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from secgan.net import codec, fields, schema
from secgan.net.errors import PROTOCOL_ERRORS
from secgan.net.limits import WireLimits
from secgan.net.schema import PROTOCOL_VERSION
from secgan.core.errors import ProtocolError
from secgan.net.schema import MESSAGE_TYPES

LIMITS = WireLimits()
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)

# values every check must survive, whatever the field
NASTY = [
    10**400, -(10**400), 2**53, 2**63, -1, -0.0, 0.0, 1e308, -1e308, 5e-324, True, False, None, "",
    "x" * 100_000, "\u0000", "\ud800", "\u2028", [], {}, [[[[[[[[[[1]]]]]]]]]], {"a": {"b": {"c": {"d": {"e": 1}}}}},
    [10**400], {"k": 10**400}, [None] * 1000, {"x" * 100: "y"}, 1.5, 65, "float32", ["a", "b"],
]

json_leaf = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**20, max_value=10**400)
             | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([-0.0, 1e308, -1e308])
             | st.text(max_size=40) | st.integers(1000, 70_000).map(lambda n: "y" * n))
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
                        max_leaves=25)


def valid_value(spec: fields.Spec):
    """A value ``spec`` accepts (its smallest one)."""
    if isinstance(spec, fields.IntList):
        return [spec.item.lo] * spec.min_len
    if isinstance(spec, fields.Int):
        return spec.lo
    if isinstance(spec, fields.Bool):
        return False
    if isinstance(spec, fields.OptFloat):
        return spec.lo
    if isinstance(spec, fields.Float):
        return spec.hi
    if isinstance(spec, fields.Id):
        return "a" * max(1, spec.min_len)
    if isinstance(spec, fields.Text):
        return "text"
    if isinstance(spec, fields.Hex):
        return "0" * spec.length
    if isinstance(spec, fields.IdKeyList):
        return [["site-1", "0" * 64]]
    if isinstance(spec, fields.JsonObject):
        return {"mode": "off"}
    raise AssertionError(f"no valid example for {type(spec).__name__}: add one here")


def valid_frames(mtype: str) -> tuple[dict, list[bytes]]:
    body = {k: valid_value(spec) for k, spec in schema.BODY_SPECS[mtype].items()}
    table, frames = [], []
    for name, spec in schema.TENSOR_SPECS.get(mtype, ()):
        dtypes = spec.dtypes
        # the declared shape pattern (named lengths 1 for "B", else 4 or 2), or [1, 4, 2, 2] when free
        shape = (1, 4, 2, 2) if spec.shape is None else tuple(
            d if isinstance(d, int) else {"B": 1, "C": 4, "K": 4}.get(d, 2) for d in spec.shape)
        t = torch.zeros(shape, dtype=codec.DTYPES[dtypes[0]][0])
        raw = codec._tensor_bytes(t)
        table.append({"name": name, "dtype": dtypes[0], "shape": list(t.shape), "nbytes": len(raw)})
        frames.append(raw)
    header = {"v": PROTOCOL_VERSION, "type": mtype, "run": "run-1", "round": 1, "step": 1, "site": "site-1", "seq": 5,
              "body": body, "tensors": table}
    return header, frames


# (message type, where, key): every field the codec reads
FIELDS = sorted(
    [(m, "envelope", k) for m in MESSAGE_TYPES for k in sorted(codec.ENVELOPE_KEYS)]
    + [(m, "body", k) for m in MESSAGE_TYPES for k in schema.BODY_SPECS[m]]
    + [(m, "tensor", k) for m in MESSAGE_TYPES if schema.TENSOR_SPECS.get(m) for k in sorted(codec.TENSOR_KEYS)]
)


def substitute(mtype: str, where: str, key: str, value, **envelope) -> list[bytes]:
    """A valid message of type ``mtype`` with one field (``where``: envelope, body or tensor) set to
    ``value``; ``envelope``: envelope fields set first (run, round, seq, ...)."""
    header, frames = valid_frames(mtype)
    header.update(envelope)
    if where == "envelope":
        header[key] = value
    elif where == "body":
        header["body"][key] = value
    else:
        header["tensors"][0][key] = value
    return [json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogatepass"), *frames]


def decodes_or_refuses(frames: list[bytes]) -> None:
    try:
        env, msg = codec.decode(frames, limits=LIMITS)
    except ProtocolError as exc:
        assert exc.code in PROTOCOL_ERRORS and exc.code != "malformed", (exc.code, exc.detail)
        return
    # a valid message: re-encoding it under the same limits must succeed (encode checks the same rules)
    again = codec.encode(msg, run_id=env.run_id, round=env.round, step=env.step, site=env.site, seq=env.seq,
                        limits=LIMITS)
    assert codec.decode(again, limits=LIMITS)[0] == env


def test_every_valid_base_message_decodes():
    for mtype in MESSAGE_TYPES:
        header, frames = valid_frames(mtype)
        env, msg = codec.decode([json.dumps(header).encode(), *frames], limits=LIMITS)
        assert type(msg) is MESSAGE_TYPES[mtype] and env.type == mtype


@pytest.mark.parametrize(("mtype", "where", "key"), FIELDS, ids=lambda v: str(v))
def test_nasty_values_in_every_field(mtype, where, key):
    for value in NASTY:
        decodes_or_refuses(substitute(mtype, where, key, value))


@pytest.mark.parametrize(("mtype", "where", "key"), FIELDS, ids=lambda v: str(v))
@SETTINGS
@given(value=json_any)
@example(value=10**400)
@example(value=-0.0)
def test_arbitrary_json_in_every_field(mtype, where, key, value):
    decodes_or_refuses(substitute(mtype, where, key, value))


@pytest.mark.parametrize("mtype", ["gradient", "secagg_masked"])
def test_huge_integer_budget_is_out_of_range(mtype):
    """The reported crash: 10**400 in a float field (then `epsilon`, now `budget_left`) was an
    OverflowError, not a ProtocolError."""
    with pytest.raises(ProtocolError) as exc:
        codec.decode(substitute(mtype, "body", "budget_left", 10**400), limits=LIMITS)
    assert exc.value.code == "out_of_range"


def test_huge_integer_clip_is_out_of_range():
    with pytest.raises(ProtocolError) as exc:
        codec.decode(substitute("secagg_announce", "body", "clip", 10**400), limits=LIMITS)
    assert exc.value.code == "out_of_range"


def test_integer_and_negative_zero_floats_decode_as_plain_floats():
    _, msg = codec.decode(substitute("gradient", "body", "budget_left", -0.0), limits=LIMITS)
    assert msg.budget_left == 0.0 and str(msg.budget_left) == "0.0"
    _, msg = codec.decode(substitute("gradient", "body", "budget_left", 1), limits=LIMITS)
    assert type(msg.budget_left) is float and msg.budget_left == 1.0


def test_a_check_that_crashes_is_still_a_protocol_error(monkeypatch):
    """Defence in depth: whatever a check raises, decode raises ProtocolError("malformed")."""
    def boom(self, v):
        raise OverflowError("a defect in a check")

    monkeypatch.setattr(fields.Text, "range_ok", boom)
    with pytest.raises(ProtocolError) as exc:
        codec.decode(substitute("stop", "body", "reason", "x"), limits=LIMITS)
    assert exc.value.code == "malformed" and exc.value.detail == "OverflowError"

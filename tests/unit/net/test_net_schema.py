"""One schema: every message field is declared once, beside its type, and the codec's tables are
derived from those declarations (a field added without a declaration fails here)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from secgan.core.errors import ProtocolError
from secgan.net import codec, fields, schema
from secgan.net.schema import MESSAGE_TYPES, FakeBatch, GradientReply, SecAggMasked

ENV = dict(run_id="r", round=1, step=0, site="site-1", seq=1)


@pytest.mark.parametrize("mtype", sorted(MESSAGE_TYPES))
def test_every_field_has_exactly_one_declaration(mtype):
    cls = MESSAGE_TYPES[mtype]
    decl = schema.declarations(cls)
    assert list(decl) == [f.name for f in dataclasses.fields(cls)]
    body = set(schema.BODY_SPECS[mtype])
    tensors = {n for n, _ in schema.TENSOR_SPECS.get(mtype, ())}
    mirrored = {n for n, s in decl.items() if s is fields.ENVELOPE}
    # body, tensors and envelope fields partition the dataclass fields: each field in one table
    assert body | tensors | mirrored == set(decl)
    assert len(body) + len(tensors) + len(mirrored) == len(decl)
    assert mirrored <= set(schema.MIRRORED)


@pytest.mark.parametrize("mtype", sorted(MESSAGE_TYPES))
def test_the_codec_tables_are_the_dataclass_declarations(mtype):
    by_name = {f.name: f.metadata[schema.WIRE] for f in dataclasses.fields(MESSAGE_TYPES[mtype])}
    for name, spec in schema.BODY_SPECS[mtype].items():
        assert spec is by_name[name]
    for name, spec in schema.TENSOR_SPECS.get(mtype, ()):
        assert spec is by_name[name]
    # frame order is field order
    assert [n for n, _ in schema.TENSOR_SPECS.get(mtype, ())] == [
        n for n, s in by_name.items() if isinstance(s, fields.Tensor)]


def test_tables_cover_every_message_field():
    assert set(schema.BODY_SPECS) == set(MESSAGE_TYPES)
    for mtype, cls in MESSAGE_TYPES.items():
        names = {f.name for f in dataclasses.fields(cls)}
        tensors = {n for n, _ in schema.TENSOR_SPECS.get(mtype, ())}
        assert names == set(schema.BODY_SPECS[mtype]) | tensors | (names & set(schema.MIRRORED)), mtype


def test_a_field_added_without_a_declaration_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Extended(GradientReply):
        note: str = ""

    with pytest.raises(TypeError, match="note has no wire declaration"):
        schema.declarations(Extended)
    with pytest.raises(TypeError, match="note"):
        schema.body_specs(Extended)

    @dataclasses.dataclass(frozen=True)
    class Declared(GradientReply):
        note: str = schema.body(fields.Text(), default="")

    assert isinstance(schema.body_specs(Declared)["note"], fields.Text)


def test_envelope_declarations_are_only_the_envelope_fields():
    @dataclasses.dataclass(frozen=True)
    class WrongEnvelope:
        TYPE = "x"
        note: str = schema.envelope()

    with pytest.raises(TypeError, match="carried in the envelope"):
        schema.declarations(WrongEnvelope)

    @dataclasses.dataclass(frozen=True)
    class RoundInBody:
        TYPE = "x"
        round: int = schema.body(fields.Int())

    with pytest.raises(TypeError, match="must be declared envelope"):
        schema.declarations(RoundInBody)


def _code(fn, *a, **kw) -> str:
    with pytest.raises(ProtocolError) as exc:
        fn(*a, **kw)
    return exc.value.code


@pytest.mark.parametrize(
    "msg, code",
    [
        (FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(2, 4, 8, 8, dtype=torch.float64),
                   fake=torch.zeros(2, 4, 8, 8)), "bad_dtype"),
        (FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(2, 4, 8, 8), fake=torch.zeros(2, 4, 8, 4)), "bad_shape"),
        (FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(2, 4, 8), fake=torch.zeros(2, 4, 8)), "bad_shape"),
        (FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(2, 4, 8, 8),
                   fake=torch.full((2, 4, 8, 8), float("nan"))), "non_finite"),
        (GradientReply(run_id="r", round=1, step=0, grad=torch.zeros(2, 1, 8)), "bad_shape"),
        (GradientReply(run_id="r", round=1, step=0, grad=torch.zeros(2, 4, 8, 8, dtype=torch.float16)), "bad_dtype"),
        (GradientReply(run_id="r", round=1, step=0, grad=torch.full((1, 4, 2, 2), float("inf"))), "non_finite"),
        (SecAggMasked(run_id="r", round=1, step=0, attempt=0, set_digest="0" * 64,
                      masked=torch.zeros(3, dtype=torch.float32)), "bad_dtype"),
    ],
)
def test_check_tensors_is_the_codecs_own_check(msg, code):
    # the in-process path (check_tensors on a message) and the codec refuse the same tensors the same way
    assert _code(codec.check_tensors, msg) == code
    assert _code(codec.encode, msg, **ENV) == code


def test_channel_counts_are_the_specs_and_the_site_checks_them():
    # the codec carries any C and K (they are the run's, secgan.core.spec.ImageSpec) but still the
    # agreement of B, H, W; the site's check refuses what is not its own spec (before any charge)
    from secgan.core.spec import ImageSpec
    from sites.checks import check_fake_batch

    three = FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(2, 3, 16, 16), fake=torch.zeros(2, 3, 16, 16))
    codec.check_tensors(three)
    codec.decode(codec.encode(three, **ENV))
    assert _code(check_fake_batch, three, ImageSpec(size=16)) == "bad_shape"
    one = FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(2, 4, 16, 16), fake=torch.zeros(2, 1, 16, 16))
    assert _code(check_fake_batch, one, ImageSpec(size=16)) == "bad_shape"


def test_check_tensors_accepts_what_the_codec_carries():
    ok = [
        FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(2, 4, 8, 8), fake=torch.zeros(2, 4, 8, 8)),
        GradientReply(run_id="r", round=1, step=0, grad=torch.zeros(2, 4, 8, 8, dtype=torch.int64)),
        SecAggMasked(run_id="r", round=1, step=0, attempt=0, set_digest="0" * 64, masked=torch.zeros(5, dtype=torch.uint8)),
    ]
    for msg in ok:
        codec.check_tensors(msg)
        codec.decode(codec.encode(msg, **ENV))
    with pytest.raises(ProtocolError) as exc:
        codec.check_tensors(GradientReply(run_id="r", round=1, step=0, grad=[[0.0]]))
    assert exc.value.code == "bad_type"

"""The protocol's messages, each field declared once: its Python type, and beside it its wire spec.

Every dataclass field carries its spec in ``metadata["wire"]`` (:func:`body`, :func:`tensor`,
:func:`envelope`): a :class:`~secgan.net.fields.Spec` (a JSON body field, with its type and range),
a :class:`~secgan.net.fields.Tensor` (dtypes and shape) or :data:`~secgan.net.fields.ENVELOPE`
(``run_id``, ``round``, ``step``: carried in the envelope). The codec derives its tables
(:data:`BODY_SPECS`, :data:`TENSOR_SPECS`) from these declarations, so adding a field means touching
one place; a field without a declaration is refused when the tables are built.

The step core produces and consumes these messages; the codec (:mod:`secgan.net.codec`) carries
them between processes; the in-process runner passes them directly. Tensors are CPU
``torch.Tensor``s. Adding a message type means adding a dataclass here and to ``MESSAGE_TYPES``.

Secure-sum round flow (attempt a of step s of round r):
  coordinator -> every participant: FakeBatch (same cond/fake to all, sent once per round) and
                                    SecAggAnnounce (participant set, keys as relayed, codec, digest)
  site -> coordinator:              SecAggMasked (masked fixed-point words packed to k bits, same digest)
                                    or Refusal
On a missed deadline the coordinator sends a new SecAggAnnounce (attempt a + 1, smaller set);
sites re-mask the gradient they already computed for (r, s) with fresh masks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from secgan.core.spec import ImageSpec
from secgan.net.fields import (
    ENVELOPE,
    MAX_INT,
    Bool,
    Float,
    Hex,
    Id,
    IdKeyList,
    Int,
    IntList,
    JsonObject,
    OptFloat,
    Spec,
    Tensor,
    Text,
)

# 2: Welcome carries planned_steps; GradientReply and SecAggMasked carry a coarse budget_left
# instead of the exact epsilon (which gave away the cohort size); the coordinator answers
# heartbeats. Version 1 peers are refused (unsupported_version), never half understood.
# 3: SecAggMasked carries its ring words packed to the attempt's modulus_bits (uint8, the layout of
# secgan.secagg.packing) instead of one int64 a word. Version 2 peers are refused the same way: a
# version 2 vector is never read as packed bytes (nor the reverse), so a mixed federation gets
# unsupported_version, not a garbled sum.
PROTOCOL_VERSION = 3
# the versions this code speaks (a site offers them in Hello; the codec accepts no other)
SUPPORTED_VERSIONS: tuple[int, ...] = (PROTOCOL_VERSION,)
# how a round combines the sites' gradients: routed one by one, or a masked secure sum
AGGREGATIONS = ("routed", "secure-sum")

WIRE = "wire"  # the metadata key of a field's declaration


def body(spec: Spec, **kw: Any) -> Any:
    """A JSON body field checked by ``spec``."""
    return dataclasses.field(metadata={WIRE: spec}, **kw)


def tensor(*dtypes: str, shape: tuple[int | str, ...] | None = None) -> Any:
    """A tensor field (one frame) of one of ``dtypes``, following ``shape`` (see fields.Tensor)."""
    return dataclasses.field(metadata={WIRE: Tensor(tuple(dtypes), shape)})


def envelope() -> Any:
    """A field carried in the envelope (run_id, round, step), not in the body."""
    return dataclasses.field(metadata={WIRE: ENVELOPE})


ATTEMPT = Int(0, 2**16)
# Shape patterns (see fields.Tensor): every image tensor of a batch is [B, C, H, W] and a spatial
# condition [B, K, H, W], the same B, H, W; C and K are the run's (secgan.core.spec.ImageSpec), so
# the codec checks the agreement and the site checks C, K and H = W = image.size
# (``batch_tensor_shapes``) before anything is charged.
BATCH_SHAPE = ("B", "C", "H", "W")
COND_SHAPE = ("B", "K", "H", "W")


@dataclass(frozen=True)
class Envelope:
    """Routing and ordering information of one message (header frame minus body and tensors)."""

    version: int
    type: str
    run_id: str
    round: int
    step: int
    site: str
    seq: int


@dataclass(frozen=True)
class Hello:
    """site -> coordinator: first message after connecting."""

    TYPE: ClassVar[str] = "hello"
    versions: tuple[int, ...] = body(IntList(1, 1000))
    # the site's policy summary (mode, target epsilon, sources accepted, ...)
    policy: dict[str, Any] = body(JsonObject())
    resume_step: int = body(Int(), default=0)


@dataclass(frozen=True)
class Welcome:
    """coordinator -> site: run parameters agreed for this session."""

    TYPE: ClassVar[str] = "welcome"
    version: int = body(Int(1, 1000))
    run_id: str = envelope()
    image_size: int = body(Int(1, 4096))
    model: dict[str, Any] = body(JsonObject())
    condition_source: str = body(Id(1, 32))
    # the run's generator steps (coordinator train.steps): each asks every site for one private D
    # update, plus one more for every failed round that is retried; a site compares it with the
    # steps its noise was calibrated for (policy.planned_steps)
    planned_steps: int = body(Int(1, MAX_INT))
    aggregation: str = body(Id(1, 32), default="routed")
    # the run's image spec without its size (``ImageSpec.wire_form``): channels, value range,
    # condition kind, names; a site whose own spec differs refuses the run (image_spec_mismatch)
    image: dict[str, Any] = body(JsonObject(), default_factory=ImageSpec().wire_form)


@dataclass(frozen=True)
class FakeBatch:
    """coordinator -> site: step s of round r, spatial conditions (labelmap, instances) and G(conditions)."""

    TYPE: ClassVar[str] = "fake_batch"
    run_id: str = envelope()
    round: int = envelope()
    step: int = envelope()
    cond: torch.Tensor = tensor("float32", shape=COND_SHAPE)
    fake: torch.Tensor = tensor("float32", shape=BATCH_SHAPE)
    attempt: int = body(ATTEMPT, default=0)


@dataclass(frozen=True)
class ClassBatch:
    """coordinator -> site: a FakeBatch of a class-conditional run: one int64 class label per row."""

    TYPE: ClassVar[str] = "class_batch"
    run_id: str = envelope()
    round: int = envelope()
    step: int = envelope()
    labels: torch.Tensor = tensor("int64", shape=("B",))
    fake: torch.Tensor = tensor("float32", shape=BATCH_SHAPE)
    attempt: int = body(ATTEMPT, default=0)


@dataclass(frozen=True)
class FreeBatch:
    """coordinator -> site: a FakeBatch of an unconditional run (condition "none"): no condition
    tensor at all (the codec refuses zero-size dimensions, and nothing is the honest encoding)."""

    TYPE: ClassVar[str] = "free_batch"
    run_id: str = envelope()
    round: int = envelope()
    step: int = envelope()
    fake: torch.Tensor = tensor("float32", shape=BATCH_SHAPE)
    attempt: int = body(ATTEMPT, default=0)


@dataclass(frozen=True)
class GradientReply:
    """site -> coordinator: dL_G/d(fake) for the FakeBatch of the same (run, round, step)."""

    TYPE: ClassVar[str] = "gradient"
    run_id: str = envelope()
    round: int = envelope()
    step: int = envelope()
    # same shape as fake, float32 (int64 fixed point mod 2^k in secure-sum mode)
    grad: torch.Tensor = tensor("float32", "int64", shape=BATCH_SHAPE)
    # fraction of the site's budget left after this release, rounded DOWN to a coarse step
    # (secgan.privacy.disclosure); None if DP is off. Never the exact epsilon (it reveals n).
    budget_left: float | None = body(OptFloat(0.0, 1.0), default=None)
    attempt: int = body(ATTEMPT, default=0)


@dataclass(frozen=True)
class Refusal:
    """site -> coordinator: the site will not serve this step (e.g. ``budget_exhausted``)."""

    TYPE: ClassVar[str] = "refusal"
    run_id: str = envelope()
    round: int = envelope()
    step: int = envelope()
    code: str = body(Id(1, 64))
    reason: str = body(Text())
    # True: the site will not serve any further step of this run
    final: bool = body(Bool(), default=False)


@dataclass(frozen=True)
class Heartbeat:
    TYPE: ClassVar[str] = "heartbeat"


@dataclass(frozen=True)
class Stop:
    """coordinator -> site: the run is over."""

    TYPE: ClassVar[str] = "stop"
    run_id: str = envelope()
    reason: str = body(Text())


@dataclass(frozen=True)
class StopAck:
    """site -> coordinator: the final Stop of ``run_id`` was received; the site is ending. A
    coordinator that lingers after its run (``stop_linger_s``) closes once every site that joined
    has acknowledged (added within protocol 2: a coordinator without it answers ``unknown_type``
    to a site that is exiting anyway, and one with it waits at most its linger for a site without)."""

    TYPE: ClassVar[str] = "stop_ack"
    run_id: str = envelope()


@dataclass(frozen=True)
class ErrorReply:
    """Either direction: the last message was rejected. ``code`` is a ProtocolError code."""

    TYPE: ClassVar[str] = "error"
    code: str = body(Id(1, 64))
    detail: str = body(Text(), default="")


@dataclass(frozen=True)
class SecAggAnnounce:
    """coordinator -> site (secure-sum mode): the exact participant set and ring of one attempt.

    The keys are relayed as the coordinator claims them; each site checks them against its own
    verified manifest (``secgan.secagg.SecureSumClient.check``)."""

    TYPE: ClassVar[str] = "secagg_announce"
    run_id: str = envelope()
    round: int = envelope()
    step: int = envelope()
    attempt: int = body(ATTEMPT)
    # [[site_id, x25519_public_hex], ...] sorted by site id
    participants: list[list[str]] = body(IdKeyList())
    frac_bits: int = body(Int(0, 48))
    clip: float = body(Float(0.0, 1e12, lo_open=True))
    modulus_bits: int = body(Int(2, 63))
    shape: list[int] = body(IntList(1, 2**31, 1, 8))  # shape of the gradient (= the fake batch)
    # hex SHA-256 of the attempt context (secgan.secagg.context.RoundContext)
    set_digest: str = body(Hex(64))


@dataclass(frozen=True)
class SecAggMasked:
    """site -> coordinator (secure-sum mode): one masked contribution, its ring elements packed to
    the attempt's ``modulus_bits`` k (protocol 3).

    ``masked`` is uint8 of shape ``[..., ceil(W * k / 8)]`` for the announced shape ``[..., W]``:
    each row of W ring words mod 2^k packed into ceil(W * k / 8) bytes, word i in bits
    [i*k, (i+1)*k) of the row read as one little-endian integer, the row's unused high bits zero
    (``secgan.secagg.packing``: ``pack_words`` at the site, ``unpack_words`` at the coordinator,
    which refuses another shape or a set unused bit with ``secagg_bad_vector``)."""

    TYPE: ClassVar[str] = "secagg_masked"
    run_id: str = envelope()
    round: int = envelope()
    step: int = envelope()
    attempt: int = body(ATTEMPT)
    set_digest: str = body(Hex(64))
    # ring words packed to k bits a word, the last axis of the announced (gradient) shape packed
    masked: torch.Tensor = tensor("uint8")
    budget_left: float | None = body(OptFloat(0.0, 1.0), default=None)  # as GradientReply.budget_left


Message = (
    Hello | Welcome | FakeBatch | ClassBatch | FreeBatch | GradientReply | Refusal | Heartbeat | Stop | ErrorReply
    | SecAggAnnounce | SecAggMasked | StopAck
)

MESSAGE_TYPES: dict[str, type] = {
    cls.TYPE: cls
    for cls in (Hello, Welcome, FakeBatch, GradientReply, Refusal, Heartbeat, Stop, ErrorReply, SecAggAnnounce,
                SecAggMasked, ClassBatch, FreeBatch, StopAck)
}

# the batch a coordinator sends for each condition kind (one per step and site, or per round in secure-sum)
Batch = FakeBatch | ClassBatch | FreeBatch
BATCH_TYPES: tuple[type, ...] = (FakeBatch, ClassBatch, FreeBatch)
BATCH_OF_KIND: dict[str, type] = {"labelmap": FakeBatch, "instances": FakeBatch, "class": ClassBatch, "none": FreeBatch}


def batch_message(image: ImageSpec, *, run_id: str, round: int, step: int, cond: torch.Tensor, fake: torch.Tensor,
                  attempt: int = 0) -> Batch:
    """The batch message of ``image``'s condition kind from conditions in their internal form
    (``secgan.core.spec``): a class one-hot becomes its int64 label, "none" sends no condition."""
    kind = image.condition
    if kind == "class":
        return ClassBatch(run_id=run_id, round=round, step=step, labels=cond.flatten(1).argmax(dim=1).to(torch.int64),
                          fake=fake, attempt=attempt)
    if kind == "none":
        return FreeBatch(run_id=run_id, round=round, step=step, fake=fake, attempt=attempt)
    return FakeBatch(run_id=run_id, round=round, step=step, cond=cond, fake=fake, attempt=attempt)


def batch_tensor_shapes(image: ImageSpec, batch: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Field -> (dtype, exact shape) of every tensor of a ``batch``-row batch message for ``image``."""
    s = image.size
    fake = ("float32", (batch, image.image_channels, s, s))
    if image.condition == "class":
        return {"labels": ("int64", (batch,)), "fake": fake}
    if image.condition == "none":
        return {"fake": fake}
    return {"cond": ("float32", (batch, image.cond_channels, s, s)), "fake": fake}


def batch_problem(msg: Batch, image: ImageSpec) -> str | None:
    """None when ``msg`` is the batch message of ``image`` (type, dtypes, exact shapes, labels in
    range), else a sentence saying what differs (the caller raises ProtocolError bad_shape)."""
    want = BATCH_OF_KIND[image.condition]
    if type(msg) is not want:
        return f"a {msg.TYPE} message for a run whose condition is {image.condition!r} ({want.TYPE} expected)"
    rows = msg.fake.shape[0] if isinstance(msg.fake, torch.Tensor) and msg.fake.dim() else 0
    for name, (dtype, shape) in batch_tensor_shapes(image, rows).items():
        t = getattr(msg, name)
        if not isinstance(t, torch.Tensor) or str(t.dtype) != f"torch.{dtype}" or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            return f"{name} {got} is not {dtype} {list(shape)}"
    if isinstance(msg, ClassBatch) and msg.labels.numel() and (
            int(msg.labels.min()) < 0 or int(msg.labels.max()) >= image.cond_channels):
        return f"class labels must lie in 0..{image.cond_channels - 1}"
    return None


def batch_conditions(msg: Batch, image: ImageSpec) -> torch.Tensor:
    """The conditions of a checked batch message (``batch_problem`` is None) in their internal form."""
    rows = msg.fake.shape[0]
    if isinstance(msg, ClassBatch):
        out = torch.zeros((rows, image.cond_channels, 1, 1), dtype=torch.float32)
        out[torch.arange(rows), msg.labels, 0, 0] = 1.0
        return out
    if isinstance(msg, FreeBatch):
        return torch.zeros((rows, 0, 1, 1), dtype=torch.float32)
    return msg.cond

# message field -> Envelope attribute, for the fields declared envelope()
MIRRORED = {"run_id": "run_id", "round": "round", "step": "step"}


def declarations(cls: type) -> dict[str, Spec | Tensor | object]:
    """Field name -> its one declaration, in field order. TypeError for a field without one (or
    an envelope() field the envelope does not carry)."""
    out: dict[str, Spec | Tensor | object] = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(WIRE)
        if not isinstance(spec, (Spec, Tensor)) and spec is not ENVELOPE:
            raise TypeError(f"{cls.__name__}.{f.name} has no wire declaration (use body, tensor or envelope)")
        if spec is ENVELOPE and f.name not in MIRRORED:
            raise TypeError(f"{cls.__name__}.{f.name}: only {sorted(MIRRORED)} are carried in the envelope")
        if f.name in MIRRORED and spec is not ENVELOPE:
            raise TypeError(f"{cls.__name__}.{f.name} must be declared envelope()")
        out[f.name] = spec
    return out


def body_specs(cls: type) -> dict[str, Spec]:
    return {k: s for k, s in declarations(cls).items() if isinstance(s, Spec)}


def tensor_specs(cls: type) -> tuple[tuple[str, Tensor], ...]:
    return tuple((k, s) for k, s in declarations(cls).items() if isinstance(s, Tensor))


# Derived tables the codec reads: body fields per type (envelope fields excluded) and tensor
# fields per type, in frame order (= field order).
BODY_SPECS: dict[str, dict[str, Spec]] = {t: body_specs(cls) for t, cls in MESSAGE_TYPES.items()}
TENSOR_SPECS: dict[str, tuple[tuple[str, Tensor], ...]] = {
    t: specs for t, cls in MESSAGE_TYPES.items() if (specs := tensor_specs(cls))
}

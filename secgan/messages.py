"""Typed protocol messages. The step core produces and consumes these; the wire codec
(``secgan.wire``) carries them between processes; the in-process runner passes them directly.

Tensors are CPU ``torch.Tensor``s of an allowed dtype. Header fields (everything that is not a
tensor) must be JSON-representable (str, int, float, bool, None, lists and dicts of those).
Adding a message type means adding a dataclass here and registering it in ``MESSAGE_TYPES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

# 2: Welcome carries planned_steps; GradientReply and SecAggMasked carry a coarse budget_left
# instead of the exact epsilon (which gave away the cohort size); the coordinator answers
# heartbeats. Version 1 peers are refused (unsupported_version), never half understood.
PROTOCOL_VERSION = 2


@dataclass(frozen=True)
class Hello:
    """site -> coordinator: first message after connecting."""

    TYPE: ClassVar[str] = "hello"
    versions: tuple[int, ...]
    policy: dict[str, Any]  # the site's policy summary (mode, target epsilon, sources accepted, ...)
    resume_step: int = 0


@dataclass(frozen=True)
class Welcome:
    """coordinator -> site: run parameters agreed for this session."""

    TYPE: ClassVar[str] = "welcome"
    version: int
    run_id: str
    image_size: int
    model: dict[str, Any]
    condition_source: str
    # the run's generator steps (coordinator train.steps): each asks every site for one private D
    # update, plus one more for every failed round that is retried; a site compares it with the
    # steps its noise was calibrated for (policy.planned_steps)
    planned_steps: int
    aggregation: str = "routed"


@dataclass(frozen=True)
class FakeBatch:
    """coordinator -> site: step s of round r, conditions and G(conditions)."""

    TYPE: ClassVar[str] = "fake_batch"
    run_id: str
    round: int
    step: int
    cond: torch.Tensor  # [B, 4, H, W] float32
    fake: torch.Tensor  # [B, 4, H, W] float32
    attempt: int = 0


@dataclass(frozen=True)
class GradientReply:
    """site -> coordinator: dL_G/d(fake) for the FakeBatch of the same (run, round, step)."""

    TYPE: ClassVar[str] = "gradient"
    run_id: str
    round: int
    step: int
    grad: torch.Tensor  # same shape as fake, float32 (or int64 fixed point in secure-sum mode)
    # fraction of the site's budget left after this release, rounded DOWN to a coarse step
    # (secgan.privacy.disclosure); None if DP is off. Never the exact epsilon (it reveals n).
    budget_left: float | None = None
    attempt: int = 0


@dataclass(frozen=True)
class Refusal:
    """site -> coordinator: the site will not serve this step (e.g. ``budget_exhausted``)."""

    TYPE: ClassVar[str] = "refusal"
    run_id: str
    round: int
    step: int
    code: str
    reason: str
    final: bool = False  # True: the site will not serve any further step of this run


@dataclass(frozen=True)
class Heartbeat:
    TYPE: ClassVar[str] = "heartbeat"


@dataclass(frozen=True)
class Stop:
    """coordinator -> site: the run is over."""

    TYPE: ClassVar[str] = "stop"
    run_id: str
    reason: str


@dataclass(frozen=True)
class ErrorReply:
    """Either direction: the last message was rejected. ``code`` is a ProtocolError code."""

    TYPE: ClassVar[str] = "error"
    code: str
    detail: str = ""


@dataclass(frozen=True)
class SecAggAnnounce:
    """coordinator -> site (secure-sum mode): the exact participant set and ring of one attempt.

    The keys are relayed as the coordinator claims them; each site checks them against its own
    verified manifest (``secgan.secagg.SecureSumClient.check``)."""

    TYPE: ClassVar[str] = "secagg_announce"
    run_id: str
    round: int
    step: int
    attempt: int
    participants: list[list[str]]  # [[site_id, x25519_public_hex], ...] sorted by site id
    frac_bits: int
    clip: float
    modulus_bits: int
    shape: list[int]  # shape of the gradient (= the fake batch)
    set_digest: str  # hex SHA-256 of the attempt context (secgan.secagg.protocol.RoundContext)


@dataclass(frozen=True)
class SecAggMasked:
    """site -> coordinator (secure-sum mode): one masked contribution. ``masked`` is int64 holding
    ring elements (uint64 reinterpreted), in the announced shape."""

    TYPE: ClassVar[str] = "secagg_masked"
    run_id: str
    round: int
    step: int
    attempt: int
    set_digest: str
    masked: torch.Tensor  # announced shape, int64
    budget_left: float | None = None  # as GradientReply.budget_left (None if DP off)


Message = (
    Hello | Welcome | FakeBatch | GradientReply | Refusal | Heartbeat | Stop | ErrorReply | SecAggAnnounce | SecAggMasked
)

MESSAGE_TYPES: dict[str, type] = {
    cls.TYPE: cls
    for cls in (Hello, Welcome, FakeBatch, GradientReply, Refusal, Heartbeat, Stop, ErrorReply, SecAggAnnounce,
                SecAggMasked)
}

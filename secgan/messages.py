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

PROTOCOL_VERSION = 1


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
    epsilon: float | None = None  # the site's accounted epsilon after this release (None if DP off)
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


Message = Hello | Welcome | FakeBatch | GradientReply | Refusal | Heartbeat | Stop | ErrorReply

MESSAGE_TYPES: dict[str, type] = {
    cls.TYPE: cls
    for cls in (Hello, Welcome, FakeBatch, GradientReply, Refusal, Heartbeat, Stop, ErrorReply)
}

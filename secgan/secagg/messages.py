"""The two secure-sum protocol messages, written in the conventions of ``secgan.messages``
(frozen dataclasses with a ``TYPE``, JSON-representable header fields, CPU tensors) so the wire
codec can carry them once they are registered in ``secgan.messages.MESSAGE_TYPES``.

Round flow (attempt a of step s of round r):
  coordinator -> every participant: FakeBatch (same cond/fake to all, attempt 0 only) and
                                    SecAggAnnounce (participant set, keys as relayed, codec, digest)
  site -> coordinator:              SecAggMasked (masked fixed-point vector, same digest) or Refusal
On a missed deadline the coordinator sends a new SecAggAnnounce (attempt a + 1, smaller set);
sites re-mask the gradient they already computed for (r, s) with fresh masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch


@dataclass(frozen=True)
class SecAggAnnounce:
    """coordinator -> site: the exact participant set and ring of one attempt."""

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
    set_digest: str  # hex SHA-256 of the attempt context (see protocol.RoundContext)


@dataclass(frozen=True)
class SecAggMasked:
    """site -> coordinator: one masked contribution. ``masked`` is int64 holding ring elements."""

    TYPE: ClassVar[str] = "secagg_masked"
    run_id: str
    round: int
    step: int
    attempt: int
    set_digest: str
    masked: torch.Tensor  # [prod(shape)] int64 (uint64 ring elements reinterpreted)
    epsilon: float | None = None  # the site's accounted epsilon after this step (None if DP off)


SECAGG_MESSAGE_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (SecAggAnnounce, SecAggMasked)}

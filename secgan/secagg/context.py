"""Secure-sum rounds: what both sides share (the attempt context, the refusals, the threshold rule).
The state machines are ``secgan.secagg.client.SecureSumClient`` (site) and
``secgan.secagg.aggregator.SecureSumAggregator`` (coordinator). No I/O, no clocks except an injectable one for statistics, no global RNG: the
network services feed them messages and send what they return.

Security properties (tested):
- the participant keys come from the site's own verified manifest (``roster``); the coordinator
  only relays them, and a relayed key that differs from the manifest is refused;
- every mask is bound (HKDF info and salt) to run, round, step, attempt, the exact participant set
  with keys, and the ring parameters, through ``RoundContext.digest``; the digest travels in both
  messages and mismatches are refused, and an inconsistent view of the set makes masks not cancel
  (garbage, not leakage);
- a site refuses a set smaller than its threshold (default: strict majority of the federation and
  at least 3), a set without itself, unknown sites, a stale attempt, and a retry whose set is not
  a subset of the previous attempt's set for the same step;
- a retry re-masks the value the site already fixed for that step (no second release is paid or
  made), with fresh masks; partial vectors of a failed attempt are each masked by a stream of a
  site that did not deliver, so they are uniform.
Assumption (stated in ``noise.ASSUMPTION``): the coordinator follows the protocol. A coordinator
that claims a false dropout after receiving every vector can learn the sum of the "dropped"
sites' values from two attempts; the subset rule and ``max_attempts`` bound but do not prevent it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from secgan.core.errors import ConfigError, CryptoError, ProtocolError
from secgan.keys.agreement import parse_public_hex
from secgan.secagg.fixedpoint import FixedPointCodec
from secgan.net.schema import SecAggAnnounce

CONTEXT_VERSION = 1
DEFAULT_MAX_ATTEMPTS = 4
# Noise std (summed over sites) the coordinator leaves room for when choosing the modulus.
DEFAULT_NOISE_ALLOWANCE = 64.0

REFUSAL_CODES = (
    "secagg_wrong_run",
    "secagg_bad_params",
    "secagg_unknown_participant",
    "secagg_not_a_participant",
    "secagg_key_mismatch",
    "secagg_below_threshold",
    "secagg_set_mismatch",
    "secagg_stale_round",
    "secagg_stale_attempt",
    "secagg_set_not_shrinking",
    "secagg_too_many_attempts",
    "secagg_no_gradient",
    "secagg_shape_mismatch",
)


class SecAggRefusal(ProtocolError):
    """A site refuses an attempt. ``code`` is one of REFUSAL_CODES; send it in a Refusal."""


class SecAggRoundFailed(ProtocolError):
    """The coordinator cannot complete the round (too few sites left or too many attempts)."""


def resolve_threshold(policy_threshold: int, federation_size: int) -> int:
    """A site's minimum participant count. 0 means the default: strict majority, at least 3."""
    if federation_size < 2:
        raise ConfigError(f"secure-sum needs a federation of at least 2 sites, got {federation_size}")
    if policy_threshold < 0:
        raise ConfigError("secure_sum_threshold must be >= 0")
    t = max(3, federation_size // 2 + 1) if policy_threshold == 0 else policy_threshold
    if t < 2:
        raise ConfigError("secure_sum_threshold must be 0 (default) or >= 2: one site's sum is its value")
    if t > federation_size:
        raise ConfigError(
            f"secure-sum threshold {t} exceeds the federation size {federation_size}; "
            "set secure_sum_threshold explicitly or add sites"
        )
    return t


def check_site_id(site_id: object) -> str:
    if not isinstance(site_id, str) or not site_id or "\x00" in site_id or len(site_id) > 128:
        raise ConfigError("secure-sum: site ids must be non-empty strings without NUL (<= 128 chars)")
    return site_id


def parse_roster(roster: Mapping[str, str]) -> dict[str, X25519PublicKey]:
    parsed = {}
    for site_id, pub in roster.items():
        check_site_id(site_id)
        try:
            parsed[site_id] = parse_public_hex(pub)
        except CryptoError as exc:
            raise ConfigError(f"manifest: site {site_id!r} has an invalid x25519_public") from exc
    return parsed


@dataclass(frozen=True)
class RoundContext:
    """Everything one attempt's masks are bound to."""

    run_id: str
    round: int
    step: int
    attempt: int
    participants: tuple[tuple[str, str], ...]  # (site_id, x25519 public hex), sorted by id
    codec: FixedPointCodec
    shape: tuple[int, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p[0] for p in self.participants)

    @property
    def length(self) -> int:
        return math.prod(self.shape)

    def canonical(self) -> bytes:
        obj = {
            "v": CONTEXT_VERSION,
            "run_id": self.run_id,
            "round": self.round,
            "step": self.step,
            "attempt": self.attempt,
            "participants": [list(p) for p in self.participants],
            "codec": self.codec.to_dict(),
            "shape": list(self.shape),
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")

    def digest(self) -> bytes:
        """SHA-256 of the canonical form; computed once per context (both sides ask for it with every
        message, and the canonical form grows with the participant set)."""
        cached = self.__dict__.get("_digest")
        if cached is None:
            cached = hashlib.sha256(b"secgan/secagg/v1/context\x00" + self.canonical()).digest()
            object.__setattr__(self, "_digest", cached)  # not a field: equality and hashing ignore it
        return cached

    def announce(self) -> SecAggAnnounce:
        return SecAggAnnounce(
            run_id=self.run_id, round=self.round, step=self.step, attempt=self.attempt,
            participants=[list(p) for p in self.participants],
            frac_bits=self.codec.frac_bits, clip=float(self.codec.clip),
            modulus_bits=self.codec.modulus_bits, shape=list(self.shape),
            set_digest=self.digest().hex(),
        )


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def header_bytes(msg: object) -> int:
    """Size of a message's JSON header fields (a payload estimate; tensors counted separately)."""
    out = {}
    for f in fields(msg):  # type: ignore[arg-type]
        v = getattr(msg, f.name)
        out[f.name] = None if isinstance(v, torch.Tensor) else v
    return len(json.dumps(out, separators=(",", ":")).encode("utf-8"))


def to_float64(gradient: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(gradient, torch.Tensor):  # widened by numpy: exact, and no torch thread pool for one copy
        t = gradient.detach().cpu()
        if t.dtype in (torch.float32, torch.float64):
            return t.numpy().astype(np.float64)
        return t.to(torch.float64).numpy()
    return np.asarray(gradient, dtype=np.float64)

"""Secure-sum round state machines: ``SecureSumClient`` (site) and ``SecureSumAggregator``
(coordinator). No I/O, no clocks except an injectable one for statistics, no global RNG: the
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
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secgan.core.errors import ConfigError, CryptoError, ProtocolError, SecganError
from secgan.keys.agreement import parse_public_hex, public_hex
from secgan.secagg.fixedpoint import DEFAULT_CLIP, DEFAULT_FRAC_BITS, FixedPointCodec
from secgan.secagg.masking import pairwise_mask
from secgan.net.schema import SecAggAnnounce, SecAggMasked
from secgan.secagg.noise import draw_noise_share

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


def _check_site_id(site_id: object) -> str:
    if not isinstance(site_id, str) or not site_id or "\x00" in site_id or len(site_id) > 128:
        raise ConfigError("secure-sum: site ids must be non-empty strings without NUL (<= 128 chars)")
    return site_id


def _parse_roster(roster: Mapping[str, str]) -> dict[str, X25519PublicKey]:
    parsed = {}
    for site_id, pub in roster.items():
        _check_site_id(site_id)
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
        return hashlib.sha256(b"secgan/secagg/v1/context\x00" + self.canonical()).digest()

    def announce(self) -> SecAggAnnounce:
        return SecAggAnnounce(
            run_id=self.run_id, round=self.round, step=self.step, attempt=self.attempt,
            participants=[list(p) for p in self.participants],
            frac_bits=self.codec.frac_bits, clip=float(self.codec.clip),
            modulus_bits=self.codec.modulus_bits, shape=list(self.shape),
            set_digest=self.digest().hex(),
        )


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def header_bytes(msg: object) -> int:
    """Size of a message's JSON header fields (a payload estimate; tensors counted separately)."""
    out = {}
    for f in fields(msg):  # type: ignore[arg-type]
        v = getattr(msg, f.name)
        out[f.name] = None if isinstance(v, torch.Tensor) else v
    return len(json.dumps(out, separators=(",", ":")).encode("utf-8"))


def _to_float64(gradient: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(gradient, torch.Tensor):
        return gradient.detach().to("cpu", torch.float64).numpy()
    return np.asarray(gradient, dtype=np.float64)


@dataclass
class _StepValue:
    key: tuple[int, int]
    clipped: np.ndarray
    noise: np.ndarray | None
    frac_bits: int
    clip: float
    clipped_count: int


class SecureSumClient:
    """Site side. One instance per site and run; feed it every SecAggAnnounce in order.

    ``roster`` maps every federation site id to its ``x25519_public`` taken from the signed
    manifest the site verified itself (never from the coordinator). ``policy_threshold`` is
    ``PrivacyPolicy.secure_sum_threshold`` (0 = default rule).
    """

    def __init__(
        self, *, site_id: str, agreement_key: X25519PrivateKey, roster: Mapping[str, str], run_id: str,
        policy_threshold: int = 0, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.site_id = _check_site_id(site_id)
        self._key = agreement_key
        self._roster = _parse_roster(roster)
        self._roster_hex = {k: public_hex(v) for k, v in self._roster.items()}
        if self._roster_hex.get(site_id) != public_hex(agreement_key):
            raise ConfigError(f"manifest: {site_id!r} is missing or its x25519_public is not this site's key")
        self.run_id = run_id
        self.threshold = resolve_threshold(policy_threshold, len(self._roster))
        if max_attempts < 1:
            raise ConfigError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self._secrets: dict[str, bytes] = {}
        self._position: tuple[int, int] = (-1, -1)  # (round, step) of the last contribution
        self._last_attempt = -1
        self._last_set: frozenset[str] = frozenset()
        self._value: _StepValue | None = None

    # -- validation (pure) -------------------------------------------------------------------
    def check(self, ann: SecAggAnnounce) -> RoundContext:
        """Validate an announcement against this site's manifest, policy and state."""
        def refuse(code: str, detail: str) -> SecAggRefusal:
            return SecAggRefusal(code, detail)

        if ann.run_id != self.run_id:
            raise refuse("secagg_wrong_run", "announcement for another run")
        if not all(_is_int(v) and v >= 0 for v in (ann.round, ann.step, ann.attempt)):
            raise refuse("secagg_bad_params", "round, step and attempt must be non-negative ints")
        try:
            codec = FixedPointCodec(frac_bits=ann.frac_bits, clip=ann.clip, modulus_bits=ann.modulus_bits)
            shape = tuple(ann.shape)
            if not shape or not all(_is_int(d) and d > 0 for d in shape) or math.prod(shape) > 2**28:
                raise ConfigError("bad shape")
        except (ConfigError, TypeError) as exc:
            raise refuse("secagg_bad_params", "invalid ring parameters or shape") from exc
        parts = ann.participants
        if not isinstance(parts, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in parts
        ):
            raise refuse("secagg_bad_params", "participants must be [[site_id, public_hex], ...]")
        ids = [p[0] for p in parts]
        if len(set(ids)) != len(ids) or ids != sorted(ids):
            raise refuse("secagg_bad_params", "participants must be unique and sorted by site id")
        unknown = [i for i in ids if i not in self._roster]
        if unknown:
            raise refuse("secagg_unknown_participant", f"{len(unknown)} participant(s) not in the manifest")
        if self.site_id not in ids:
            raise refuse("secagg_not_a_participant", "this site is not in the announced set")
        if any(self._roster_hex[i] != pub for i, pub in parts):
            raise refuse("secagg_key_mismatch", "a relayed public key differs from the signed manifest")
        if len(ids) < self.threshold:
            raise refuse("secagg_below_threshold", f"{len(ids)} participants < threshold {self.threshold}")
        if not codec.supports(len(ids)):
            raise refuse("secagg_bad_params", "modulus too small for the number of participants")
        ctx = RoundContext(run_id=self.run_id, round=ann.round, step=ann.step, attempt=ann.attempt,
                           participants=tuple((i, self._roster_hex[i]) for i in ids), codec=codec, shape=shape)
        if not isinstance(ann.set_digest, str) or ann.set_digest != ctx.digest().hex():
            raise refuse("secagg_set_mismatch", "participant-set digest does not match")
        pos = (ann.round, ann.step)
        if pos < self._position:
            raise refuse("secagg_stale_round", "announcement for an earlier step")
        if pos == self._position:
            if ann.attempt <= self._last_attempt:
                raise refuse("secagg_stale_attempt", "attempt already served")
            if not set(ids) <= self._last_set:
                raise refuse("secagg_set_not_shrinking", "a retry may only drop participants")
        if ann.attempt >= self.max_attempts:
            raise refuse("secagg_too_many_attempts", f"attempt {ann.attempt} >= {self.max_attempts}")
        return ctx

    def needs_gradient(self, ann: SecAggAnnounce) -> bool:
        """True if the site must compute (and pay for) a gradient for this announcement's step."""
        return self._value is None or self._value.key != (ann.round, ann.step)

    # -- the contribution (commits state) ---------------------------------------------------
    def contribute(
        self, ann: SecAggAnnounce, gradient: torch.Tensor | np.ndarray | None = None, *,
        noise_std: float = 0.0, generator: torch.Generator | None = None, budget_left: float | None = None,
        secure_noise: bool = True,
    ) -> SecAggMasked:
        """Mask this site's value for one attempt.

        First attempt of a step: pass the gradient (and, in sanitize mode, the noise share std from
        ``noise.noise_share_std`` plus the site's torch.Generator). Retries: pass gradient=None; the
        value fixed at the first attempt is re-masked with the new attempt's fresh masks.
        """
        ctx = self.check(ann)
        key = (ann.round, ann.step)
        if self.needs_gradient(ann):
            if gradient is None:
                raise SecAggRefusal("secagg_no_gradient", "no gradient computed for this step")
            g = _to_float64(gradient)
            if g.shape != ctx.shape:
                raise SecAggRefusal("secagg_shape_mismatch", "gradient shape differs from the announced shape")
            clipped, n_clipped = ctx.codec.clip_values(g.reshape(-1))
            noise = None
            if noise_std > 0:
                if generator is None:
                    raise ConfigError("secure-sum: a noise share needs an explicit torch.Generator")
                if not ctx.codec.supports(len(ctx.ids), noise_std_total=noise_std * math.sqrt(len(ctx.ids))):
                    raise SecAggRefusal("secagg_bad_params", "modulus leaves no room for the noise")
                noise = draw_noise_share((ctx.length,), noise_std, generator=generator, secure=secure_noise)
            self._value = _StepValue(key, clipped, noise, ctx.codec.frac_bits, ctx.codec.clip, n_clipped)
        else:
            if gradient is not None:
                raise SecganError("secure-sum: this step's value is already fixed; pass gradient=None on retries")
            if (self._value.frac_bits, self._value.clip) != (ctx.codec.frac_bits, ctx.codec.clip):
                raise SecAggRefusal("secagg_bad_params", "a retry may not change clip or frac_bits")
        value = self._value
        if value is None:  # unreachable: needs_gradient() was False or the value was just set
            raise SecganError("secure-sum: no value fixed for this step")
        encoded = ctx.codec.encode(value.clipped, noise=value.noise)
        peers = {i: self._roster[i] for i in ctx.ids}
        mask = pairwise_mask(own_id=self.site_id, own_key=self._key, peers=peers, context_digest=ctx.digest(),
                             n_words=ctx.length, modulus_bits=ctx.codec.modulus_bits, secret_cache=self._secrets)
        masked = ctx.codec.add(encoded, mask)
        self._position = key
        self._last_attempt = ann.attempt
        self._last_set = frozenset(ctx.ids)
        return SecAggMasked(run_id=self.run_id, round=ann.round, step=ann.step, attempt=ann.attempt,
                            set_digest=ann.set_digest,
                            masked=torch.from_numpy(masked.view(np.int64).reshape(ctx.shape).copy()),
                            budget_left=budget_left)

    @property
    def clipped_count(self) -> int:
        """Coordinates clipped to [-C, C] in the current step's value (for the site's own log)."""
        return 0 if self._value is None else self._value.clipped_count


@dataclass
class RoundStats:
    round: int
    step: int
    attempts: int = 0
    participants: int = 0
    dropped: list[str] = field(default_factory=list)
    bytes_down: int = 0  # announcements (fake batches are counted by the transport)
    bytes_up: int = 0  # masked contributions: tensor bytes + header fields
    seconds: float = 0.0
    modulus_bits: int = 0

    def to_dict(self) -> dict:
        return {"round": self.round, "step": self.step, "attempts": self.attempts,
                "participants": self.participants, "dropped": list(self.dropped),
                "bytes_down": self.bytes_down, "bytes_up": self.bytes_up,
                "seconds": round(self.seconds, 6), "modulus_bits": self.modulus_bits}


def summarize_rounds(stats: Iterable[RoundStats]) -> dict:
    """The ``secure_sum`` block for run.json: per-round means and totals."""
    stats = list(stats)
    n = len(stats)
    if n == 0:
        return {"rounds": 0}
    return {
        "rounds": n,
        "retried_rounds": sum(1 for s in stats if s.attempts > 1),
        "bytes_per_round": (sum(s.bytes_up + s.bytes_down for s in stats)) / n,
        "bytes_up_per_round": sum(s.bytes_up for s in stats) / n,
        "bytes_down_per_round": sum(s.bytes_down for s in stats) / n,
        "seconds_per_round": sum(s.seconds for s in stats) / n,
        "seconds_max": max(s.seconds for s in stats),
    }


class SecureSumAggregator:
    """Coordinator side. One instance per run; one round (step) at a time.

    Sequence: ``begin`` -> send the returned announcement to every listed site -> ``accept`` each
    SecAggMasked (``refused`` each Refusal) -> if ``complete``: ``result()``; if the deadline
    passes first: ``retry()`` and send the new announcement to the remaining sites (raises
    SecAggRoundFailed when too few are left). ``roster`` is site id -> x25519_public from the
    signed manifest; the site id passed to ``accept`` must be the one the transport authenticated
    (CURVE key), never a name claimed in the message.
    """

    def __init__(
        self, *, run_id: str, roster: Mapping[str, str], threshold: int = 0, frac_bits: int = DEFAULT_FRAC_BITS,
        clip: float = DEFAULT_CLIP, noise_allowance: float = DEFAULT_NOISE_ALLOWANCE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parsed = _parse_roster(roster)
        self._roster_hex = {k: public_hex(v) for k, v in parsed.items()}
        self.run_id = run_id
        self.threshold = resolve_threshold(threshold, len(parsed))
        self.frac_bits, self.clip, self.noise_allowance = frac_bits, float(clip), noise_allowance
        FixedPointCodec.for_sites(len(parsed), clip=clip, frac_bits=frac_bits, noise_std_total=noise_allowance)
        self.max_attempts = max_attempts
        self._clock = clock
        self._ctx: RoundContext | None = None
        self._received: dict[str, np.ndarray] = {}
        self._refused: dict[str, str] = {}
        self._stats = RoundStats(round=-1, step=-1)
        self._t0 = 0.0
        self._done = False

    @property
    def context(self) -> RoundContext | None:
        return self._ctx

    def _announce(self, *, round: int, step: int, attempt: int, ids: list[str], shape: tuple[int, ...]) -> SecAggAnnounce:
        if len(ids) < self.threshold:
            raise SecAggRoundFailed("secagg_quorum_lost", f"{len(ids)} sites left < threshold {self.threshold}")
        if attempt >= self.max_attempts:
            raise SecAggRoundFailed("secagg_too_many_attempts", f"attempt {attempt} >= {self.max_attempts}")
        codec = FixedPointCodec.for_sites(len(ids), clip=self.clip, frac_bits=self.frac_bits,
                                          noise_std_total=self.noise_allowance)
        self._ctx = RoundContext(run_id=self.run_id, round=round, step=step, attempt=attempt,
                                 participants=tuple((i, self._roster_hex[i]) for i in sorted(ids)),
                                 codec=codec, shape=shape)
        self._received, self._refused, self._done = {}, {}, False
        ann = self._ctx.announce()
        self._stats.attempts += 1
        self._stats.bytes_down += header_bytes(ann) * len(ids)
        self._stats.modulus_bits = codec.modulus_bits
        return ann

    def begin(self, *, round: int, step: int, participants: Iterable[str], shape: Iterable[int]) -> SecAggAnnounce:
        ids = list(participants)
        if len(set(ids)) != len(ids) or any(i not in self._roster_hex for i in ids):
            raise ConfigError("secure-sum: participants must be distinct sites of the manifest")
        shape = tuple(int(d) for d in shape)
        self._stats = RoundStats(round=round, step=step)
        self._t0 = self._clock()
        return self._announce(round=round, step=step, attempt=0, ids=ids, shape=shape)

    @property
    def missing(self) -> tuple[str, ...]:
        if self._ctx is None:
            return ()
        return tuple(i for i in self._ctx.ids if i not in self._received and i not in self._refused)

    @property
    def complete(self) -> bool:
        return self._ctx is not None and not self._refused and len(self._received) == len(self._ctx.ids)

    def accept(self, site_id: str, msg: SecAggMasked) -> bool:
        """Store one contribution; returns ``complete``. ProtocolError("stale") for a late
        vector of an earlier attempt (drop it silently), other codes for bad input."""
        ctx = self._ctx
        if ctx is None or self._done:
            raise ProtocolError("secagg_no_round", "no secure-sum attempt is open")
        if (msg.run_id, msg.round, msg.step) != (ctx.run_id, ctx.round, ctx.step) or msg.attempt < ctx.attempt:
            raise ProtocolError("stale", "contribution for another round or an earlier attempt")
        if msg.attempt != ctx.attempt:
            raise ProtocolError("secagg_bad_attempt", "contribution for an attempt not yet announced")
        if site_id not in ctx.ids:
            raise ProtocolError("secagg_not_a_participant", "site is not in this attempt's set")
        if site_id in self._received or site_id in self._refused:
            raise ProtocolError("replay", "site already answered this attempt")
        if msg.set_digest != ctx.digest().hex():
            raise ProtocolError("secagg_set_mismatch", "contribution bound to another participant set")
        t = msg.masked
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or tuple(t.shape) != ctx.shape:
            raise ProtocolError("secagg_bad_vector", "masked vector must be int64 of the announced shape")
        vec = t.detach().cpu().contiguous().numpy().view(np.uint64).reshape(-1)
        if np.any(vec > ctx.codec.mask):
            raise ProtocolError("secagg_bad_vector", "masked vector has elements outside the ring")
        self._received[site_id] = vec.copy()
        self._stats.bytes_up += int(t.numel()) * 8 + header_bytes(msg)
        return self.complete

    def refused(self, site_id: str, code: str) -> None:
        """A participant refused this attempt; it is left out of the retry."""
        if self._ctx is not None and site_id in self._ctx.ids and site_id not in self._received:
            self._refused[site_id] = code

    def retry(self, *, exclude: Iterable[str] = ()) -> SecAggAnnounce:
        """New attempt (fresh masks) without the sites that did not deliver or refused."""
        ctx = self._ctx
        if ctx is None or self._done:
            raise ProtocolError("secagg_no_round", "no secure-sum attempt is open")
        gone = set(self.missing) | set(self._refused) | set(exclude)
        self._stats.dropped.extend(sorted(i for i in gone if i in ctx.ids and i not in self._stats.dropped))
        keep = [i for i in ctx.ids if i not in gone]
        return self._announce(round=ctx.round, step=ctx.step, attempt=ctx.attempt + 1, ids=keep, shape=ctx.shape)

    def result(self) -> np.ndarray:
        """The decoded sum (float64, announced shape). Only when ``complete``."""
        ctx = self._ctx
        if ctx is None or not self.complete or self._done:
            raise ProtocolError("secagg_incomplete", "not every participant delivered")
        total = np.zeros(ctx.length, dtype=np.uint64)
        for vec in self._received.values():
            total = ctx.codec.add(total, vec)
        self._done = True
        self._stats.participants = len(ctx.ids)
        self._stats.seconds = self._clock() - self._t0
        return ctx.codec.decode_sum(total).reshape(ctx.shape)

    def quantisation_bound(self) -> float:
        """Per-coordinate bound between result() and the sum of the sites' clipped (noisy) values."""
        if self._ctx is None:
            raise ProtocolError("secagg_no_round", "no secure-sum attempt is open")
        return self._ctx.codec.quantisation_bound(len(self._ctx.ids))

    @property
    def stats(self) -> RoundStats:
        """Statistics of the current (or last finished) round."""
        return self._stats

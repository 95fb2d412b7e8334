"""The site's side of a secure-sum round: ``SecureSumClient`` checks each announcement against the
site's own verified roster and threshold, then masks the value it fixed for the step (the security
properties are listed in :mod:`secgan.secagg.context`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secgan.core.errors import ConfigError, SecganError
from secgan.keys.agreement import public_hex
from secgan.net.schema import SecAggAnnounce, SecAggMasked
from secgan.secagg.context import (
    DEFAULT_MAX_ATTEMPTS,
    RoundContext,
    SecAggRefusal,
    check_site_id,
    is_int,
    parse_roster,
    resolve_threshold,
    to_float64,
)
from secgan.secagg.fixedpoint import FixedPointCodec
from secgan.secagg.masking import pairwise_mask
from secgan.secagg.noise import draw_noise_share
from secgan.secagg.packing import pack_words


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
        self.site_id = check_site_id(site_id)
        self._key = agreement_key
        self._roster = parse_roster(roster)
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
        if not all(is_int(v) and v >= 0 for v in (ann.round, ann.step, ann.attempt)):
            raise refuse("secagg_bad_params", "round, step and attempt must be non-negative ints")
        try:
            codec = FixedPointCodec(frac_bits=ann.frac_bits, clip=ann.clip, modulus_bits=ann.modulus_bits)
            shape = tuple(ann.shape)
            if not shape or not all(is_int(d) and d > 0 for d in shape) or math.prod(shape) > 2**28:
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
            g = to_float64(gradient)
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
        encoded = ctx.codec.encode_clipped(value.clipped, noise=value.noise)
        peers = {i: self._roster[i] for i in ctx.ids}
        masked = pairwise_mask(own_id=self.site_id, own_key=self._key, peers=peers, context_digest=ctx.digest(),
                               n_words=ctx.length, modulus_bits=ctx.codec.modulus_bits, secret_cache=self._secrets)
        masked += encoded  # in place: mod 2^64, a multiple of 2^k
        masked &= ctx.codec.mask
        self._position = key
        self._last_attempt = ann.attempt
        self._last_set = frozenset(ctx.ids)
        packed = pack_words(masked.reshape(ctx.shape), ctx.codec.modulus_bits)
        return SecAggMasked(run_id=self.run_id, round=ann.round, step=ann.step, attempt=ann.attempt,
                            set_digest=ann.set_digest, masked=torch.from_numpy(packed), budget_left=budget_left)

    @property
    def clipped_count(self) -> int:
        """Coordinates clipped to [-C, C] in the current step's value (for the site's own log)."""
        return 0 if self._value is None else self._value.clipped_count

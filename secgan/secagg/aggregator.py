"""The coordinator's side of a secure-sum round: ``SecureSumAggregator`` announces an attempt,
collects the masked contributions, retries without the sites that dropped, and unmasks only the
sum; ``RoundStats`` / ``summarize_rounds`` for run.json (properties: :mod:`secgan.secagg.context`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from secgan.core.errors import ConfigError, ProtocolError
from secgan.keys.agreement import public_hex
from secgan.net.schema import SecAggAnnounce, SecAggMasked
from secgan.secagg.context import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_NOISE_ALLOWANCE,
    RoundContext,
    SecAggRoundFailed,
    header_bytes,
    parse_roster,
    resolve_threshold,
)
from secgan.secagg.fixedpoint import DEFAULT_CLIP, DEFAULT_FRAC_BITS, FixedPointCodec
from secgan.secagg.packing import PackingError, unpack_words


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
        parsed = parse_roster(roster)
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
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8:
            raise PackingError("masked vector must be uint8: ring words packed to the attempt's modulus_bits")
        # PackingError (secagg_bad_vector): not the packed shape of the announced one, or a set unused bit
        words = unpack_words(t.detach().cpu().numpy(), ctx.shape, ctx.codec.modulus_bits)
        self._received[site_id] = words.reshape(-1)  # every unpacked k-bit field is a ring element
        self._stats.bytes_up += int(t.numel()) + header_bytes(msg)
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
            total += vec  # mod 2^64, a multiple of 2^k: reduced once below
        total &= ctx.codec.mask
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

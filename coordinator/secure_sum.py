"""Secure-sum rounds (``aggregation = "secure-sum"``): one shared batch, masked gradients, one sum.

One round = one step. The coordinator draws ONE FakeBatch and sends the same batch to every live
site, then the attempt's :class:`~secgan.net.schema.SecAggAnnounce` (participant set with the keys of
the signed manifest, ring parameters, context digest). Sites answer with a
:class:`~secgan.net.schema.SecAggMasked` (or a Refusal); the coordinator can decode only the sum of
all participants' vectors, which it back-propagates through G once (``GeneratorCore.apply`` divides
by the batch size exactly as for one routed reply, so a step is the sum over sites in both modes).

Dropouts: when a participant has not delivered by the attempt's deadline (or refused, or its
connection is gone), the round is retried without it: a new attempt number and a smaller set, hence
a new context digest and fresh masks; the sites re-mask the gradient they already computed (no new
release). A round that cannot complete (fewer sites than the threshold, too many attempts) leaves G
untouched and the step is tried again in a new round with a new batch, like a failed routed round.

The scheduler never touches sockets; the service passes ``send(site, msg) -> bytes | None``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from secgan.core.errors import ProtocolError
from secgan.core.logs import get_logger
from secgan.net.schema import GradientReply, SecAggAnnounce, SecAggMasked
from secgan.secagg import ASSUMPTION, RoundStats, SecAggRoundFailed, SecureSumAggregator, summarize_rounds

from coordinator.core import StepCore
from coordinator.registry import Registry
from coordinator.scheduler import QuorumPolicy, Round, RoundResult, Scheduler

log = get_logger(__name__)

# run.json keeps the last rounds in full (the summary covers all of them)
PER_ROUND_KEPT = 1000


@dataclass
class SecureRound(Round):
    """A routed Round plus the secure-sum bookkeeping. ``in_flight`` holds the participants of the
    current attempt that have not answered yet."""

    sent: tuple[str, ...] = ()  # every site that received this round's batch
    started: float = 0.0
    failed: str | None = None  # SecAggRoundFailed code once the round cannot complete
    wire_down: int = 0  # batch + announcement frames actually sent
    wire_up: int = 0  # masked contributions actually received
    lost: set[str] = field(default_factory=set)  # participants whose connection went away


class SecureSumScheduler(Scheduler):
    def __init__(self, core: StepCore, registry: Registry, policy: QuorumPolicy, *, roster: Mapping[str, str],
                 clock: Callable[[], float] = time.monotonic, **rounds: Any) -> None:
        """``rounds``: the :class:`Scheduler`'s own keywords (run_id, total_steps, step, round_number)."""
        # the aggregator refuses sets below the default site threshold, so do not start below it either
        agg = SecureSumAggregator(run_id=rounds["run_id"], roster=roster, clock=clock)
        policy = dataclasses.replace(policy, min_sites=max(policy.min_sites, agg.threshold))
        super().__init__(core, registry, policy, **rounds)
        self.agg = agg
        self.threshold = agg.threshold
        self.clock = clock
        self.current: SecureRound | None = None
        self.stats: list[RoundStats] = []
        self.per_round: list[dict[str, Any]] = []
        self.failed_rounds = 0
        self.retried_attempts = 0
        self._send: Callable[[str, Any], int | None] | None = None

    # -- one round -----------------------------------------------------------------------------

    def start_round(self, now: float, send: Callable[[str, Any], int | None]) -> SecureRound:
        self._send = send
        self.round_number += 1
        rnd = SecureRound(number=self.round_number, step=self.step, attempt=self.attempt,
                          deadline=now + self.policy.round_deadline_s, started=now)
        self.current = rnd
        batch = self.core.make_batch(run_id=self.run_id, round=rnd.number, step=rnd.step)
        if self.attempt:
            batch = dataclasses.replace(batch, attempt=self.attempt)
        sent = []
        for site in self.registry.live():
            nbytes = send(site, batch)  # the SAME batch to every site
            if nbytes is not None:
                sent.append(site)
                rnd.wire_down += nbytes
        rnd.sent = tuple(sent)
        try:
            ann = self.agg.begin(round=rnd.number, step=rnd.step, participants=sent, shape=tuple(batch.fake.shape))
        except SecAggRoundFailed as exc:
            rnd.failed = exc.code
            return rnd
        self._announce(ann, rnd)
        return rnd

    def _announce(self, ann: SecAggAnnounce, rnd: SecureRound) -> None:
        ids = [p[0] for p in ann.participants]
        rnd.in_flight = {s: tuple(ann.shape) for s in ids}
        log.info("secagg_attempt", round=rnd.number, step=rnd.step, attempt=ann.attempt, participants=len(ids))
        for site in ids:
            nbytes = self._send(site, ann) if self._send is not None else None
            if nbytes is None:  # unroutable: the service has already called on_site_lost
                rnd.lost.add(site)
                rnd.in_flight.pop(site, None)
            else:
                rnd.wire_down += nbytes

    def in_flight_for(self, site: str) -> tuple[int, int] | None:
        """Any site that got this round's batch may still answer it (a late vector of an earlier
        attempt is then dropped as stale by the aggregator, not counted as a violation)."""
        rnd = self.current
        if rnd is not None and site in rnd.sent:
            return rnd.number, rnd.step
        return None

    def on_gradient(self, site: str, reply: GradientReply, nbytes: int) -> None:
        raise ProtocolError("unexpected_message", "secure-sum run: only masked contributions are accepted")

    def on_masked(self, site: str, msg: SecAggMasked, nbytes: int) -> None:
        rnd = self.current
        if rnd is None or site not in rnd.sent:
            raise ProtocolError("unexpected_message", "no secure-sum round in flight for this site")
        self.agg.accept(site, msg)  # ProtocolError: stale attempt, wrong digest, bad vector, ...
        rnd.in_flight.pop(site, None)
        rnd.wire_up += nbytes
        if msg.budget_left is not None:  # coarse: the site never sends its exact epsilon
            self.registry[site].budget_left = float(msg.budget_left)

    def _leave_round(self, site: str, *, refusal: str | None) -> None:
        # No per-site batch to drop here: the aggregator hears of a refusal, a lost site waits for
        # the retry that leaves it out.
        rnd = self.current
        if rnd is not None and site in rnd.in_flight:
            del rnd.in_flight[site]
            if refusal is not None:
                self.agg.refused(site, refusal)
            else:
                rnd.lost.add(site)

    def round_done(self, now: float) -> bool:
        """Time to act: the sum is complete, the round failed, nobody is left to wait for (a
        refusal or a lost connection), or the attempt's deadline passed."""
        rnd = self.current
        if rnd is None:
            return False
        return rnd.failed is not None or self.agg.complete or not rnd.in_flight or now >= rnd.deadline

    def close_round(self) -> RoundResult:
        """Apply the sum and step G, or retry without the missing sites (the round stays current),
        or give up on the round."""
        rnd = self.current
        if rnd is None:
            raise RuntimeError("close_round without a round")
        now = self.clock()
        if rnd.failed is None and self.agg.complete:
            return self._apply(rnd)
        if rnd.failed is None:
            missing = list(self.agg.missing)
            for site in missing:
                if site not in rnd.lost:
                    self.registry[site].drops["deadline"] += 1
                    self.registry[site].gradients_late += 1
            try:
                ann = self.agg.retry(exclude=missing)
            except SecAggRoundFailed as exc:
                rnd.failed = exc.code
            else:
                self.retried_attempts += 1
                self._event("secagg_retry", attempt=ann.attempt, missing=sorted(missing),
                            participants=len(ann.participants))
                rnd.deadline = now + self.policy.round_deadline_s
                self._announce(ann, rnd)
                return RoundResult(False, rnd.step, 0)
        return self._fail(rnd, now)

    def _apply(self, rnd: SecureRound) -> RoundResult:
        total = self.agg.result()  # float64, the batch's shape
        participants = list(self.agg.context.ids) if self.agg.context is not None else []
        reply = GradientReply(run_id=self.run_id, round=rnd.number, step=rnd.step,
                              grad=torch.from_numpy(total).to(torch.float32))
        self.core.apply(reply)  # once, with the sum over the participants
        stats = self.core.finish_step()
        for site in participants:
            rec = self.registry[site]
            rec.steps_served += 1
        self._record(rnd, self.agg.stats)
        self.current = None
        step = self.step
        self.step += 1
        self.attempt = 0
        return RoundResult(True, step, len(participants),
                           stats={**stats, "timed_out": list(self.agg.stats.dropped),
                                  "attempts": self.agg.stats.attempts})

    def _fail(self, rnd: SecureRound, now: float) -> RoundResult:
        self.core.drop(run_id=self.run_id, round=rnd.number, step=rnd.step)
        self.core.finish_step()  # nothing applied: no optimiser step
        stats = self.agg.stats if self.agg.stats.round == rnd.number else RoundStats(round=rnd.number, step=rnd.step)
        stats.seconds = now - rnd.started
        self._record(rnd, stats, failed=rnd.failed)
        self.failed_rounds += 1
        self.current = None
        self.attempt += 1
        self._event("secagg_round_failed", code=rnd.failed, attempts=stats.attempts)
        if self.attempt >= self.policy.max_attempts:
            return RoundResult(False, rnd.step, 0, stop_reason="quorum_lost")
        return RoundResult(False, rnd.step, 0)

    # -- reporting ------------------------------------------------------------------------------

    def _record(self, rnd: SecureRound, stats: RoundStats, *, failed: str | None = None) -> None:
        self.stats.append(stats)
        entry = {**stats.to_dict(), "wire_bytes_down": rnd.wire_down, "wire_bytes_up": rnd.wire_up,
                 "failed": failed}
        if stats.participants:
            entry["noise_variance_slack"] = round(stats.participants / self.threshold, 4)
        self.per_round.append(entry)
        del self.per_round[:-PER_ROUND_KEPT]

    def summary(self) -> dict[str, Any]:
        """The ``secure_sum`` block of run.json."""
        out: dict[str, Any] = summarize_rounds(self.stats)
        n = len(self.per_round)
        out.update({
            "threshold": self.threshold,
            "failed_rounds": self.failed_rounds,
            "retried_attempts": self.retried_attempts,
            "wire_bytes_per_round": (sum(r["wire_bytes_down"] + r["wire_bytes_up"] for r in self.per_round) / n
                                     if n else None),
            "noise": ("sites in sanitize mode each add N(0, (sigma C)^2 / t) with t their threshold, so any t "
                      "honest participants carry the full noise; n > t participants add variance slack n / t "
                      "(kept so a round survives n - t dropouts)"),
            "assumption": ASSUMPTION,
            "per_round": list(self.per_round),
        })
        return out

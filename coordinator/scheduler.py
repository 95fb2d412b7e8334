"""Routed AsynDGAN rounds with a deadline and a quorum.

One round = one step: every live site gets its own FakeBatch (fresh conditions and noise). Replies
are buffered as they arrive and applied to G only when the round closes with at least
``min_sites`` answers, so a failed round leaves G and its optimiser untouched and the step is
retried in a new round (new round number, ``attempt`` + 1). Replies to an older round are stale.

The scheduler never touches sockets: the service passes a ``send(site, msg) -> bytes_sent``
callable and feeds inbound replies in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable


from secgan.core.errors import ProtocolError
from secgan.core.logs import get_logger
from secgan.net.schema import FakeBatch, GradientReply, Refusal

from coordinator.core import StepCore
from coordinator.registry import Registry

log = get_logger(__name__)

START, WAIT, STOP = "start", "wait", "stop"


@dataclass(frozen=True)
class QuorumPolicy:
    min_sites: int
    round_deadline_s: float
    max_attempts: int = 5  # rounds tried for one step before the run stops
    readmission_wait_s: float = 30.0  # how long to wait for enough live sites before stopping
    startup_grace_s: float = 0.0  # before the first round, wait this long for ALL able sites


@dataclass
class Round:
    number: int
    step: int
    attempt: int
    deadline: float
    in_flight: dict[str, tuple[int, ...]] = field(default_factory=dict)  # site -> fake shape
    replies: dict[str, tuple[GradientReply, int]] = field(default_factory=dict)  # site -> (reply, bytes)
    sent_bytes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundResult:
    stepped: bool
    step: int  # the step this round was for
    answered: int
    stop_reason: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


class Scheduler:
    def __init__(
        self,
        core: StepCore,
        registry: Registry,
        policy: QuorumPolicy,
        *,
        run_id: str,
        total_steps: int,
        step: int = 0,
        round_number: int = 0,
    ) -> None:
        self.core = core
        self.registry = registry
        self.policy = policy
        self.run_id = run_id
        self.total_steps = total_steps
        self.step = step
        self.round_number = round_number
        self.attempt = 0
        self.current: Round | None = None
        self.waiting_since: float | None = None
        self.quorum_events: list[dict[str, Any]] = []
        self.stale = 0
        self._started = False
        self._first_seen: float | None = None

    # -- deciding whether to start -------------------------------------------------------------

    def readiness(self, now: float) -> tuple[str, str | None]:
        """(START | WAIT | STOP, reason) for the next round."""
        if self.step >= self.total_steps:
            return STOP, "completed"
        able = self.registry.able()
        if len(able) < self.policy.min_sites:
            return STOP, "quorum_impossible"
        live = self.registry.live()
        if not self._started:  # first round of this process: give every site a moment to join
            if self._first_seen is None:
                self._first_seen = now
            if len(live) < len(able) and now - self._first_seen < self.policy.startup_grace_s:
                return WAIT, None
        if len(live) >= self.policy.min_sites:
            self._started = True
            if self.waiting_since is not None:
                self._event("readmitted", live=len(self.registry.live()))
            self.waiting_since = None
            return START, None
        if self.waiting_since is None:
            self.waiting_since = now
            self._event("waiting", live=len(self.registry.live()))
        # before the first round of this process the coordinator waits for its sites indefinitely
        if self._started and now - self.waiting_since > self.policy.readmission_wait_s:
            return STOP, "quorum_lost"
        return WAIT, None

    # -- one round -----------------------------------------------------------------------------

    def start_round(self, now: float, send: Callable[[str, Any], int | None]) -> Round:
        self.round_number += 1
        rnd = Round(number=self.round_number, step=self.step, attempt=self.attempt,
                    deadline=now + self.policy.round_deadline_s)
        self.current = rnd
        for site in self.registry.live():
            batch = self.core.make_batch(run_id=self.run_id, round=rnd.number, step=rnd.step, site=site)
            if self.attempt:
                batch = dataclasses.replace(batch, attempt=self.attempt)
            nbytes = send(site, batch)
            if nbytes is None:  # unroutable: the service has marked it dead
                self.core.drop(run_id=self.run_id, round=rnd.number, step=rnd.step, site=site)
                continue
            rnd.in_flight[site] = tuple(batch.fake.shape)
            rnd.sent_bytes[site] = nbytes
        return rnd

    def in_flight_for(self, site: str) -> tuple[int, int] | None:
        rnd = self.current
        if rnd is not None and site in rnd.in_flight:
            return rnd.number, rnd.step
        return None

    def busy(self) -> frozenset[str]:
        """Sites with a batch of the current round still in flight."""
        return frozenset(self.current.in_flight) if self.current is not None else frozenset()

    def on_gradient(self, site: str, reply: GradientReply, nbytes: int) -> None:
        """Validate against the batch sent (the core's check) and buffer; ProtocolError leaves the
        site in flight."""
        rnd = self.current
        if rnd is None or site not in rnd.in_flight:
            raise ProtocolError("unexpected_message", "no batch in flight for this site")
        self.core.check(reply, site=site)
        del rnd.in_flight[site]
        rnd.replies[site] = (reply, nbytes)
        if reply.budget_left is not None:  # coarse: the site never sends its exact epsilon
            self.registry[site].budget_left = float(reply.budget_left)

    def on_masked(self, site: str, msg: Any, nbytes: int) -> None:
        raise ProtocolError("unexpected_message", "routed run: masked contributions are not expected")

    def on_refusal(self, site: str, msg: Refusal) -> None:
        self.registry[site].refusals[msg.code] += 1
        self._leave_round(site, refusal=msg.code)
        if msg.final:
            self.registry.remove(site, reason=msg.code)
            self._event("site_removed", site=site, code=msg.code)

    def on_site_lost(self, site: str) -> None:
        self._leave_round(site, refusal=None)

    def _leave_round(self, site: str, *, refusal: str | None) -> None:
        """A site in flight will not answer the current round (it refused, or it is gone)."""
        rnd = self.current
        if rnd is not None and site in rnd.in_flight:
            del rnd.in_flight[site]
            self.core.drop(run_id=self.run_id, round=rnd.number, step=rnd.step, site=site)

    def round_done(self, now: float) -> bool:
        rnd = self.current
        return rnd is not None and (not rnd.in_flight or now >= rnd.deadline)

    def close_round(self) -> RoundResult:
        rnd = self.current
        if rnd is None:  # an internal invariant; a real error so that -O cannot strip it
            raise RuntimeError("close_round without a round")
        self.current = None
        timed_out = sorted(rnd.in_flight)
        for site in timed_out:
            self.core.drop(run_id=self.run_id, round=rnd.number, step=rnd.step, site=site)
            self.registry[site].drops["deadline"] += 1
            self.registry[site].gradients_late += 1
        answered = len(rnd.replies)
        if answered >= self.policy.min_sites:
            for site, (reply, nbytes) in sorted(rnd.replies.items()):
                self.core.apply(reply, site=site)
                rec = self.registry[site]
                rec.steps_served += 1
                rec.step_bytes_in.append(nbytes)
                rec.step_bytes_out.append(rnd.sent_bytes.get(site, 0))
            stats = self.core.finish_step()
            step = self.step
            self.step += 1
            self.attempt = 0
            return RoundResult(True, step, answered, stats={**stats, "timed_out": timed_out})
        for site in rnd.replies:
            self.core.drop(run_id=self.run_id, round=rnd.number, step=rnd.step, site=site)
            self.registry[site].gradients_dropped += 1  # answered in time, but the round failed
        self.core.finish_step()  # nothing applied: no optimiser step, just clears what is in flight
        self.attempt += 1
        self._event("retry", answered=answered, needed=self.policy.min_sites, timed_out=timed_out)
        if self.attempt >= self.policy.max_attempts:
            return RoundResult(False, rnd.step, answered, stop_reason="quorum_lost")
        return RoundResult(False, rnd.step, answered)

    def _event(self, kind: str, **fields: Any) -> None:
        event = {"event": kind, "step": self.step, "round": self.round_number, **fields}
        self.quorum_events.append(event)
        log.info("quorum_event", kind=kind, **{k: v for k, v in event.items() if k != "event"})

"""The coordinator's inbound side: every message from a site, and the socket monitor's events.

Checks, in order: the sender's identity is the ZAP User-Id on the frame (never the header's
``site``; a mismatch is ``identity_mismatch``) -> codec.decode -> ReplayGuard check (per identity; a
Hello starts a new session, so a restarted site is not "stale"; round and step never above what
the coordinator has sent, seq at most a window ahead) -> protocol stage for that peer -> the
scheduler's checks against the batch that site was sent -> ReplayGuard commit: a message refused
at any stage never moves the peer's replay state. Rejections are logged through a
:class:`~secgan.core.logs.LogLimiter` (first lines per site and code, then counts); every count is in
run.json. Any other exception from one message is counted by type and the loop goes on.

A part of :class:`coordinator.service.Coordinator` (its attributes are the service's own).
"""

from __future__ import annotations

import zmq

from secgan.core.config import to_dict
from secgan.core.errors import ProtocolError, SecganError
from secgan.core.logs import get_logger
from secgan.gan.config import CONDITION_SOURCES
from secgan.net import codec
from secgan.net.errors import PROTOCOL_ERRORS
from secgan.net.schema import (
    PROTOCOL_VERSION,
    ErrorReply,
    GradientReply,
    Heartbeat,
    Hello,
    Message,
    Refusal,
    SecAggMasked,
    Stop,
    StopAck,
    Welcome,
)
from secgan.net.transport import peer_user_id
from secgan.privacy.policy import MODES

from coordinator.registry import REMOVED, WELCOMED
from coordinator.stages import check_stage

log = get_logger("coordinator.service")

# Which protocol errors are answered (to the identified sender) and which only counted.
SILENT_CODES = frozenset({"stale"})


def frame_bytes(frames: list) -> int:
    return sum(len(f) for f in frames)


class Inbound:
    """Inbound messages and monitor events of the coordinator service."""

    def _handle_inbound(self, frames: list[zmq.Frame], now: float) -> None:
        """One inbound message. Nothing it carries ends the loop: a ProtocolError is counted,
        logged (rate-limited) and answered; any other exception is counted and logged by type."""
        site: str | None = None
        try:
            site = peer_user_id(frames[-1])  # the ZAP User-Id: who sent it, whatever it says
            self._inbound(frames, site, now)
        except Exception as exc:  # noqa: BLE001 - defence in depth: one message never stops the federation
            name = type(exc).__name__
            if site is not None and site in self.registry:
                self.registry[site].drops["internal"] += 1
            else:
                self.registry.unattributed_drops["internal"] += 1
            self.internal_errors[name] += 1
            self.log_limiter.warning(log, "inbound_failed", site=site, error=name)

    def _inbound(self, frames: list[zmq.Frame], site: str | None, now: float) -> None:
        self.log_limiter.summarize(log)
        routing_id = frames[0].bytes
        payload = frames[1:]
        nbytes = frame_bytes(payload)
        if site is None or site not in self.registry:
            # cannot happen behind ZAP; counted so a misconfiguration shows up in run.json
            self.registry.unattributed_drops["unauthenticated"] += 1
            self.runlog.protocol_errors["unauthenticated"] += 1
            self.log_limiter.warning(log, "inbound_rejected", code="unauthenticated")
            return
        self.registry.seen(site, now=now, nbytes=nbytes)
        rec = self.registry[site]
        msg: Message | None = None
        try:
            env, msg = codec.decode(payload, limits=self.settings.wire)
            if env.site != site:
                raise ProtocolError("identity_mismatch", "header names another site than the authenticated key")
            # a Hello starts a new session (e.g. a restarted site): checked without the old
            # round and seq, which it replaces only once accepted. Nothing the coordinator has
            # not sent yet can be answered: round and step are bounded by its own counters.
            fresh = isinstance(msg, Hello)
            self.guard.check(env, peer=site, new_session=fresh,
                             max_round=self.scheduler.round_number, max_step=self.scheduler.step)
            ended = self._final is not None
            check_stage(state=rec.state, msg=msg, run_id=self.settings.run_id,
                        current_round=self.scheduler.round_number or None,
                        in_flight=None if ended else self.scheduler.in_flight_for(site), ended=ended)
            if ended:
                self._after_end(site, routing_id, msg)
            else:
                self._dispatch(site, routing_id, msg, nbytes, now)
            self.guard.commit(env, peer=site, new_session=fresh)  # only what was accepted moves the guard
        except ProtocolError as exc:
            rec.drops[exc.code] += 1
            self.runlog.protocol_errors[exc.code] += 1
            if exc.code == "stale":
                self.scheduler.stale += 1
            self.log_limiter.warning(log, "inbound_rejected", site=site, code=exc.code, bytes=nbytes)
            if exc.code not in SILENT_CODES and codec.answerable(exc, msg):
                self._send(site, ErrorReply(code=exc.code, detail=PROTOCOL_ERRORS.get(exc.code, "")[:200]),
                           routing_id=routing_id)
        except SecganError as exc:  # e.g. a condition bank that cannot be read: this peer only
            rec.drops["internal"] += 1
            self.internal_errors[type(exc).__name__] += 1
            self.log_limiter.warning(log, "inbound_failed", site=site, error=type(exc).__name__)

    def _dispatch(self, site: str, routing_id: bytes, msg: Message, nbytes: int, now: float) -> None:
        if isinstance(msg, Hello):
            self._on_hello(site, routing_id, msg, now)
        elif isinstance(msg, GradientReply):
            self.scheduler.on_gradient(site, msg, nbytes)
        elif isinstance(msg, SecAggMasked):
            self.scheduler.on_masked(site, msg, nbytes)
        elif isinstance(msg, Refusal):
            log.info("site_refused", site=site, code=msg.code, final=msg.final)
            self.scheduler.on_refusal(site, msg)
        elif isinstance(msg, ErrorReply):
            log.warning("peer_error", site=site, code=msg.code)
        elif isinstance(msg, Heartbeat):
            self._send(site, Heartbeat())  # the site's dead-link check needs to hear from us (sites.node)
        elif isinstance(msg, StopAck):  # a removed site acknowledging the Stop it was told again
            self._acked_before_end.add(site)  # not waited for after the run (it has ended)
            log.info("stop_acknowledged", site=site)

    def _after_end(self, site: str, routing_id: bytes, msg: Message) -> None:
        """The run has ended (:mod:`coordinator.final_stop`): a StopAck is recorded, an ErrorReply
        only logged (never answered, so no exchange of errors), anything else is answered with the
        final Stop on the connection it came from (a Hello after a reconnect, a heartbeat, a late
        reply: none reaches the scheduler, nothing is applied)."""
        final = self._final
        if isinstance(msg, StopAck):
            first = site not in final.acked
            final.on_ack(site)
            if first:
                log.info("stop_acknowledged", site=site, pending=len(final.pending()))
            return
        if isinstance(msg, ErrorReply):
            log.warning("peer_error", site=site, code=msg.code)
            return
        final.on_message(site)
        if self._send(site, Stop(run_id=self.settings.run_id, reason=final.reason), routing_id=routing_id) is not None:
            final.sent(site)
            log.info("final_stop_repeated", site=site, answering=msg.TYPE)

    def _on_hello(self, site: str, routing_id: bytes, msg: Hello, now: float) -> None:
        if PROTOCOL_VERSION not in msg.versions:
            log.warning("hello_refused", site=site, reason="unsupported_version")
            self._send(site, ErrorReply(code="unsupported_version",
                                        detail=f"coordinator speaks protocol {PROTOCOL_VERSION}"),
                       routing_id=routing_id)
            return
        policy = msg.policy
        sources = policy.get("accept_sources")
        if (policy.get("mode") not in MODES or not isinstance(sources, list)
                or not all(isinstance(s, str) and s in CONDITION_SOURCES for s in sources)):
            raise ProtocolError("bad_policy", "policy summary needs mode and accept_sources")
        rec = self.registry[site]
        if rec.state == REMOVED:  # final for this run, whatever this Hello says: told again, never welcomed
            self.registry.welcome(site, routing_id=routing_id, now=now, policy=policy)  # counted; stays removed
            log.info("site_still_removed", site=site, reason=rec.stop_reason)
            self._send(site, Stop(run_id=self.settings.run_id, reason=rec.stop_reason or "removed"))
            return
        if not (rec.state == WELCOMED and rec.routing_id == routing_id):
            # a new connection (restart, reconnect): what it had in flight belonged to the old one;
            # a repeated Hello on the same connection is only a retry and changes nothing
            self.scheduler.on_site_lost(site)
        if self.settings.condition_source not in sources:
            reason = f"the site's policy does not accept condition source {self.settings.condition_source!r}"
            self.registry.exclude(site, routing_id=routing_id, reason="source_refused")
            log.warning("site_excluded", site=site, reason="source_refused")
            self._send(site, ErrorReply(code="source_refused", detail=reason), routing_id=routing_id)
            return
        self.registry.welcome(site, routing_id=routing_id, now=now, policy=policy)
        rec = self.registry[site]
        log.info("site_welcomed", site=site, mode=policy.get("mode"), hellos=rec.hellos,
                 resume_step=msg.resume_step, state=rec.state)
        self._send(site, Welcome(version=PROTOCOL_VERSION, run_id=self.settings.run_id, image_size=self.settings.image.size,
                                 model=to_dict(self.settings.model), condition_source=self.settings.condition_source,
                                 planned_steps=self.settings.train.steps, aggregation=self.settings.aggregation,
                                 image=self.settings.image.wire_form()))

    def _handle_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            name = {
                zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",
                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no_detail",
            }.get(event)
            if name == "auth" and self._self_check_events > 0:
                self._self_check_events -= 1  # the start-up probe's own refusal: expected
                log.info("handshake_rejected", reason=name, self_check=True)
            elif name is not None:
                self.runlog.handshake_failures[name] += 1
                self.log_limiter.warning(log, "handshake_rejected", reason=name)
            elif event == zmq.EVENT_DISCONNECTED:
                log.debug("peer_disconnected")

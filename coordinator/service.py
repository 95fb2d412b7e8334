"""The coordinator process: one event loop over the ROUTER socket.

Lifecycle:
1. ZAP authenticator (allow-list = the manifest's site keys) -> bind the CURVE ROUTER -> self-check
   that a throwaway client with an unknown key is refused (fail loudly otherwise).
2. Build G, its optimiser and the condition source, or restore them from ``state_dir`` with
   ``resume`` (the step counter, round counter and RNG state continue), through
   :func:`coordinator.build.build_generator_core` and its one resume rule.
3. Loop: receive and validate inbound messages (every failure is a counted, logged ProtocolError
   answered with an ErrorReply; nothing stops the loop), reap silent sites, run rounds through
   the :class:`~coordinator.scheduler.Scheduler`, checkpoint every ``checkpoint_every`` steps,
   rewrite ``run.json`` periodically. With ``aggregation = "secure-sum"`` the rounds are run by
   :class:`~coordinator.secure_sum.SecureSumScheduler` (one shared batch, masked contributions, the
   sum applied once) and run.json gains a ``secure_sum`` block (bytes and time per round, retries,
   the distributed-noise assumption); the participant keys come from the verified manifest.
4. End: ``completed`` / ``quorum_lost`` / ``quorum_impossible`` -> Stop to every site, final
   checkpoint and run.json. SIGTERM/SIGINT -> checkpoint and run.json (status ``interrupted``) but
   NO Stop, so the sites keep waiting and rejoin a ``--resume``.
5. Linger (:mod:`coordinator.final_stop`): after a Stop to every site the coordinator stays up,
   answering every valid message of a known site with the final Stop, until every site that joined
   the run has acknowledged it (StopAck) or ``stop_linger_s`` has passed; a site that missed the
   Stop (paused, partitioned, reconnecting) still learns that the run ended. No batch is sent and no
   reply is applied meanwhile; run.json is written again with a ``final_stop`` block. A signal ends
   the linger at once.

Staying up: the soft limit on open files is raised at start (idle TCP connections each hold one
until the CURVE handshake timeout drops them); a run.json or periodic checkpoint write that fails is
counted, logged and retried, never the end of the run; a batch the wire limits cannot carry is
refused when the configuration loads and, should one still occur, stops the run with a reason
(``batch_unencodable``) instead of a traceback. Sites of the manifest that never said Hello are
named in a periodic ``waiting_for_sites`` warning and in run.json (``no_hello``).

The loop is ``serve``: one ``step_once(now)`` after another until it returns how the run ended.
Its parts live beside it: inbound messages and their checks in :mod:`coordinator.inbound`,
run.json, checkpoint retries and the round mark in :mod:`coordinator.upkeep`, the rounds in
:mod:`coordinator.scheduler` (and :mod:`coordinator.secure_sum`), G in :mod:`coordinator.core`.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq

from secgan.core.errors import ProtocolError, SecganError
from secgan.core.logs import LogLimiter, get_logger
from secgan.gan.checkpoint import CHECKPOINT_FILE
from secgan.net import codec, replay
from secgan.net.schema import AGGREGATIONS, Message, Stop
from secgan.net.transport import AllowListPolicy, ZapAuthenticator, make_router, self_check_rejects_unknown

from coordinator.config import ServiceConfig, generator_run_config
from coordinator.final_stop import FinalStop
from coordinator.inbound import Inbound, frame_bytes
from coordinator.registry import DEAD, Registry
from coordinator.runlog import RunLog
from coordinator.scheduler import START, STOP, RoundResult, Scheduler
from coordinator.upkeep import OPEN_FILES_LOW, RUN_JSON, Upkeep, raise_open_files_limit

log = get_logger(__name__)

SECURE_SUM_SOURCES = ("procedural", "bank")
# a pass of the loop waits at most this long for a message (less when the round's deadline is nearer)
POLL_MS = 100
# at most this many messages are read in one pass, so the loop stays responsive under a flood
DRAIN_MAX = 1000


class _SelfCheckDenialIsInfo(logging.Filter):
    """While the start-up self-check runs, the ZAP handler's refusal of its throwaway key is the
    expected outcome: logged as info (``self_check=True``), not as a warning about a stranger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "zap_denied":
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.secgan_fields = {**getattr(record, "secgan_fields", {}), "self_check": True}
        return True


class Coordinator(Inbound, Upkeep):
    def __init__(self, cfg: ServiceConfig, *, resume: bool = False) -> None:
        settings = cfg.settings
        if settings.aggregation not in AGGREGATIONS:
            raise SecganError(f"aggregation {settings.aggregation!r} is not served by this coordinator")
        if settings.aggregation == "secure-sum":
            if settings.condition_source not in SECURE_SUM_SOURCES:
                raise SecganError("aggregation 'secure-sum' draws one shared batch at the coordinator: "
                                  "condition_source must be 'procedural' or 'bank'")
            if not cfg.agreement_roster or set(cfg.agreement_roster) != set(cfg.site_keys):
                raise SecganError("aggregation 'secure-sum' needs every site's x25519_public from the manifest")
        self.cfg = cfg
        self.settings = settings
        self.resume = resume
        self.state_dir = Path(settings.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(sorted(cfg.site_keys))
        self.guard = replay.ReplayGuard(run_id=settings.run_id)
        # repeated warnings (a flood of bad frames, refused handshakes): first lines per
        # (event, site, code) and window, then one summary line with the count
        self.log_limiter = LogLimiter(burst=10, window_s=60.0)
        self.internal_errors: Counter = Counter()  # unexpected exceptions from one message, by type
        self.seq = replay.initial_seq()
        self._stop_signal: str | None = None
        self.step_seconds: list[float] = []  # wall time of each completed step (retries included)
        self._first_round_at: float | None = None
        self._last_step_at: float | None = None
        self.ctx: zmq.Context | None = None
        self.router: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None
        self.zap: ZapAuthenticator | None = None
        self.policy = AllowListPolicy(cfg.site_keys)
        from secgan.net.limits import batch_wire_problem

        problem = batch_wire_problem(image=settings.image, batch_size=settings.train.batch_size, limits=settings.wire,
                                     aggregation=settings.aggregation)
        if problem is not None:
            raise SecganError(problem)
        self.run_config = generator_run_config(settings)
        self._build_core()
        previous = None
        run_json = self.state_dir / RUN_JSON
        if resume and run_json.is_file():
            try:
                previous = json.loads(run_json.read_text())
            except ValueError:
                log.warning("run_json_not_continued", reason="previous run.json is not valid JSON")
                previous = None
        self.runlog = RunLog(run_json, run_id=settings.run_id, previous=previous)
        self.runlog.restore_sites(self.registry)
        self.scheduler.stale += self.runlog.prior_counter("stale_replies")
        self._prior_auth = (self.runlog.prior_counter("auth", "allowed"), self.runlog.prior_counter("auth", "denied"))
        self._self_check_denials = 0  # refusals of the start-up probe: not counted as hostile
        self._self_check_events = 0  # its monitor event(s) still to be recognised
        self._opened_at: float | None = None
        self._next_waiting_warn: float | None = None
        self._checkpoint_due = False
        self._checkpoint_retry_at = 0.0
        self._unencodable = 0  # messages this process could not encode (a batch above the wire limits)
        self._final: FinalStop | None = None  # set when the run has ended with a Stop to the sites
        self._acked_before_end: set[str] = set()  # removed sites that acknowledged the Stop they were told

    # -- model -------------------------------------------------------------------------------------

    def _build_core(self) -> None:
        from secgan.gan.checkpoint import load_checkpoint

        from coordinator.build import build_generator_core

        cfg, settings = self.cfg, self.settings
        ckpt = self.state_dir / CHECKPOINT_FILE
        if self.resume and not ckpt.is_file():
            raise SecganError(f"--resume: no checkpoint in {self.state_dir}")
        self.core, start = build_generator_core(self.run_config, load_checkpoint(ckpt) if self.resume else None)
        round_number = start.round
        if settings.aggregation == "secure-sum":
            from coordinator.secure_sum import SecureSumScheduler

            if self.resume:
                round_number = max(round_number, self._round_mark())
            self.scheduler = SecureSumScheduler(self.core, self.registry, self.settings.quorum, run_id=settings.run_id,
                                                total_steps=settings.train.steps, roster=cfg.agreement_roster,
                                                step=start.step, round_number=round_number)
        else:
            self.scheduler = Scheduler(self.core, self.registry, self.settings.quorum, run_id=settings.run_id,
                                       total_steps=settings.train.steps, step=start.step, round_number=round_number)

    def checkpoint(self) -> Path:
        from coordinator.build import save_generator_core

        return save_generator_core(self.state_dir / CHECKPOINT_FILE, self.core, self.run_config,
                                   step=self.scheduler.step, round=self.scheduler.round_number,
                                   meta={"source": "coordinator"})

    # -- sockets -----------------------------------------------------------------------------------

    def open(self) -> str:
        """Start ZAP, bind, self-check. Returns the bound endpoint."""
        cfg, settings = self.cfg, self.settings
        limits = raise_open_files_limit()
        if limits is not None:
            before, after = limits
            (log.warning if after < OPEN_FILES_LOW else log.info)(
                "open_files_limit", soft_before=before, soft=after,
                **({"note": "low: idle connections may exhaust it; raise the hard limit (ulimit -Hn)"}
                   if after < OPEN_FILES_LOW else {}))
        self.ctx = zmq.Context()
        self.zap = ZapAuthenticator(self.ctx, self.policy).start()
        try:
            self.router = make_router(self.ctx, bind=settings.bind, server_secret=cfg.server_secret,
                                      server_public=cfg.server_public, limits=settings.wire, tuning=settings.tuning)
        except zmq.ZMQError as exc:
            hint = " (is another coordinator running on this port?)" if exc.errno == zmq.EADDRINUSE else ""
            raise SecganError(f"cannot listen on {settings.bind}: {exc.strerror}{hint}") from None
        endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.monitor = self.router.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        if settings.self_check:
            note = _SelfCheckDenialIsInfo()
            zap_log = logging.getLogger("secgan.net.transport")
            denied_before = self.policy.denied
            zap_log.addFilter(note)
            try:
                self_check_rejects_unknown(self.ctx, endpoint=endpoint, server_public=cfg.server_public,
                                           policy=self.policy, limits=settings.wire)
            finally:
                zap_log.removeFilter(note)
                self._self_check_denials = self.policy.denied - denied_before
                self._self_check_events = self._self_check_denials
        self._opened_at = time.monotonic()
        self._next_waiting_warn = self._opened_at + max(settings.quorum.startup_grace_s, 1.0)
        log.info("coordinator_listening", endpoint=endpoint, run_id=settings.run_id, sites=len(cfg.site_keys),
                 step=self.scheduler.step, min_sites=settings.quorum.min_sites, incarnation=self.runlog.incarnation)
        return endpoint

    def close(self) -> None:
        if self.router is not None:
            self.router.disable_monitor()
            self.router.close(linger=self.settings.tuning.linger_ms)
            self.router = None
        if self.monitor is not None:
            self.monitor.close(0)
            self.monitor = None
        if self.zap is not None:
            self.zap.stop()
            self.zap = None
        if self.ctx is not None:
            self.ctx.destroy(linger=0)  # anything still open (a failed start) is closed, never waited on
            self.ctx = None

    def _send(self, site: str, msg: Message, *, routing_id: bytes | None = None) -> int | None:
        """Encode and route one message; None when the site cannot be reached right now."""
        rec = self.registry.sites.get(site)
        rid = routing_id if routing_id is not None else (rec.routing_id if rec else None)
        if rid is None:
            return None
        self.seq += 1
        rnd = getattr(msg, "round", self.scheduler.round_number)
        step = getattr(msg, "step", self.scheduler.step)
        try:
            frames = codec.encode(msg, run_id=getattr(msg, "run_id", self.settings.run_id), round=rnd, step=step,
                                 site=site, seq=self.seq, limits=self.settings.wire)
        except ProtocolError as exc:  # e.g. a batch above wire.max_tensor_bytes: refused here, never sent
            self._unencodable += 1
            log.error("send_unencodable", site=site, type=msg.TYPE, code=exc.code)
            return None
        try:
            self.router.send_multipart([rid, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            reason = "unroutable" if exc.errno == zmq.EHOSTUNREACH else "send_queue_full"
            self.log_limiter.warning(log, "send_failed", site=site, type=msg.TYPE, reason=reason)
            if rec is not None and reason == "unroutable" and self.registry.mark_dead(site, reason=reason):
                self.scheduler.on_site_lost(site)
            return None
        n = frame_bytes(frames)
        if rec is not None:
            rec.bytes_out += n
        return n

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self._stop_signal = signal.Signals(signum).name

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def _progress(self):
        from tqdm import tqdm

        show = self.cfg.progress if self.cfg.progress is not None else sys.stderr.isatty()
        return tqdm(total=self.settings.train.steps, initial=self.scheduler.step, file=sys.stderr,
                    disable=not show, unit="step", dynamic_ncols=True)

    # -- the loop ---------------------------------------------------------------------------------

    def serve(self, *, install_signals: bool = True) -> dict[str, Any]:
        """Run until the run ends; returns the final run.json content."""
        if install_signals:
            self._install_signals()
        try:
            self.open()
        except BaseException:
            self.close()  # stop the ZAP thread and release the port before reporting
            raise
        self._poller = zmq.Poller()
        self._poller.register(self.router, zmq.POLLIN)
        self._poller.register(self.monitor, zmq.POLLIN)
        self._bar = self._progress()
        self._last_json = 0.0
        self._step_started = time.monotonic()  # set again when each step's first round starts
        try:
            ended = None
            while ended is None:
                ended = self.step_once(time.monotonic())
            final = self._finish(*ended)
            if self._final is not None and not self._final.may_close(time.monotonic()):
                final = self._linger(*ended)
            return final
        finally:
            self._bar.close()
            self.close()

    def step_once(self, now: float) -> tuple[str, str | None] | None:
        """One pass of the loop: signals, inbound messages, silent sites, the round's end, the next
        round's start, upkeep. Returns (status, stop reason) when the run ends, else None."""
        if self._stop_signal:
            return "interrupted", self._stop_signal
        self._receive(now)
        now = time.monotonic()
        for site in self.registry.reap(now=now, timeout_s=self.settings.heartbeat_timeout_s, busy=self.scheduler.busy()):
            log.warning("site_dead", site=site, reason="heartbeat_timeout")
            self.scheduler.on_site_lost(site)
        if self.scheduler.current is not None and self.scheduler.round_done(now):
            result = self.scheduler.close_round()
            if result.stepped:
                self._on_step(result, now)
            if result.stop_reason:
                return "stopped", result.stop_reason
        if self.scheduler.current is None:  # start the next round in the same pass
            ended = self._next_round(time.monotonic())
            if ended is not None:
                return ended
        self._upkeep(now)
        return None

    def _receive(self, now: float) -> None:
        """Wait for messages (until the round's deadline at most) and handle what came."""
        rnd = self.scheduler.current
        wait_ms = POLL_MS if rnd is None or self._final is not None else max(
            0, min(POLL_MS, int((rnd.deadline - now) * 1000) + 1))
        events = dict(self._poller.poll(wait_ms))
        if self.router in events:
            for _ in range(DRAIN_MAX):
                try:
                    frames = self.router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._handle_inbound(frames, time.monotonic())
        if self.monitor in events:
            self._handle_monitor()

    def _on_step(self, result: RoundResult, now: float) -> None:
        self._bar.update(1)
        log.info("step_done", step=result.step, answered=result.answered, seconds=round(now - self._step_started, 4),
                 grad_norm=round(result.stats.get("grad_norm", 0.0), 6))
        self.step_seconds.append(now - self._step_started)
        self._last_step_at = now
        if self.scheduler.step % self.settings.train.checkpoint_every == 0:
            self._try_checkpoint()  # a failure is retried later in the loop

    def _next_round(self, now: float) -> tuple[str, str | None] | None:
        """Start the next round when the scheduler is ready; (status, reason) when the run ends."""
        decision, reason = self.scheduler.readiness(now)
        if decision == STOP:
            return ("completed" if reason == "completed" else "stopped"), reason
        if decision != START:
            return None
        if self.scheduler.attempt == 0:
            self._step_started = now
        if self._first_round_at is None:
            self._first_round_at = now
        if self.settings.aggregation == "secure-sum" and not self._try_round_mark():
            return None  # never a round whose number could be reused; retried next pass
        unencodable = self._unencodable
        try:
            rnd = self.scheduler.start_round(now, self._send)
        except SecganError as exc:  # e.g. an unreadable condition bank: that round only
            log.error("round_start_failed", error=str(exc)[:200])
            rnd = self.scheduler.current
        if rnd is not None and not rnd.in_flight and self._unencodable > unencodable:
            return "stopped", "batch_unencodable"
        return None

    def _upkeep(self, now: float) -> None:
        if self._checkpoint_due and now >= self._checkpoint_retry_at:
            self._try_checkpoint()
        self._warn_waiting(now)
        if now - self._last_json > self.settings.run_json_every_s:
            self._write_run_json("running", None)  # a failed write is counted and retried
            self._last_json = now

    def _finish(self, status: str, stop_reason: str | None) -> dict[str, Any]:
        """Stop to every site (not after a signal: they wait for a --resume), final checkpoint and run.json."""
        if status != "interrupted":
            self._final = FinalStop.for_registry(self.registry, reason=stop_reason or status, now=time.monotonic(),
                                                 linger_s=self.settings.stop_linger_s, acked=self._acked_before_end)
            for site, rec in self.registry.sites.items():
                if rec.routing_id is not None and rec.state != DEAD:
                    if self._send(site, Stop(run_id=self.settings.run_id, reason=self._final.reason)) is not None:
                        self._final.sent(site)
        for rec in self.registry.sites.values():  # why each site stopped, for run.json
            if rec.stop_reason is None:
                rec.stop_reason = stop_reason or status
        if not self._try_checkpoint():
            log.error("final_checkpoint_failed", note="a --resume continues from the last checkpoint written")
        final = self._write_run_json(status, stop_reason)
        log.info("run_finished", status=status, reason=stop_reason, steps=self.scheduler.step,
                 rounds=self.scheduler.round_number)
        return final

    def _linger(self, status: str, stop_reason: str | None) -> dict[str, Any]:
        """Answer the sites with the final Stop until every one that joined has acknowledged it or
        ``stop_linger_s`` has passed (a signal ends it at once); then run.json once more."""
        final = self._final
        log.info("final_stop_linger", owed=len(final.owed), pending=len(final.pending()), linger_s=final.linger_s)
        while not final.may_close(time.monotonic()):
            if self._stop_signal:
                log.info("final_stop_linger_ended", reason=self._stop_signal)
                break
            self._receive(time.monotonic())
        final.close(time.monotonic())
        unacked = final.pending()
        (log.warning if unacked else log.info)(
            "final_stop_done", acknowledged=len(final.acked & final.owed), owed=len(final.owed),
            seconds=round(final.closed_at - final.started, 3),
            **({"unacknowledged": ", ".join(unacked[:20]), "note": "they may not know the run ended"} if unacked else {}))
        return self._write_run_json(status, stop_reason)

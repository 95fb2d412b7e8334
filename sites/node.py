"""The site process: one DEALER to the coordinator, one learner, one loop.

Session rule (documented in the README's operator notes):
- the site sends Hello when it starts and then every ``hello_retry_s`` until a Welcome arrives;
- once welcomed it sends a Heartbeat every ``heartbeat_s`` (with the run id and the last round it
  saw, so the coordinator's replay guard accepts it);
- an ErrorReply ``not_welcomed`` / ``unknown_peer`` / ``wrong_run`` means the coordinator does not
  know this session (it restarted, or declared the site dead): the site forgets the coordinator's
  replay state and says Hello again at once. This is how it rejoins after either side restarts;
- the DEALER itself reconnects with exponential backoff (RECONNECT_IVL .. RECONNECT_IVL_MAX);
  while disconnected, sends fail immediately (IMMEDIATE) and are dropped rather than queued;
- dead link: the coordinator answers every Heartbeat, so silence means the link is gone (libzmq
  drops a connection on a frame above MAXMSGSIZE and never reconnects it). No message of any kind
  for ``dead_link_heartbeats`` heartbeat intervals: the site warns, closes and reopens its DEALER
  and says Hello again (repeated every such interval while the silence lasts);
- no answer at all (wrong port, coordinator not started yet): a ``no_answer`` warning naming the
  endpoint every ``no_answer_warn_s`` while the silence lasts.

Run plan (Welcome.planned_steps): the site compares the run's steps with the steps its noise was
calibrated for (``policy.planned_steps``) and logs both numbers and the epsilon the run will
actually spend; on a mismatch it warns, or, with ``policy.on_steps_mismatch = "refuse"``, answers
the first batch with a final Refusal ``steps_mismatch`` (nothing charged) and exits with code 2.

Secure-sum mode (the Welcome says ``aggregation = "secure-sum"``): a FakeBatch is served by the
learner as usual but the gradient is held, never sent; only masked contributions go out
(:mod:`sites.secure_round`).

Every release goes through the learner (which accounts and writes its ledger before returning
and saves D on its own cadence), so a kill -9 + restart resumes from the site's state. Malformed
inbound frames are logged by code, answered with an ErrorReply and never end the loop. Stop,
SIGTERM and SIGINT end it cleanly (exit code 0). A Stop is terminal and acknowledged (StopAck): a
site that missed the final Stop (paused, partitioned, reconnecting) gets it again from the
lingering coordinator when it next talks (a heartbeat, a Hello after a reconnect), and exits. A
coordinator gone for good is retried for ever: it may come back with ``--resume``.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import zmq

from secgan.net import codec, replay
from secgan.net.errors import PROTOCOL_ERRORS
from secgan.core.errors import ProtocolError, SecganError
from secgan.core.fsio import atomic_write_json
from secgan.core.logs import LogLimiter, get_logger
from secgan.net.schema import (
    AGGREGATIONS,
    SUPPORTED_VERSIONS,
    ErrorReply,
    BATCH_TYPES,
    Batch,
    GradientReply,
    Heartbeat,
    Hello,
    Message,
    Refusal,
    SecAggAnnounce,
    Stop,
    StopAck,
    Welcome,
)
from secgan.net.transport import make_dealer

from sites.checks import image_spec_differs
from sites.config import NodeConfig
from sites.interfaces import Learner
from sites.secure_round import Held, SecureSumSide

log = get_logger(__name__)

COORDINATOR = "coordinator"  # the replay-guard key of the one peer a site has
# the coordinator does not know this session (it restarted, declared us dead) or finds our
# numbering implausible (ahead of a restored coordinator, or a seq it has seen): a new session
REHELLO_CODES = frozenset({"not_welcomed", "unknown_peer", "wrong_run", "future_round", "replay", "seq_ahead"})
MAX_ROUND_AHEAD = 2**16
FATAL_CODES = frozenset({"unsupported_version", "source_refused"})


def install_stop_signals(stop: Callable[[str], None]) -> None:
    """SIGTERM and SIGINT call ``stop`` with the signal's name (the loop then ends cleanly)."""
    def handler(signum: int, _frame: Any) -> None:
        stop(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


class SiteNode(SecureSumSide):
    def __init__(self, cfg: NodeConfig, learner: Learner, *, secure_sum: Callable[[str], Any] | None = None) -> None:
        """``learner``: the seam of :class:`sites.interfaces.Learner` (``sites.learner.SiteLearner``);
        it keeps its own durable state. ``secure_sum``: run id -> ``secgan.secagg.SecureSumClient`` built from the
        verified manifest's roster (None: this site cannot join secure-sum runs)."""
        self.cfg = cfg
        self.settings = cfg.settings
        self.learner = learner
        self.secure_sum_factory = secure_sum
        self.secagg: Any = None  # SecureSumClient of the current run (kept across sessions: masks never repeat)
        self.aggregation = "routed"
        self._held: Held | None = None
        # a coordinator sends every round to every welcomed site, so within a session its rounds
        # and steps move by a few at a time; far beyond that is refused, not remembered
        # (the coordinator numbers its messages to all sites in one sequence: no seq window, only
        # the clock bound)
        self.guard = replay.ReplayGuard(max_round_ahead=MAX_ROUND_AHEAD, max_seq_ahead=None)
        self.sessions = 0  # Hellos sent: a new session forgets the coordinator's replay state
        # repeated warnings (a flood of bad frames): first lines per code and window, then counts
        self.log_limiter = LogLimiter(burst=10, window_s=60.0)
        self.seq = replay.initial_seq()
        self.run_id = ""
        self.welcomed = False
        self.last_round = 0
        self.last_step = 0
        self.served: set[tuple[int, int]] = set()
        self.counts: Counter = Counter()
        self.exit_reason: str | None = None
        self.exit_code = 0
        self._signal: str | None = None
        self._last_sent = 0.0
        self._last_hello = -1e9
        self._last_recv = time.monotonic()  # any inbound message; the dead-link clock
        self._last_reconnect = self._last_recv
        self._last_warned = self._last_recv
        self._refuse_run: str | None = None  # a run this site's policy refuses (steps_mismatch)
        self._plan_checked: str | None = None  # run id whose plan was checked
        self._last_status = 0.0
        self.ctx: zmq.Context | None = None
        self._own_ctx = True  # False when a host lent the context
        self.sock: zmq.Socket | None = None

    # -- sending -----------------------------------------------------------------------------------

    def _send(self, msg: Message) -> bool:
        self.seq += 1
        run = getattr(msg, "run_id", self.run_id)
        frames = codec.encode(msg, run_id=run, round=getattr(msg, "round", self.last_round),
                             step=getattr(msg, "step", self.last_step), site=self.settings.site_id, seq=self.seq,
                             limits=self.settings.wire)
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.counts["send_dropped"] += 1
            log.debug("send_dropped", type=msg.TYPE, reason="not_connected")
            return False
        self._last_sent = time.monotonic()
        self.counts[f"sent_{msg.TYPE}"] += 1
        return True

    def _hello(self) -> None:
        # a new session: the coordinator's numbering may restart (new incarnation)
        self.sessions += 1
        self.guard.forget(COORDINATOR)
        self.served.clear()  # round numbers of an earlier coordinator incarnation may come again
        self.welcomed = False
        self.last_round = 0
        self.last_step = 0
        self._last_hello = time.monotonic()
        if self._send(Hello(versions=SUPPORTED_VERSIONS, policy=self.settings.policy.summary(),
                            resume_step=self._releases())):
            log.info("hello_sent", site=self.settings.site_id)

    def _releases(self) -> int:
        """How many steps this site has served so far (its learner's durable count)."""
        return int(self.learner.releases)

    # -- receiving ---------------------------------------------------------------------------------

    def handle(self, frames: list[Any]) -> None:
        """Validate and act on one inbound message; nothing escapes. A ProtocolError is counted,
        logged (rate-limited) and answered; any other exception is counted and logged by type."""
        self.log_limiter.summarize(log)
        msg = None
        try:
            env, msg = codec.decode(frames, limits=self.settings.wire)
            # "you have no session": the coordinator lost ours (e.g. it restarted), so its numbering
            # may start afresh; checked as the first message of a new session
            fresh = isinstance(msg, ErrorReply) and msg.code in REHELLO_CODES
            self.guard.check(env, peer=COORDINATOR, new_session=fresh)
            session = self.sessions
            self._dispatch(msg)
            # only an accepted message moves the guard; none if it made us start a new session
            if self.sessions == session:
                self.guard.commit(env, peer=COORDINATOR, new_session=fresh)
        except ProtocolError as exc:
            self.counts[f"rejected_{exc.code}"] += 1
            self.log_limiter.warning(log, "inbound_rejected", code=exc.code)
            if exc.code not in ("stale",) and codec.answerable(exc, msg):
                self._send(ErrorReply(code=exc.code, detail=PROTOCOL_ERRORS.get(exc.code, "")[:200]))
        except Exception as exc:  # noqa: BLE001 - defence in depth: one message never stops the site
            self.counts["internal_error"] += 1
            self.counts[f"internal_{type(exc).__name__}"] += 1
            self.log_limiter.warning(log, "inbound_failed", error=type(exc).__name__)

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, Welcome):
            self._on_welcome(msg)
        elif isinstance(msg, BATCH_TYPES):
            self._on_batch(msg)
        elif isinstance(msg, SecAggAnnounce):
            self._on_announce(msg)
        elif isinstance(msg, Stop):
            self._on_stop(msg)
        elif isinstance(msg, ErrorReply):
            self._on_error(msg)
        elif isinstance(msg, Heartbeat):
            pass
        else:
            raise ProtocolError("unexpected_message", f"{msg.TYPE} is never sent by a coordinator")

    def _on_stop(self, msg: Stop) -> None:
        """The run is over: terminal and idempotent. The first Stop sets the exit reason (a later one,
        or one after a fatal refusal, changes nothing); each is acknowledged, so a coordinator that
        lingers after its run (it repeats the Stop to a site that missed it) may close."""
        if self.run_id and msg.run_id != self.run_id:
            raise ProtocolError("wrong_run", "stop for another run")
        if self.exit_reason is None:
            log.info("stop_received", reason=msg.reason[:64], sessions=self.sessions)
            self.exit_reason = f"stop:{msg.reason[:64]}"
        self._send(StopAck(run_id=msg.run_id))

    def _on_welcome(self, msg: Welcome) -> None:
        if self.welcomed:
            if msg.run_id == self.run_id:  # the answer to a repeated Hello: nothing changes
                log.debug("duplicate_welcome")
                return
            raise ProtocolError("unexpected_message", "already welcomed in this session")
        if msg.version not in SUPPORTED_VERSIONS:
            self._fatal("unsupported_version", 2)
            return
        if msg.image_size != self.settings.image.size:
            log.error("welcome_refused", reason="image_size", theirs=msg.image_size, ours=self.settings.image.size)
            self._fatal("image_size_mismatch", 2)
            return
        differ = image_spec_differs(msg.image_size, msg.image, self.settings.image)
        if differ:
            log.error("welcome_refused", reason="image_spec", differ=differ)
            self._fatal("image_spec_mismatch", 2)
            return
        refusal = self.learner.refuses_source(msg.condition_source)
        if refusal or msg.condition_source not in self.settings.policy.accept_sources:
            log.error("welcome_refused", reason="condition_source", source=msg.condition_source)
            self._fatal("source_refused", 3)
            return
        if msg.aggregation not in AGGREGATIONS:
            log.error("welcome_refused", reason="aggregation", aggregation=msg.aggregation)
            self._fatal("aggregation_unknown", 2)
            return
        if msg.aggregation == "secure-sum":
            if self.secure_sum_factory is None:
                log.error("welcome_refused", reason="secure_sum_unavailable")
                self._fatal("secure_sum_unavailable", 2)
                return
            if self.secagg is None or self.secagg.run_id != msg.run_id:
                self.secagg = self.secure_sum_factory(msg.run_id)
                self._held = None
        if self.run_id and self.run_id != msg.run_id:
            log.warning("run_changed")
        self.aggregation = msg.aggregation
        self.run_id = msg.run_id
        self.welcomed = True
        log.info("welcomed", site=self.settings.site_id, run_id=msg.run_id, source=msg.condition_source,
                 aggregation=msg.aggregation, planned_steps=msg.planned_steps)
        if self._plan_checked != msg.run_id:
            self._plan_checked = msg.run_id
            self._check_plan(msg.planned_steps)

    def _check_plan(self, run_steps: int) -> None:
        """Compare the run's steps with the steps this site's noise was planned for (site log only:
        the exact epsilon never goes on the wire)."""
        plan = self.learner.plan(run_steps)
        if plan is None:  # nothing accounted (mode "off")
            return
        fields = {k: plan[k] for k in ("run_steps", "planned_steps", "epsilon_run", "target_epsilon",
                                       "budget_lasts_steps")}
        if not plan["mismatch"]:
            log.info("run_plan", **fields)
            return
        if self.settings.policy.on_steps_mismatch == "refuse":
            log.error("steps_mismatch", action="refuse", **fields)
            self._refuse_run = (f"the run plans {run_steps} steps but this site's noise is calibrated for "
                                f"{plan['planned_steps']}; its policy refuses such a run (on_steps_mismatch)")
        else:
            log.warning("steps_mismatch", action="continue", **fields)

    def _on_batch(self, msg: Batch) -> None:
        if not self.welcomed:
            raise ProtocolError("not_welcomed", "batch before Welcome")
        if msg.run_id != self.run_id:
            raise ProtocolError("wrong_run", "batch for another run")
        key = (msg.round, msg.step)
        if key in self.served:
            raise ProtocolError("replay", "this round was already served")
        self.last_round, self.last_step = msg.round, msg.step
        if self._refuse_run is not None:  # nothing is charged: the learner never sees the batch
            self.counts["refused_steps_mismatch"] += 1
            self._send(Refusal(run_id=msg.run_id, round=msg.round, step=msg.step, code="steps_mismatch",
                               reason=self._refuse_run[:200], final=True))
            self._fatal("steps_mismatch", 2)
            return
        secure = self.aggregation == "secure-sum"
        t0 = time.perf_counter()
        try:
            reply = self.learner.serve(msg, distributed_noise=secure)
        except ProtocolError:
            raise
        except Exception as exc:  # noqa: BLE001 - a privacy invariant, a numeric error: refuse this step, keep serving
            log.error("serve_failed", error=type(exc).__name__)
            reply = Refusal(run_id=msg.run_id, round=msg.round, step=msg.step, code="site_error",
                            reason=type(exc).__name__)
        self.served.add(key)
        if len(self.served) > 1024:
            self.served = {k for k in self.served if k[0] >= msg.round - 512}
        if isinstance(reply, GradientReply):
            # the learner saves its own state on its own cadence (ledger before every release)
            self.counts["served"] += 1
        else:
            self.counts[f"refused_{reply.code}"] += 1
            log.warning("step_refused", code=reply.code, final=reply.final)
        if secure and isinstance(reply, GradientReply):
            # never sent in the clear: held until this step's announcement masks it
            self._held = Held(key=key, grad=reply.grad, budget_left=reply.budget_left)
            log.info("batch_held", round=msg.round, step=msg.step, seconds=round(time.perf_counter() - t0, 4),
                     budget_left=reply.budget_left)
            return
        self._send(reply)
        log.info("batch_served", round=msg.round, step=msg.step, reply=reply.TYPE,
                 seconds=round(time.perf_counter() - t0, 4), budget_left=getattr(reply, "budget_left", None))

    def _on_error(self, msg: ErrorReply) -> None:
        log.warning("coordinator_error", code=msg.code)
        if msg.code in REHELLO_CODES and (msg.code != "seq_ahead" or self.welcomed):
            # (a Hello refused as seq_ahead, a clock far ahead, is retried on the Hello timer)
            self._hello()
        elif msg.code in FATAL_CODES:
            self._fatal(msg.code, 3 if msg.code == "source_refused" else 2)

    def _fatal(self, reason: str, code: int) -> None:
        self.exit_reason = reason
        self.exit_code = code

    # -- loop --------------------------------------------------------------------------------------

    def write_status(self) -> None:
        # epsilon and releases are the learner's ledger's own (already durable) figures,
        # so site.json never disagrees with ledger.json; counts are this process's only
        eps, releases = self.learner.epsilon(), self.learner.releases
        atomic_write_json(Path(self.settings.state_dir) / "site.json", {
            "site_id": self.settings.site_id, "run_id": self.run_id, "welcomed": self.welcomed,
            "epsilon": eps, "releases": releases, "counts": dict(self.counts), "exit_reason": self.exit_reason,
        })

    def open(self, ctx: zmq.Context | None = None) -> None:
        """Open the DEALER and start the clocks. ``ctx``: a context shared with other nodes (a
        host); it stays its owner's, ``close`` terminates only a context this node made."""
        cfg, settings = self.cfg, self.settings
        Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
        self._own_ctx = ctx is None
        self.ctx = zmq.Context() if ctx is None else ctx
        self.sock = make_dealer(self.ctx, endpoint=settings.coordinator_endpoint, client_public=cfg.client_public,
                                client_secret=cfg.client_secret, server_public=cfg.server_public,
                                limits=settings.wire, tuning=settings.tuning)
        self._last_recv = self._last_reconnect = self._last_warned = time.monotonic()
        self._last_status = 0.0
        log.info("site_started", site=settings.site_id, endpoint=settings.coordinator_endpoint)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=self.settings.tuning.linger_ms)
            self.sock = None
        if self.ctx is not None and self._own_ctx:
            self.ctx.term()
        self.ctx = None

    def _check_link(self, now: float) -> None:
        """Warn about, and recover from, a coordinator that has not been heard for a while."""
        settings = self.settings
        silent = now - self._last_recv
        if silent >= settings.no_answer_warn_s and now - self._last_warned >= settings.no_answer_warn_s:
            self._last_warned = now
            log.warning("no_answer", endpoint=settings.coordinator_endpoint, seconds=round(silent, 1), welcomed=self.welcomed,
                        hint=f"no answer from {settings.coordinator_endpoint} for {silent:.0f} s: is the coordinator running, "
                             "and is coordinator_endpoint its address and port?")
        dead_after = settings.dead_link_heartbeats * settings.heartbeat_interval_s
        if silent >= dead_after and now - self._last_reconnect >= dead_after:
            self._last_reconnect = now
            self.counts["reconnects"] += 1
            log.warning("dead_link", endpoint=settings.coordinator_endpoint, seconds=round(silent, 1), welcomed=self.welcomed,
                        action="reconnect", reconnects=self.counts["reconnects"])
            self._reconnect()

    def _reconnect(self) -> None:
        """Close the DEALER (dropping whatever it still queues) and open a fresh one, then Hello."""
        cfg, settings = self.cfg, self.settings
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = make_dealer(self.ctx, endpoint=settings.coordinator_endpoint, client_public=cfg.client_public,
                                client_secret=cfg.client_secret, server_public=cfg.server_public,
                                limits=settings.wire, tuning=settings.tuning)
        self._hello()

    def before_poll(self, now: float) -> None:
        """The timers that run before each wait for input: Hello until welcomed, then Heartbeats;
        a pending signal becomes the exit reason."""
        if self._signal and self.exit_reason is None:
            self.exit_reason = f"signal:{self._signal}"
            return
        if not self.welcomed and now - self._last_hello > self.settings.hello_retry_s:
            self._hello()
        elif self.welcomed and now - self._last_sent > self.settings.heartbeat_interval_s:
            self._send(Heartbeat())

    def step_once(self, now: float, *, readable: bool) -> bool:
        """One pass of the loop after the wait: handle what the socket holds (``readable``: the wait
        saw input), check the link, write the status on its cadence. False once the node should stop
        (``finish`` then ends it)."""
        if self.exit_reason is not None:
            return False
        if readable:
            for _ in range(64):
                try:
                    frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self.handle(frames)
                # any message, even a rejected one, shows the link works; the clock starts
                # after handling, so a long local step is not counted as silence
                self._last_recv = time.monotonic()
                if self.exit_reason is not None:
                    break
        if self.exit_reason is None:
            self._check_link(time.monotonic())
        if now - self._last_status > self.settings.status_every_s:
            self.write_status()
            self._last_status = now
        return self.exit_reason is None

    def finish(self) -> int:
        """Log the exit, save the learner, write the final status; the exit code. The caller closes."""
        log.info("site_exiting", reason=self.exit_reason, served=self.counts.get("served", 0))
        try:
            self.learner.save()
        except SecganError as exc:
            log.error("final_save_failed", error=type(exc).__name__)
        self.write_status()
        return self.exit_code

    def request_stop(self, reason: str) -> None:
        """Ask the loop to end (a signal to a host): the next ``before_poll`` makes it the exit reason."""
        self._signal = reason

    def serve(self, *, install_signals: bool = True) -> int:
        if install_signals:
            install_stop_signals(self.request_stop)
        self.open()
        try:
            while True:
                now = time.monotonic()
                self.before_poll(now)
                if self.exit_reason is not None:
                    break
                if not self.step_once(now, readable=bool(self.sock.poll(100))):
                    break
            return self.finish()
        finally:
            self.close()

"""The coordinator process: one event loop over the ROUTER socket.

Lifecycle:
1. ZAP authenticator (allow-list = the manifest's site keys) -> bind the CURVE ROUTER -> self-check
   that a throwaway client with an unknown key is refused (fail loudly otherwise).
2. Build G, its optimiser and the condition source, or restore them from ``state_dir`` with
   ``resume`` (the step counter, round counter, run id and RNG state continue).
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

Staying up: the soft limit on open files is raised at start (idle TCP connections each hold one
until the CURVE handshake timeout drops them); a run.json or periodic checkpoint write that fails is
counted, logged and retried, never the end of the run; a batch the wire limits cannot carry is
refused when the configuration loads and, should one still occur, stops the run with a reason
(``batch_unencodable``) instead of a traceback. Sites of the manifest that never said Hello are
named in a periodic ``waiting_for_sites`` warning and in run.json (``no_hello``).

Inbound checks, in order: the sender's identity is the ZAP User-Id on the frame (never the header's
``site``; a mismatch is ``identity_mismatch``) -> codec.decode -> ReplayGuard check (per identity; a
Hello starts a new session, so a restarted site is not "stale"; round and step never above what
the coordinator has sent, seq at most a window ahead) -> protocol stage for that peer -> the
scheduler's checks against the batch that site was sent -> ReplayGuard commit: a message refused
at any stage never moves the peer's replay state. Rejections are logged through a
:class:`~secgan.core.logs.LogLimiter` (first lines per site and code, then counts); every count is in
run.json. Any other exception from one message is counted by type and the loop goes on.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from secgan.net import codec, replay
from secgan.net.errors import PROTOCOL_ERRORS
from secgan.net.limits import WireLimits
from secgan.core.config import to_dict
from secgan.core.errors import ProtocolError, SecganError
from secgan.core.logs import LogLimiter, get_logger
from secgan.net.schema import (
    AGGREGATIONS,
    PROTOCOL_VERSION,
    ErrorReply,
    GradientReply,
    Heartbeat,
    Hello,
    Message,
    Refusal,
    SecAggMasked,
    Stop,
    Welcome,
)
from secgan.privacy.policy import MODES
from secgan.gan.config import CONDITION_SOURCES, ModelConfig, TrainConfig
from secgan.core.spec import ImageSpec
from secgan.gan.checkpoint import CHECKPOINT_FILE
from secgan.run.config import DataConfig, RunConfig
from secgan.net.transport import (
    AllowListPolicy,
    SocketTuning,
    ZapAuthenticator,
    make_router,
    peer_user_id,
    self_check_rejects_unknown,
)

from coordinator.registry import DEAD, KNOWN, REMOVED, WELCOMED, Registry
from coordinator.runlog import RunLog
from coordinator.scheduler import START, STOP, QuorumPolicy, Scheduler
from coordinator.stages import check_stage

log = get_logger(__name__)

RUN_JSON = "run.json"
SECURE_SUM_SOURCES = ("procedural", "bank")
# secure-sum: the highest round number ever announced, written before the round's first message so
# a resumed run never reuses a (round, step, attempt) context, i.e. never asks for the same masks twice
ROUND_MARK = "secure_sum_round.json"
# Which protocol errors are answered (to the identified sender) and which only counted.
SILENT_CODES = frozenset({"stale"})
# the soft RLIMIT_NOFILE is raised to the hard limit, at most this (each idle TCP connection holds
# one descriptor until the handshake timeout drops it)
OPEN_FILES_CAP = 65536
OPEN_FILES_LOW = 4096  # below this after raising, a warning says so
CHECKPOINT_RETRY_S = 5.0  # a failed periodic checkpoint is tried again this much later


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the coordinator process needs, resolved at the CLI edge (no file reading below)."""

    bind: str
    server_public: bytes
    server_secret: bytes
    site_keys: dict[str, bytes]  # site id -> z85 CURVE public key, from the VERIFIED manifest
    state_dir: Path
    run_id: str
    image: ImageSpec
    model: ModelConfig
    train: TrainConfig
    quorum: QuorumPolicy
    condition_source: str = "procedural"
    bank_dir: Path | None = None
    aggregation: str = "routed"  # or "secure-sum" (needs agreement_roster)
    # site id -> x25519_public from the VERIFIED manifest (secure-sum only)
    agreement_roster: dict[str, str] | None = None
    heartbeat_timeout_s: float = 10.0
    limits: WireLimits = field(default_factory=WireLimits)
    tuning: SocketTuning = field(default_factory=SocketTuning)
    progress: bool | None = None  # None: a bar when stderr is a TTY
    run_json_every_s: float = 5.0
    # "waiting_for_sites" names the manifest's sites without a Hello, first after the start-up
    # grace (quorum.startup_grace_s), then every this many seconds while any is missing
    waiting_warn_every_s: float = 60.0
    self_check: bool = True
    device: str = "cpu"


def _time_stats(xs: list[float]) -> dict[str, float | int | None]:
    if not xs:
        return {"n": 0, "mean": None, "median": None}
    ys = sorted(xs)
    return {"n": len(ys), "mean": round(sum(ys) / len(ys), 5), "median": round(ys[len(ys) // 2], 5)}


def _nbytes(frames: list[Any]) -> int:
    return sum(len(f) for f in frames)


def raise_open_files_limit(cap: int = OPEN_FILES_CAP) -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (at most ``cap``). (before, after), or None
    where the platform has no such limit."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, target


class _SelfCheckDenialIsInfo(logging.Filter):
    """While the start-up self-check runs, the ZAP handler's refusal of its throwaway key is the
    expected outcome: logged as info (``self_check=True``), not as a warning about a stranger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "zap_denied":
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.secgan_fields = {**getattr(record, "secgan_fields", {}), "self_check": True}
        return True


def generator_run_config(cfg: ServiceConfig) -> RunConfig:
    """The run config G is built from and checkpointed with (the sites' side is theirs)."""
    return RunConfig(image=cfg.image, model=cfg.model, train=cfg.train, run_id=cfg.run_id, device=cfg.device,
                     data=DataConfig(condition_source=cfg.condition_source,
                                     bank_dir=str(cfg.bank_dir) if cfg.bank_dir else None))


class Coordinator:
    def __init__(self, cfg: ServiceConfig, *, resume: bool = False) -> None:
        if cfg.aggregation not in AGGREGATIONS:
            raise SecganError(f"aggregation {cfg.aggregation!r} is not served by this coordinator")
        if cfg.aggregation == "secure-sum":
            if cfg.condition_source not in SECURE_SUM_SOURCES:
                raise SecganError("aggregation 'secure-sum' draws one shared batch at the coordinator: "
                                  "condition_source must be 'procedural' or 'bank'")
            if not cfg.agreement_roster or set(cfg.agreement_roster) != set(cfg.site_keys):
                raise SecganError("aggregation 'secure-sum' needs every site's x25519_public from the manifest")
        self.cfg = cfg
        self.resume = resume
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(sorted(cfg.site_keys))
        self.guard = replay.ReplayGuard(run_id=cfg.run_id)
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

        problem = batch_wire_problem(image=cfg.image, batch_size=cfg.train.batch_size, limits=cfg.limits,
                                     aggregation=cfg.aggregation)
        if problem is not None:
            raise SecganError(problem)
        self.run_config = generator_run_config(cfg)
        self._build_core()
        previous = None
        run_json = self.state_dir / RUN_JSON
        if resume and run_json.is_file():
            import json

            try:
                previous = json.loads(run_json.read_text())
            except ValueError:
                log.warning("run_json_not_continued", reason="previous run.json is not valid JSON")
                previous = None
        self.runlog = RunLog(run_json, run_id=cfg.run_id, previous=previous)
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

    # -- model -------------------------------------------------------------------------------------

    def _build_core(self) -> None:
        from secgan.gan.checkpoint import load_checkpoint

        from coordinator.build import build_generator_core

        cfg = self.cfg
        ckpt = self.state_dir / CHECKPOINT_FILE
        if self.resume and not ckpt.is_file():
            raise SecganError(f"--resume: no checkpoint in {self.state_dir}")
        self.core, start = build_generator_core(self.run_config, load_checkpoint(ckpt) if self.resume else None)
        round_number = start.round
        if cfg.aggregation == "secure-sum":
            from coordinator.secure_sum import SecureSumScheduler

            if self.resume:
                round_number = max(round_number, self._round_mark())
            self.scheduler = SecureSumScheduler(self.core, self.registry, self.cfg.quorum, run_id=cfg.run_id,
                                                total_steps=cfg.train.steps, roster=cfg.agreement_roster,
                                                step=start.step, round_number=round_number)
        else:
            self.scheduler = Scheduler(self.core, self.registry, self.cfg.quorum, run_id=cfg.run_id,
                                       total_steps=cfg.train.steps, step=start.step, round_number=round_number)

    def _round_mark(self) -> int:
        import json

        path = self.state_dir / ROUND_MARK
        if not path.is_file():
            return 0
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise SecganError(f"{path}: unreadable secure-sum round mark") from exc
        if not isinstance(data, dict) or data.get("run_id") != self.cfg.run_id or not isinstance(data.get("round"), int):
            raise SecganError(f"{path}: the secure-sum round mark belongs to another run or is malformed")
        return int(data["round"])

    def _write_round_mark(self, round_number: int) -> None:
        from secgan.core.fsio import atomic_write_json

        atomic_write_json(self.state_dir / ROUND_MARK, {"run_id": self.cfg.run_id, "round": round_number})

    def checkpoint(self) -> Path:
        from coordinator.build import save_generator_core

        return save_generator_core(self.state_dir / CHECKPOINT_FILE, self.core, self.run_config,
                                   step=self.scheduler.step, round=self.scheduler.round_number,
                                   meta={"source": "coordinator"})

    # -- sockets -----------------------------------------------------------------------------------

    def open(self) -> str:
        """Start ZAP, bind, self-check. Returns the bound endpoint."""
        cfg = self.cfg
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
            self.router = make_router(self.ctx, bind=cfg.bind, server_secret=cfg.server_secret,
                                      server_public=cfg.server_public, limits=cfg.limits, tuning=cfg.tuning)
        except zmq.ZMQError as exc:
            hint = " (is another coordinator running on this port?)" if exc.errno == zmq.EADDRINUSE else ""
            raise SecganError(f"cannot listen on {cfg.bind}: {exc.strerror}{hint}") from None
        endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.monitor = self.router.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        if cfg.self_check:
            note = _SelfCheckDenialIsInfo()
            zap_log = logging.getLogger("secgan.net.transport")
            denied_before = self.policy.denied
            zap_log.addFilter(note)
            try:
                self_check_rejects_unknown(self.ctx, endpoint=endpoint, server_public=cfg.server_public,
                                           policy=self.policy, limits=cfg.limits)
            finally:
                zap_log.removeFilter(note)
                self._self_check_denials = self.policy.denied - denied_before
                self._self_check_events = self._self_check_denials
        self._opened_at = time.monotonic()
        self._next_waiting_warn = self._opened_at + max(cfg.quorum.startup_grace_s, 1.0)
        log.info("coordinator_listening", endpoint=endpoint, run_id=cfg.run_id, sites=len(cfg.site_keys),
                 step=self.scheduler.step, min_sites=cfg.quorum.min_sites, incarnation=self.runlog.incarnation)
        return endpoint

    def close(self) -> None:
        if self.router is not None:
            self.router.disable_monitor()
            self.router.close(linger=self.cfg.tuning.linger_ms)
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
            frames = codec.encode(msg, run_id=getattr(msg, "run_id", self.cfg.run_id), round=rnd, step=step,
                                 site=site, seq=self.seq, limits=self.cfg.limits)
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
        n = _nbytes(frames)
        if rec is not None:
            rec.bytes_out += n
        return n

    # -- inbound -----------------------------------------------------------------------------------

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
        nbytes = _nbytes(payload)
        if site is None or site not in self.registry:
            # cannot happen behind ZAP; counted so a misconfiguration shows up in run.json
            self.registry.unattributed_drops["unauthenticated"] += 1
            self.runlog.protocol_errors["unauthenticated"] += 1
            self.log_limiter.warning(log, "inbound_rejected", code="unauthenticated")
            return
        self.registry.seen(site, now=now, nbytes=nbytes)
        rec = self.registry[site]
        try:
            env, msg = codec.decode(payload, limits=self.cfg.limits)
            if env.site != site:
                raise ProtocolError("identity_mismatch", "header names another site than the authenticated key")
            # a Hello starts a new session (e.g. a restarted site): checked without the old
            # round and seq, which it replaces only once accepted. Nothing the coordinator has
            # not sent yet can be answered: round and step are bounded by its own counters.
            fresh = isinstance(msg, Hello)
            self.guard.check(env, peer=site, new_session=fresh,
                             max_round=self.scheduler.round_number, max_step=self.scheduler.step)
            check_stage(state=rec.state, msg=msg, run_id=self.cfg.run_id,
                        current_round=self.scheduler.round_number or None,
                        in_flight=self.scheduler.in_flight_for(site))
            self._dispatch(site, routing_id, msg, nbytes, now)
            self.guard.commit(env, peer=site, new_session=fresh)  # only what was accepted moves the guard
        except ProtocolError as exc:
            rec.drops[exc.code] += 1
            self.runlog.protocol_errors[exc.code] += 1
            if exc.code == "stale":
                self.scheduler.stale += 1
            self.log_limiter.warning(log, "inbound_rejected", site=site, code=exc.code, bytes=nbytes)
            if exc.code not in SILENT_CODES:
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
            self._send(site, Stop(run_id=self.cfg.run_id, reason=rec.stop_reason or "removed"))
            return
        if not (rec.state == WELCOMED and rec.routing_id == routing_id):
            # a new connection (restart, reconnect): what it had in flight belonged to the old one;
            # a repeated Hello on the same connection is only a retry and changes nothing
            self.scheduler.on_site_lost(site)
        if self.cfg.condition_source not in sources:
            reason = f"the site's policy does not accept condition source {self.cfg.condition_source!r}"
            self.registry.exclude(site, routing_id=routing_id, reason="source_refused")
            log.warning("site_excluded", site=site, reason="source_refused")
            self._send(site, ErrorReply(code="source_refused", detail=reason), routing_id=routing_id)
            return
        self.registry.welcome(site, routing_id=routing_id, now=now, policy=policy)
        rec = self.registry[site]
        log.info("site_welcomed", site=site, mode=policy.get("mode"), hellos=rec.hellos,
                 resume_step=msg.resume_step, state=rec.state)
        self._send(site, Welcome(version=PROTOCOL_VERSION, run_id=self.cfg.run_id, image_size=self.cfg.image.size,
                                 model=to_dict(self.cfg.model), condition_source=self.cfg.condition_source,
                                 planned_steps=self.cfg.train.steps, aggregation=self.cfg.aggregation))

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

    # -- main loop ---------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self._stop_signal = signal.Signals(signum).name

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def _progress(self):
        from tqdm import tqdm

        show = self.cfg.progress if self.cfg.progress is not None else sys.stderr.isatty()
        return tqdm(total=self.cfg.train.steps, initial=self.scheduler.step, file=sys.stderr,
                    disable=not show, unit="step", dynamic_ncols=True)

    def _no_hello(self) -> list[str]:
        """Sites of the manifest that have not said Hello to this process."""
        return sorted(s for s, r in self.registry.sites.items() if r.state == KNOWN)

    def _warn_waiting(self, now: float) -> None:
        if self._next_waiting_warn is None or now < self._next_waiting_warn:
            return
        self._next_waiting_warn = now + self.cfg.waiting_warn_every_s
        missing = self._no_hello()
        if missing:
            log.warning("waiting_for_sites", sites=", ".join(missing),
                        seconds=int(now - (self._opened_at or now)), note="no Hello yet")

    def _write_run_json(self, status: str, stop_reason: str | None) -> dict[str, Any]:
        allowed0, denied0 = self._prior_auth
        return self.runlog.write(registry=self.registry, scheduler=self.scheduler, status=status,
                                 stop_reason=stop_reason,
                                 extra={"stale_replies": self.scheduler.stale,
                                        "no_hello": self._no_hello(),
                                        "unencodable_messages": self._unencodable,
                                        # the start-up self-check's own probe is not a hostile handshake
                                        "auth": {"allowed": allowed0 + self.policy.allowed,
                                                 "denied": denied0 + self.policy.denied - self._self_check_denials},
                                        "internal_errors": dict(self.internal_errors),
                                        "log_lines_suppressed": self.log_limiter.suppressed_total,
                                        "min_sites": self.cfg.quorum.min_sites,
                                        "aggregation": self.cfg.aggregation,
                                        "condition_source": self.cfg.condition_source,
                                        "step_time_s": self._step_time(),
                                        **({"secure_sum": self.scheduler.summary()}
                                           if self.cfg.aggregation == "secure-sum" else {})})

    def _try_checkpoint(self) -> bool:
        """Checkpoint now; a failure (disk full, no descriptor left) is counted, logged, and retried
        at the next pass of the loop instead of ending the run."""
        try:
            self.checkpoint()
        except OSError as exc:
            self.runlog.checkpoint_failures += 1
            self._checkpoint_due = True
            self._checkpoint_retry_at = time.monotonic() + CHECKPOINT_RETRY_S
            if self.runlog.checkpoint_failures == 1 or self.runlog.checkpoint_failures % 100 == 0:
                log.error("checkpoint_failed", error=exc.strerror or type(exc).__name__,
                          failures=self.runlog.checkpoint_failures, note="retried; the run goes on")
            return False
        self._checkpoint_due = False
        return True

    def _try_round_mark(self) -> bool:
        try:
            self._write_round_mark(self.scheduler.round_number + 1)
        except OSError as exc:
            log.error("round_mark_failed", error=exc.strerror or type(exc).__name__, note="round postponed")
            return False
        return True

    def _step_time(self) -> dict[str, Any]:
        stats: dict[str, Any] = _time_stats(self.step_seconds)
        # throughput view: everything between the first round and the last step, per step
        if self._first_round_at is not None and self._last_step_at is not None and self.step_seconds:
            stats["wall_per_step"] = round((self._last_step_at - self._first_round_at) / len(self.step_seconds), 5)
        return stats

    def serve(self, *, install_signals: bool = True) -> dict[str, Any]:
        """Run until the run ends; returns the final run.json content."""
        if install_signals:
            self._install_signals()
        try:
            self.open()
        except BaseException:
            self.close()  # stop the ZAP thread and release the port before reporting
            raise
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        bar = self._progress()
        status, stop_reason = "running", None
        last_json = 0.0
        step_started = time.monotonic()  # set again when each step's first round starts
        try:
            while True:
                now = time.monotonic()
                if self._stop_signal:
                    status, stop_reason = "interrupted", self._stop_signal
                    break
                rnd = self.scheduler.current
                wait_ms = 100 if rnd is None else max(0, min(100, int((rnd.deadline - now) * 1000) + 1))
                events = dict(poller.poll(wait_ms))
                if self.router in events:
                    for _ in range(1000):  # drain, but keep the loop responsive
                        try:
                            frames = self.router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._handle_inbound(frames, time.monotonic())
                if self.monitor in events:
                    self._handle_monitor()
                now = time.monotonic()
                for site in self.registry.reap(now=now, timeout_s=self.cfg.heartbeat_timeout_s,
                                              busy=self.scheduler.busy()):
                    log.warning("site_dead", site=site, reason="heartbeat_timeout")
                    self.scheduler.on_site_lost(site)
                if self.scheduler.current is not None and self.scheduler.round_done(now):
                    result = self.scheduler.close_round()
                    if result.stepped:
                        bar.update(1)
                        log.info("step_done", step=result.step, answered=result.answered,
                                 seconds=round(now - step_started, 4),
                                 grad_norm=round(result.stats.get("grad_norm", 0.0), 6))
                        self.step_seconds.append(now - step_started)
                        self._last_step_at = now
                        if self.scheduler.step % self.cfg.train.checkpoint_every == 0:
                            self._try_checkpoint()  # a failure is retried later in the loop
                    if result.stop_reason:
                        status, stop_reason = "stopped", result.stop_reason
                        break
                if self.scheduler.current is None:  # start the next round in the same pass
                    now = time.monotonic()
                    decision, reason = self.scheduler.readiness(now)
                    if decision == START:
                        if self.scheduler.attempt == 0:
                            step_started = now
                        if self._first_round_at is None:
                            self._first_round_at = now
                        if self.cfg.aggregation == "secure-sum" and not self._try_round_mark():
                            continue  # never a round whose number could be reused; retried next pass
                        unencodable = self._unencodable
                        try:
                            rnd = self.scheduler.start_round(now, lambda s, m: self._send(s, m))
                        except SecganError as exc:  # e.g. an unreadable condition bank: that round only
                            log.error("round_start_failed", error=str(exc)[:200])
                            rnd = self.scheduler.current
                        if rnd is not None and not rnd.in_flight and self._unencodable > unencodable:
                            status, stop_reason = "stopped", "batch_unencodable"
                            break
                    elif decision == STOP:
                        status, stop_reason = ("completed" if reason == "completed" else "stopped"), reason
                        break
                if self._checkpoint_due and now >= self._checkpoint_retry_at:
                    self._try_checkpoint()
                self._warn_waiting(now)
                if now - last_json > self.cfg.run_json_every_s:
                    self._write_run_json("running", None)  # a failed write is counted and retried
                    last_json = now
            if status != "interrupted":
                for site, rec in self.registry.sites.items():
                    if rec.routing_id is not None and rec.state != DEAD:
                        self._send(site, Stop(run_id=self.cfg.run_id, reason=stop_reason or status))
            for rec in self.registry.sites.values():  # why each site stopped, for run.json
                if rec.stop_reason is None:
                    rec.stop_reason = stop_reason or status
            if not self._try_checkpoint():
                log.error("final_checkpoint_failed", note="a --resume continues from the last checkpoint written")
            final = self._write_run_json(status, stop_reason)
            log.info("run_finished", status=status, reason=stop_reason, steps=self.scheduler.step,
                     rounds=self.scheduler.round_number)
            return final
        finally:
            bar.close()
            self.close()


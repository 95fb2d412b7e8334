"""ZeroMQ sockets for the federation, every security-relevant option set explicitly.

- The coordinator binds a ROUTER as CURVE server; each site connects a DEALER as CURVE client that
  pins the coordinator's public key.
- Who may connect is decided by :class:`AllowListPolicy`, a plain class (no sockets) holding the
  manifest's site CURVE keys; :class:`ZapAuthenticator` is the thin thread answering libzmq's ZAP
  requests with it. The User-Id it returns is the site id bound to the key, and the coordinator
  reads it back from each inbound frame (:func:`peer_user_id`): a site is its key, never the name
  it writes in a header.
- ``ZAP_ENFORCE_DOMAIN`` is on, so a ROUTER whose context has no ZAP handler refuses every CURVE
  client instead of silently accepting all of them; :func:`self_check_rejects_unknown` proves it
  at start-up with a throwaway client.
- The only unauthenticated mode is ``insecure_loopback_for_tests=True``: refused unless the
  endpoint is on 127.0.0.1, and logged as a warning every time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import zmq
from zmq.utils import z85

from secgan.core.config import rng
from secgan.core.errors import ConfigError, CryptoError, SecganError
from secgan.core.logs import LogLimiter, get_logger

log = get_logger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = "secgan"
ZAP_VERSION = b"1.0"
LOOPBACK_PREFIX = "tcp://127.0.0.1:"


@dataclass(frozen=True)
class SocketTuning:
    """Queue, liveness and reconnect settings shared by both ends (milliseconds unless named)."""

    # ZMQ_SNDHWM: messages queued per peer before sends block or drop
    sndhwm: int = field(default=256, metadata=rng(min=1))
    # ZMQ_RCVHWM: messages queued on receive
    rcvhwm: int = field(default=256, metadata=rng(min=1))
    # ZMQ_LINGER: how long unsent messages are kept after close
    linger_ms: int = field(default=200, metadata=rng(min=0))
    # ZMTP heartbeat interval
    heartbeat_ivl_ms: int = field(default=1000, metadata=rng(min=1))
    # a connection without traffic for this long is closed
    heartbeat_timeout_ms: int = field(default=5000, metadata=rng(min=1))
    # the peer's time-to-live advertised in heartbeats
    heartbeat_ttl_ms: int = field(default=10000, metadata=rng(min=100))
    # first reconnect delay after a connection is lost
    reconnect_ivl_ms: int = field(default=100, metadata=rng(min=1))
    # the reconnect delay doubles up to this (0: no backoff)
    reconnect_ivl_max_ms: int = field(default=3000, metadata=rng(min=0))
    # a CURVE handshake must finish within this (0: no limit)
    handshake_ivl_ms: int = field(default=5000, metadata=rng(min=0))


# Bytes CURVE adds to every frame before libzmq's ZMQ_MAXMSGSIZE check: the encrypted MESSAGE
# command is "\x07MESSAGE" (8) + nonce (8) + flags (1) + Poly1305 tag (16) around the frame.
# tests/unit/net/test_net_maxmsgsize.py measures it against the libzmq in use.
CURVE_FRAME_OVERHEAD = 33
# The CURVE handshake's own commands (INITIATE with its metadata: about 300 bytes) are checked
# against ZMQ_MAXMSGSIZE too, so it never goes below this, whatever the wire limits.
CURVE_HANDSHAKE_FLOOR = 1024


def max_message_bytes(limits: Any) -> int:
    """ZMQ_MAXMSGSIZE for ``limits``. libzmq checks it per frame, on the frame as CURVE carries it
    (plaintext + :data:`CURVE_FRAME_OVERHEAD`), and drops a peer that exceeds it: so it is the
    largest frame :func:`secgan.net.codec.encode` can produce under ``limits`` plus that overhead (and
    at least :data:`CURVE_HANDSHAKE_FLOOR`), and every frame encode lets through arrives."""
    from secgan.net.limits import max_message_bytes as largest_frame

    return max(largest_frame(limits) + CURVE_FRAME_OVERHEAD, CURVE_HANDSHAKE_FLOOR)


def _common(sock: zmq.Socket, limits: Any, tuning: SocketTuning) -> None:
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes(limits))
    sock.setsockopt(zmq.SNDHWM, tuning.sndhwm)
    sock.setsockopt(zmq.RCVHWM, tuning.rcvhwm)
    sock.setsockopt(zmq.LINGER, tuning.linger_ms)
    sock.setsockopt(zmq.HEARTBEAT_IVL, tuning.heartbeat_ivl_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, tuning.heartbeat_timeout_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, tuning.heartbeat_ttl_ms)
    sock.setsockopt(zmq.HANDSHAKE_IVL, tuning.handshake_ivl_ms)


def _key(value: bytes | str, what: str) -> bytes:
    raw = value.encode("ascii") if isinstance(value, str) else bytes(value)
    if len(raw) != 40:
        raise CryptoError(f"{what}: expected a 40-character z85 CURVE key")
    try:
        z85.decode(raw)
    except Exception:  # z85 raises plain ValueError/KeyError on bad alphabet
        raise CryptoError(f"{what}: not a valid z85 CURVE key") from None
    return raw


def _check_insecure(endpoint: str) -> None:
    if not endpoint.startswith(LOOPBACK_PREFIX):
        raise ConfigError(
            f"insecure plaintext transport is test-only and restricted to {LOOPBACK_PREFIX}*, got {endpoint}"
        )
    log.warning("INSECURE_PLAINTEXT_TRANSPORT", endpoint=endpoint, note="test only: no encryption, no authentication")


def make_router(
    ctx: zmq.Context,
    *,
    bind: str,
    server_secret: bytes | str | None,
    server_public: bytes | str | None,
    limits: Any,
    tuning: SocketTuning = SocketTuning(),
    insecure_loopback_for_tests: bool = False,
) -> zmq.Socket:
    """The coordinator's ROUTER. Bind after a :class:`ZapAuthenticator` runs on ``ctx``."""
    sock = ctx.socket(zmq.ROUTER)
    try:
        _common(sock, limits, tuning)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if insecure_loopback_for_tests:
            _check_insecure(bind)
        else:
            if server_secret is None or server_public is None:
                raise CryptoError("router: CURVE server keys are required")
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, _key(server_secret, "server secret key"))
            sock.setsockopt(zmq.CURVE_PUBLICKEY, _key(server_public, "server public key"))
            sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        sock.bind(bind)
    except BaseException:
        sock.close(0)
        raise
    return sock


def make_dealer(
    ctx: zmq.Context,
    *,
    endpoint: str,
    client_public: bytes | str | None,
    client_secret: bytes | str | None,
    server_public: bytes | str | None,
    limits: Any,
    tuning: SocketTuning = SocketTuning(),
    insecure_loopback_for_tests: bool = False,
) -> zmq.Socket:
    """A site's DEALER, pinned to the coordinator's CURVE public key, reconnecting with backoff.

    ``IMMEDIATE`` is on: while disconnected, sends fail (EAGAIN) instead of queueing messages that
    would be stale by the time the coordinator is back.
    """
    sock = ctx.socket(zmq.DEALER)
    try:
        _common(sock, limits, tuning)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, tuning.reconnect_ivl_ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, tuning.reconnect_ivl_max_ms)
        if insecure_loopback_for_tests:
            _check_insecure(endpoint)
        else:
            if client_public is None or client_secret is None or server_public is None:
                raise CryptoError("dealer: CURVE client keys and the pinned server key are required")
            sock.setsockopt(zmq.CURVE_SERVERKEY, _key(server_public, "coordinator public key"))
            sock.setsockopt(zmq.CURVE_PUBLICKEY, _key(client_public, "client public key"))
            sock.setsockopt(zmq.CURVE_SECRETKEY, _key(client_secret, "client secret key"))
        sock.connect(endpoint)
    except BaseException:
        sock.close(0)
        raise
    return sock


def peer_user_id(frame: zmq.Frame) -> str | None:
    """The ZAP User-Id libzmq attached to an inbound frame (received with ``copy=False``)."""
    try:
        value = frame.get("User-Id")
    except (zmq.ZMQError, AttributeError, TypeError):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value or None


# --------------------------------------------------------------------------------------------
# Authentication policy (no sockets) and its ZAP adapter


@dataclass(frozen=True)
class AuthDecision:
    allowed: bool
    user_id: str  # the site id on success, "" otherwise
    reason: str  # short, safe to log (never the key)

    @property
    def status_code(self) -> bytes:
        return b"200" if self.allowed else b"400"


class AllowListPolicy:
    """CURVE allow-list: the site public keys of the signed manifest, each bound to one site id."""

    def __init__(self, site_public_keys: Mapping[str, bytes | str], *, domain: str = ZAP_DOMAIN) -> None:
        by_key: dict[bytes, str] = {}
        for site_id, z85_key in site_public_keys.items():
            if not isinstance(site_id, str) or not site_id:
                raise ConfigError("allow-list: site ids must be non-empty strings")
            raw = z85.decode(_key(z85_key, f"public key of {site_id}"))
            if raw in by_key:
                raise ConfigError(f"allow-list: {site_id} and {by_key[raw]} share one CURVE key")
            by_key[raw] = site_id
        self._by_key = by_key
        self._domain = domain
        self._lock = threading.Lock()
        self.allowed = 0
        self.denied = 0
        self._denied_keys: set[bytes] = set()

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_key.values()))

    def decide(self, *, domain: str, mechanism: str, credentials: list[bytes]) -> AuthDecision:
        if domain != self._domain:
            decision = AuthDecision(False, "", "wrong_domain")
        elif mechanism != "CURVE":
            decision = AuthDecision(False, "", "mechanism_not_allowed")
        elif len(credentials) != 1 or len(credentials[0]) != 32:
            decision = AuthDecision(False, "", "bad_credentials")
        else:
            site = self._by_key.get(bytes(credentials[0]))
            decision = AuthDecision(True, site, "ok") if site else AuthDecision(False, "", "unknown_key")
        with self._lock:
            if decision.allowed:
                self.allowed += 1
            else:
                self.denied += 1
                if decision.reason == "unknown_key":
                    self._denied_keys.add(bytes(credentials[0]))
        return decision

    def was_denied(self, public_key: bytes | str) -> bool:
        """Whether this (z85) key has been refused at least once: used by the start-up self-check."""
        raw = z85.decode(_key(public_key, "probe key"))
        with self._lock:
            return raw in self._denied_keys


class ZapAuthenticator:
    """A thread answering ZAP requests (RFC 27) on ``ctx`` with a policy's decisions."""

    def __init__(self, ctx: zmq.Context, policy: AllowListPolicy) -> None:
        self._ctx = ctx
        self._policy = policy
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="zap", daemon=True)
        # refused handshakes come in floods (a scanner, a site retrying with a wrong key): bounded lines
        self.log_limiter = LogLimiter(burst=10, window_s=60.0)

    def start(self) -> "ZapAuthenticator":
        self._thread.start()
        if not self._ready.wait(5.0) or self._error is not None:
            raise SecganError(f"ZAP authenticator failed to start: {self._error!r}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> "ZapAuthenticator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            sock = self._ctx.socket(zmq.REP)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(ZAP_ENDPOINT)
        except BaseException as exc:  # reported through start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                sock.send_multipart(self.answer(sock.recv_multipart()))
        finally:
            sock.close(0)

    def answer(self, request: list[bytes]) -> list[bytes]:
        """One ZAP reply for one request (pure apart from the policy's counters)."""
        if len(request) < 6 or request[0] != ZAP_VERSION:
            request_id = request[1] if len(request) > 1 else b""
            self.log_limiter.warning(log, "zap_denied", reason="malformed_zap_request")
            return [ZAP_VERSION, request_id, b"500", b"malformed request", b"", b""]
        _version, request_id, domain, address, _identity, mechanism, *credentials = request
        decision = self._policy.decide(
            domain=domain.decode("utf-8", "replace"),
            mechanism=mechanism.decode("ascii", "replace"),
            credentials=credentials,
        )
        if decision.allowed:
            log.debug("zap_allowed", site=decision.user_id)
        else:
            self.log_limiter.warning(log, "zap_denied", key_fields=("reason",), reason=decision.reason,
                             address=address.decode("ascii", "replace"))
        return [ZAP_VERSION, request_id, decision.status_code, decision.reason.encode(),
                decision.user_id.encode(), b""]


def self_check_rejects_unknown(
    ctx: zmq.Context,
    *,
    endpoint: str,
    server_public: bytes | str,
    policy: AllowListPolicy,
    limits: Any,
    timeout_s: float = 5.0,
) -> None:
    """Connect a throwaway client with a fresh, unknown key and prove it is refused.

    Proof: the client's monitor reports an authentication failure (never a successful handshake)
    and the policy records the probe key as denied. Raises CryptoError otherwise: never serve with
    an authenticator that lets strangers in.
    """
    public, secret = zmq.curve_keypair()
    probe = make_dealer(ctx, endpoint=endpoint, client_public=public, client_secret=secret,
                        server_public=server_public, limits=limits,
                        tuning=SocketTuning(reconnect_ivl_ms=1000, reconnect_ivl_max_ms=0))
    monitor = probe.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                       | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                       | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    from zmq.utils.monitor import recv_monitor_message

    outcome = "timeout"
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not monitor.poll(50):
                continue
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                outcome = "accepted"
                break
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                outcome = "rejected"
                break
            outcome = "handshake_failed"
    finally:
        probe.disable_monitor()
        monitor.close(0)
        probe.close(0)
    if outcome != "rejected" or not policy.was_denied(public):
        log.error("auth_self_check_failed", outcome=outcome)
        raise CryptoError(f"start-up self-check: a client with an unknown CURVE key was not refused ({outcome})")
    log.info("auth_self_check_passed")

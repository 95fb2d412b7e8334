"""``secgan site-host CONFIG [CONFIG ...]``: several site nodes in one OS process.

For simulation, benches and tests of large federations on one machine. Each hosted node is built
exactly as ``secgan site`` builds one (``sites.cli.open_site``): its own verified manifest, CURVE
keys and DEALER, its own state folder with its own exclusive StateLock (a second host, or a
``secgan site``, on the same state is refused for that site), its own learner, ledger, release log
and random state. Nothing is shared but the process, one ZeroMQ context (its I/O thread) and one
``zmq.Poller`` over every node's socket.

The loop is ``SiteNode.serve`` unrolled over many nodes: each pass runs every node's
``before_poll`` timers, waits once on all sockets, then runs each node's ``step_once``. A node that
raises (beyond what ``SiteNode.handle`` already answers and survives) is logged by site and
exception type and stopped alone, its state saved and its lock released; the others keep serving.
A node whose run ends (Stop, a refused start, a fatal protocol mismatch) finishes as it would
alone. SIGTERM / SIGINT stop every node cleanly. Exit code: the largest of the nodes' exit codes
(0 when every node ended after Stop or a signal; 1 when a node failed; 2 when a site was refused
at start).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

HELP = "run several site nodes in one process (simulation and tests of large federations)"

FAILED = 1  # exit code of a node stopped by an unexpected exception
REFUSED = 2  # exit code of a site that could not be opened (state in use, ledger broken, bad kit)
POLL_MS = 100  # the wait of one pass, as SiteNode.serve waits on its one socket


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configs", type=Path, nargs="+", metavar="CONFIG", help="site.toml files, one per node")


class SiteHost:
    """Serve several opened ``(SiteNode, StateLock)`` pairs in one loop (see the module doc)."""

    def __init__(self, nodes: list[tuple[Any, Any]], *, refused: dict[str, int] | None = None) -> None:
        from secgan.core.logs import get_logger

        self.log = get_logger(__name__)
        self.nodes = list(nodes)
        self.codes: dict[str, int] = dict(refused or {})
        self._signal: str | None = None

    @staticmethod
    def _site(node: Any) -> str:
        return node.settings.site_id

    def _fail(self, node: Any, where: str, exc: BaseException) -> None:
        # the exception's type only: a message could carry a path or a value of the site's data
        self.log.error("hosted_node_failed", site=self._site(node), where=where, error=type(exc).__name__)
        node.counts["host_failures"] += 1
        if node.exit_reason is None:
            node.exit_reason = f"failed:{type(exc).__name__}"
        node.exit_code = max(node.exit_code, FAILED)

    def _end(self, node: Any, lock: Any) -> None:
        """Finish one node as SiteNode.serve would (save, final status), close it, release its lock."""
        try:
            code = node.finish()
        except Exception as exc:  # noqa: BLE001 - one node's final save never ends the others
            self._fail(node, "finish", exc)
            code = node.exit_code
        finally:
            try:
                node.close()
            finally:
                lock.release()
        self.codes[self._site(node)] = code

    def _poll(self, active: list[tuple[Any, Any]], timeout_ms: int) -> set[int]:
        """Wait up to ``timeout_ms`` on every running node's socket; the ids of the readable ones.
        A node replaces its DEALER on a dead link, and an ended node's is closed: the poller's set
        follows the nodes'."""
        import zmq

        socks = {id(node.sock): node.sock for node, _ in active if node.exit_reason is None and node.sock is not None}
        if socks.keys() != self._polled.keys():
            for sid in self._polled.keys() - socks.keys():
                self._poller.unregister(self._polled[sid])
            for sid in socks.keys() - self._polled.keys():
                self._poller.register(socks[sid], zmq.POLLIN)
            self._polled = socks
        return {id(s) for s, _ in self._poller.poll(timeout_ms)} if socks else set()

    def _step(self, nodes: list[tuple[Any, Any]], ready: set[int], now: float, *, every: bool) -> list[tuple[Any, Any]]:
        """``step_once`` on each node (``every``) or on the readable ones only; the nodes that stopped."""
        ended = []
        for node, lock in nodes:
            readable = id(node.sock) in ready
            if not (every or readable or node.exit_reason is not None):
                continue
            running = node.exit_reason is None
            if running:
                try:
                    running = node.step_once(now, readable=readable)
                except Exception as exc:  # noqa: BLE001
                    self._fail(node, "step", exc)
                    running = False
            if not running:
                ended.append((node, lock))
        return ended

    def serve(self, *, install_signals: bool = True) -> int:
        import zmq

        if install_signals:
            from sites.node import install_stop_signals

            install_stop_signals(lambda reason: setattr(self, "_signal", reason))
        ctx = zmq.Context()
        active: list[tuple[Any, Any]] = []
        try:
            for node, lock in self.nodes:
                try:
                    node.open(ctx)
                    active.append((node, lock))
                except Exception as exc:  # noqa: BLE001
                    self._fail(node, "open", exc)
                    self._end(node, lock)
            self.log.info("host_started", nodes=len(active), refused=len(self.codes))
            self._poller, self._polled = zmq.Poller(), {}
            while active:
                now = time.monotonic()
                for node, _lock in active:
                    if self._signal:
                        node.request_stop(self._signal)
                    try:
                        node.before_poll(now)
                    except Exception as exc:  # noqa: BLE001
                        self._fail(node, "before_poll", exc)
                ready = self._poll(active, POLL_MS)
                ended = self._step(active, ready, now, every=True)
                # Finishing a node takes tens of ms (D saved, status fsynced) while the others' input
                # waits: read it between finishes. A DEALER drops what it has not read when the
                # coordinator goes away (IMMEDIATE), so the Stop it sends everyone at the end of a run
                # must be read by each node before the previous ones finish.
                while ended:
                    pair = ended.pop(0)
                    active.remove(pair)
                    self._end(*pair)
                    rest = [p for p in active if p not in ended]
                    ended += self._step(rest, self._poll(rest, 0), time.monotonic(), every=False)
        finally:
            for node, lock in active:  # only on an exception of the loop itself
                self._end(node, lock)
            ctx.term()
        self.log.info("host_exiting", codes=self.codes)
        return max(self.codes.values(), default=0)


def open_sites(configs: list[Any]) -> tuple[list[tuple[Any, Any]], dict[str, int]]:
    """``open_site`` for each loaded SiteConfig: -> (opened pairs, {site id: exit code} of those
    refused). A refused site is logged with its reason and does not stop the others."""
    from secgan.core.errors import SecganError
    from secgan.core.logs import get_logger

    from sites.cli import open_site

    log = get_logger(__name__)
    opened, refused = [], {}
    for cfg in configs:
        try:
            opened.append(open_site(cfg))
        except (SecganError, OSError) as exc:
            log.error("site_refused", site=cfg.site_id, error=type(exc).__name__, reason=str(exc)[:300])
            refused[cfg.site_id] = REFUSED
    return opened, refused


def run(args: argparse.Namespace) -> int:
    from secgan.core.errors import ConfigError
    from secgan.settings import load_site_config

    configs = [load_site_config(p) for p in args.configs]
    ids = [c.site_id for c in configs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"site-host: site id(s) given more than once: {', '.join(dup)}")
    states = [str(Path(c.state_dir).resolve()) for c in configs]
    if len(set(states)) != len(states):
        raise ConfigError("site-host: two configs share a state_dir; each site needs its own")
    opened, refused = open_sites(configs)
    if not opened:
        return max(refused.values(), default=REFUSED)
    return SiteHost(opened, refused=refused).serve()


"""After the run ends: who is owed the final Stop, and when the coordinator may close.

A Stop sent once at the end can be lost: a site that is paused, partitioned, reconnecting or
busy (a DEALER drops what it has not read when the coordinator's socket closes) would then never
learn that the run ended and would reconnect forever. So the coordinator lingers: every message of
a known site is answered with the final Stop, and it closes once every site that joined the run
(welcomed in this process, dead or removed since) has acknowledged with a StopAck, or once
``linger_s`` has passed (0: close at once, the old behaviour). Sites that never said Hello to this
process, and sites excluded by their own policy (they exit by themselves), are answered if they
come but never waited for.

Pure: no sockets, no clock of its own; the service feeds it messages and the time. Nothing here
sends a batch or applies a gradient, so nothing is charged or released while it lingers.
"""

from __future__ import annotations

from typing import Any, Iterable

from coordinator.registry import DEAD, REMOVED, WELCOMED

# the states of a site that joined this run and may still be out there, waiting for its Stop
OWED_STATES = frozenset({WELCOMED, DEAD, REMOVED})


class FinalStop:
    """The linger after the run's end (see the module doc)."""

    def __init__(self, *, reason: str, owed: Iterable[str], now: float, linger_s: float,
                 acked: Iterable[str] = ()) -> None:
        self.reason = reason
        self.owed = frozenset(owed)
        self.started = now
        self.linger_s = max(0.0, linger_s)
        self.deadline = now + self.linger_s
        self.told: set[str] = set()  # sites a Stop was handed to (at the end, or answering a message)
        # acknowledged: at the end, or before it (a removed site told Stop when it said Hello again)
        self.acked: set[str] = set(acked)
        self.answered = 0  # messages answered with Stop while lingering
        self.closed_at: float | None = None

    @classmethod
    def for_registry(cls, registry: Any, *, reason: str, now: float, linger_s: float,
                     acked: Iterable[str] = ()) -> "FinalStop":
        owed = [s for s, rec in registry.sites.items() if rec.state in OWED_STATES]
        return cls(reason=reason, owed=owed, now=now, linger_s=linger_s, acked=acked)

    def sent(self, site: str) -> None:
        """A Stop was handed to ``site``'s connection."""
        self.told.add(site)

    def on_message(self, site: str) -> None:
        """A valid message of a known site after the end, other than StopAck or ErrorReply: it is
        answered with the final Stop (an acknowledged site is told again if it still talks)."""
        self.answered += 1

    def on_ack(self, site: str) -> None:
        self.acked.add(site)

    def pending(self) -> list[str]:
        """Sites still owed an acknowledged Stop."""
        return sorted(self.owed - self.acked)

    def may_close(self, now: float) -> bool:
        return not self.pending() or now >= self.deadline

    def close(self, now: float) -> None:
        self.closed_at = now

    def summary(self) -> dict[str, Any]:
        """For run.json: whom the final Stop reached (sites by id; no key, no payload)."""
        end = self.closed_at if self.closed_at is not None else self.started
        return {"reason": self.reason, "linger_s": self.linger_s, "lingered_s": round(end - self.started, 3),
                "owed": len(self.owed), "told": len(self.told), "acknowledged": len(self.acked & self.owed),
                "unacknowledged": self.pending(), "answered_with_stop": self.answered}

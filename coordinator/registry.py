"""The coordinator's view of each site: connection state, liveness and counters.

A site is keyed by its authenticated id (the ZAP User-Id bound to its CURVE key in the manifest).
States:

- ``known``: in the manifest, never said Hello (or said Hello to an earlier incarnation);
- ``welcomed``: handshake done, scheduled in rounds;
- ``dead``: silent past the heartbeat timeout; dropped from rounds until it says Hello again;
- ``excluded``: its policy refuses this run's condition source (told why, never scheduled);
- ``removed``: a final Refusal (e.g. ``budget_exhausted``); not scheduled for the rest of the run.

``removed`` is final: :class:`SiteRecord` refuses to leave it (whoever assigns ``state``), so no
sequence of messages (Hellos refusing or accepting the condition source, heartbeats, deaths) puts a
removed site back into rounds, and its stop reason stays the one it was removed for.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KNOWN, WELCOMED, DEAD, EXCLUDED, REMOVED = "known", "welcomed", "dead", "excluded", "removed"


@dataclass
class SiteRecord:
    site_id: str
    state: str = KNOWN
    routing_id: bytes | None = None
    last_seen: float | None = None
    welcomed_at: float | None = None
    hellos: int = 0
    steps_served: int = 0
    # batches this site was sent whose gradient never counted: no answer by the round's deadline
    # (late), or an answer discarded because its round failed for lack of a quorum (dropped)
    gradients_late: int = 0
    gradients_dropped: int = 0
    refusals: Counter = field(default_factory=Counter)
    drops: Counter = field(default_factory=Counter)  # inbound messages dropped, by ProtocolError code
    deaths: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    step_bytes_in: list[int] = field(default_factory=list)  # per served step: reply size
    step_bytes_out: list[int] = field(default_factory=list)  # per served step: batch size
    # (steps, bytes in, bytes out) of earlier incarnations (--resume), for the per-step means
    prior_step_bytes: tuple[int, int, int] = (0, 0, 0)
    # the site's last reported fraction of its privacy budget left, in coarse steps (None: DP off
    # or nothing served yet); the exact epsilon stays in the site's ledger
    budget_left: float | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "state", None) == REMOVED and name in ("state", "stop_reason"):
            return  # removed is final for this run; so is the reason it was removed for
        object.__setattr__(self, name, value)

    def summary(self) -> dict[str, Any]:
        n0, in0, out0 = self.prior_step_bytes

        def mean(xs: list[int], prior: int) -> float | None:
            n = len(xs) + n0
            return round((sum(xs) + prior) / n, 1) if n else None

        return {
            "state": self.state,
            "hellos": self.hellos,
            "steps_served": self.steps_served,
            "gradients_late": self.gradients_late,
            "gradients_dropped": self.gradients_dropped,
            "refusals": dict(self.refusals),
            "drops": dict(self.drops),
            "deaths": self.deaths,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "mean_bytes_in_per_step": mean(self.step_bytes_in, in0),
            "mean_bytes_out_per_step": mean(self.step_bytes_out, out0),
            "budget_left": self.budget_left,
            "mode": self.policy.get("mode"),
            "stop_reason": self.stop_reason,
        }


class Registry:
    """All sites of the manifest; the only place their states change."""

    def __init__(self, site_ids: list[str] | tuple[str, ...]) -> None:
        self.sites: dict[str, SiteRecord] = {s: SiteRecord(s) for s in site_ids}
        self.unattributed_drops: Counter = Counter()  # messages whose sender could not be identified

    def __getitem__(self, site_id: str) -> SiteRecord:
        return self.sites[site_id]

    def __contains__(self, site_id: object) -> bool:
        return site_id in self.sites

    def seen(self, site_id: str, *, now: float, nbytes: int) -> None:
        rec = self.sites[site_id]
        rec.last_seen = now
        rec.bytes_in += nbytes

    def welcome(self, site_id: str, *, routing_id: bytes, now: float, policy: dict[str, Any]) -> None:
        """A (re)admission: Hello accepted. A removed site stays removed for this run."""
        rec = self.sites[site_id]
        rec.hellos += 1
        rec.routing_id = routing_id
        rec.policy = dict(policy)
        if rec.state != REMOVED:
            rec.state = WELCOMED
            rec.welcomed_at = now
            rec.stop_reason = None

    def exclude(self, site_id: str, *, routing_id: bytes, reason: str) -> None:
        """A Hello refusing this run's condition source. A removed site stays removed."""
        rec = self.sites[site_id]
        rec.hellos += 1
        rec.routing_id = routing_id
        rec.state = EXCLUDED
        rec.stop_reason = reason

    def remove(self, site_id: str, *, reason: str) -> None:
        """A final Refusal: the site serves no further step of this run (the first reason stays)."""
        rec = self.sites[site_id]
        if rec.state != REMOVED:
            rec.stop_reason = reason
        rec.state = REMOVED

    def mark_dead(self, site_id: str, *, reason: str) -> bool:
        """The site cannot be reached; True if it was scheduled (welcomed) and is now dead."""
        rec = self.sites[site_id]
        if rec.state != WELCOMED:
            return False
        rec.state = DEAD
        rec.deaths += 1
        rec.stop_reason = reason
        return True

    def reap(self, *, now: float, timeout_s: float, busy: frozenset[str] = frozenset()) -> list[str]:
        """Mark welcomed sites silent for longer than ``timeout_s`` as dead; return them.

        ``busy`` sites are computing a batch we sent: the round deadline, not the heartbeat
        timeout, decides about them (a long DP step sends nothing until it is done).
        """
        dead = []
        for rec in self.sites.values():
            if rec.site_id in busy:
                continue
            if rec.state == WELCOMED and rec.last_seen is not None and now - rec.last_seen > timeout_s:
                rec.state = DEAD
                rec.deaths += 1
                rec.stop_reason = "heartbeat_timeout"
                dead.append(rec.site_id)
        return dead

    def live(self) -> list[str]:
        """Sites to schedule in the next round, in a stable order."""
        return sorted(s for s, r in self.sites.items() if r.state == WELCOMED)

    def able(self) -> list[str]:
        """Sites that could still serve this run (now or after readmission)."""
        return sorted(s for s, r in self.sites.items() if r.state not in (REMOVED, EXCLUDED))

    def summary(self) -> dict[str, Any]:
        return {s: r.summary() for s, r in sorted(self.sites.items())}

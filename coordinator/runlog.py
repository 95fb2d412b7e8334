"""``state_dir/run.json``: what happened in a run, written atomically (periodically and at the end).

Only counters and figures: no tensors, no keys, nothing about patients.

A ``--resume`` continues the counters of the previous run.json of the same run id (per-site steps
served, late and dropped gradients, drops, refusals, deaths, bytes; protocol errors, handshake
failures, stale replies, auth counts) and increments ``incarnation``: run.json always describes the
whole run, not only the last process.

A write that fails (a full disk, no file descriptor left) never ends the run: it is counted
(``run_json_write_failures``), logged at most once a minute, and the next periodic write tries again.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from secgan.core.fsio import atomic_write_json
from secgan.core.logs import get_logger

from coordinator.registry import Registry

log = get_logger(__name__)

# per-site counters carried over a --resume (plain integers and {code: integer} tables)
SITE_INT_COUNTERS = ("hellos", "steps_served", "gradients_late", "gradients_dropped", "deaths", "bytes_in", "bytes_out")
SITE_TABLE_COUNTERS = ("refusals", "drops")
WRITE_FAILURE_LOG_EVERY_S = 60.0


def _count(value: Any) -> int:
    """A carried counter: a non-negative int, anything else (a hand-edited file) counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _table(value: Any) -> Counter:
    if not isinstance(value, dict):
        return Counter()
    return Counter({k: _count(v) for k, v in value.items() if isinstance(k, str) and _count(v)})


class RunLog:
    def __init__(self, path: Path, *, run_id: str, previous: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.started = time.monotonic()
        if previous is not None and (not isinstance(previous, dict) or previous.get("run_id") != run_id):
            log.warning("run_json_not_continued", reason="previous run.json belongs to another run or is malformed")
            previous = None
        self.previous: dict[str, Any] = previous or {}
        prev = self.previous
        # wall time of earlier incarnations of this run (``--resume``) is carried over
        wall = prev.get("wall_time_s", 0.0)
        self.prior_wall_s = float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else 0.0
        self.incarnation = _count(prev.get("incarnation")) + 1 if prev else 1
        self.handshake_failures: Counter = _table(prev.get("handshake_failures"))  # transport-level refusals
        self.protocol_errors: Counter = _table(prev.get("protocol_errors"))  # every inbound ProtocolError, by code
        self.write_failures = 0  # run.json writes of this process that failed (counted, retried)
        self.checkpoint_failures = 0  # periodic checkpoints that failed (retried at the next pass)
        self._last_failure_log: float | None = None

    # -- carry-over ------------------------------------------------------------------------------

    def prior_counter(self, *path: str) -> int:
        """A top-level (or nested) integer counter of the previous incarnation, 0 if absent."""
        node: Any = self.previous
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return _count(node)

    def restore_sites(self, registry: Registry) -> None:
        """Seed the registry's counters with the previous incarnation's (the states start fresh)."""
        sites = self.previous.get("sites")
        if not isinstance(sites, dict):
            return
        for site_id, rec in registry.sites.items():
            prev = sites.get(site_id)
            if not isinstance(prev, dict):
                continue
            for name in SITE_INT_COUNTERS:
                setattr(rec, name, getattr(rec, name) + _count(prev.get(name)))
            for name in SITE_TABLE_COUNTERS:
                getattr(rec, name).update(_table(prev.get(name)))
            rec.prior_step_bytes = (_count(prev.get("steps_served")),
                                    _mean_total(prev.get("mean_bytes_in_per_step"), prev.get("steps_served")),
                                    _mean_total(prev.get("mean_bytes_out_per_step"), prev.get("steps_served")))
        unattributed = self.previous.get("unattributed_drops")
        registry.unattributed_drops.update(_table(unattributed))

    # -- writing ---------------------------------------------------------------------------------

    def snapshot(self, *, registry: Registry, scheduler: Any, status: str, stop_reason: str | None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
        sites = registry.summary()
        drops: Counter = Counter(registry.unattributed_drops)
        for rec in registry.sites.values():
            drops.update(rec.drops)
        return {
            "run_id": self.run_id,
            "status": status,
            "stop_reason": stop_reason,
            "incarnation": self.incarnation,
            "steps_done": scheduler.step,
            "total_steps": scheduler.total_steps,
            "rounds": scheduler.round_number,
            "wall_time_s": round(self.prior_wall_s + time.monotonic() - self.started, 3),
            "sites": sites,
            "drops_by_code": dict(drops),
            "unattributed_drops": dict(registry.unattributed_drops),
            "protocol_errors": dict(self.protocol_errors),
            "handshake_failures": dict(self.handshake_failures),
            "quorum_events": list(scheduler.quorum_events),
            # of this process: they say whether this very file may lag behind
            "run_json_write_failures": self.write_failures,
            "checkpoint_failures": self.checkpoint_failures,
            **(extra or {}),
        }

    def write(self, **kwargs: Any) -> dict[str, Any]:
        """Snapshot and write; a failed write is counted and logged (rate-limited), never raised."""
        snap = self.snapshot(**kwargs)
        try:
            atomic_write_json(self.path, snap)
        except OSError as exc:
            self.write_failures += 1
            snap["run_json_write_failures"] = self.write_failures
            now = time.monotonic()
            if self._last_failure_log is None or now - self._last_failure_log >= WRITE_FAILURE_LOG_EVERY_S:
                self._last_failure_log = now
                log.error("run_json_write_failed", path=str(self.path), error=exc.strerror or type(exc).__name__,
                          failures=self.write_failures, note="the run goes on; the next write retries")
        return snap


def _mean_total(mean: Any, n: Any) -> int:
    if not isinstance(mean, (int, float)) or isinstance(mean, bool) or mean < 0:
        return 0
    return int(round(float(mean) * _count(n)))

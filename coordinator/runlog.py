"""``state_dir/run.json``: what happened in a run, written atomically (periodically and at the end).

Only counters and figures: no tensors, no keys, nothing about patients.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from secgan.fsio import atomic_write_json

from coordinator.registry import Registry


class RunLog:
    def __init__(self, path: Path, *, run_id: str, previous: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.started = time.monotonic()
        # wall time of earlier incarnations of this run (``--resume``) is carried over
        self.prior_wall_s = float((previous or {}).get("wall_time_s", 0.0)) if previous else 0.0
        self.incarnation = int((previous or {}).get("incarnation", 0)) + 1 if previous else 1
        self.handshake_failures: Counter = Counter()  # transport-level refusals seen by the monitor
        self.protocol_errors: Counter = Counter()  # every inbound ProtocolError, by code

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
            "protocol_errors": dict(self.protocol_errors),
            "handshake_failures": dict(self.handshake_failures),
            "quorum_events": list(scheduler.quorum_events),
            **(extra or {}),
        }

    def write(self, **kwargs: Any) -> dict[str, Any]:
        snap = self.snapshot(**kwargs)
        atomic_write_json(self.path, snap)
        return snap

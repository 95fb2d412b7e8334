"""The coordinator's upkeep between messages: run.json, checkpoints retried after a failed write,
the secure-sum round mark, the waiting-for-sites warning, the open-files limit.

Staying up: a run.json, checkpoint or round-mark write that fails is counted, logged and retried,
never the end of the run. A part of :class:`coordinator.service.Coordinator`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from secgan.core.errors import SecganError
from secgan.core.fsio import atomic_write_json
from secgan.core.logs import get_logger

from coordinator.registry import KNOWN

log = get_logger("coordinator.service")

RUN_JSON = "run.json"
# secure-sum: the highest round number ever announced, written before the round's first message so
# a resumed run never reuses a (round, step, attempt) context, i.e. never asks for the same masks twice
ROUND_MARK = "secure_sum_round.json"
# the soft RLIMIT_NOFILE is raised to the hard limit, at most this (each idle TCP connection holds
# one descriptor until the handshake timeout drops it)
OPEN_FILES_CAP = 65536
OPEN_FILES_LOW = 4096  # below this after raising, a warning says so
CHECKPOINT_RETRY_S = 5.0  # a failed periodic checkpoint is tried again this much later


def _time_stats(xs: list[float]) -> dict[str, float | int | None]:
    if not xs:
        return {"n": 0, "mean": None, "median": None}
    ys = sorted(xs)
    return {"n": len(ys), "mean": round(sum(ys) / len(ys), 5), "median": round(ys[len(ys) // 2], 5)}


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


class Upkeep:
    """Periodic duties of the coordinator service."""

    def _round_mark(self) -> int:
        path = self.state_dir / ROUND_MARK
        if not path.is_file():
            return 0
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise SecganError(f"{path}: unreadable secure-sum round mark") from exc
        if not isinstance(data, dict) or data.get("run_id") != self.settings.run_id or not isinstance(data.get("round"), int):
            raise SecganError(f"{path}: the secure-sum round mark belongs to another run or is malformed")
        return int(data["round"])

    def _write_round_mark(self, round_number: int) -> None:
        atomic_write_json(self.state_dir / ROUND_MARK, {"run_id": self.settings.run_id, "round": round_number})

    def _try_round_mark(self) -> bool:
        try:
            self._write_round_mark(self.scheduler.round_number + 1)
        except OSError as exc:
            log.error("round_mark_failed", error=exc.strerror or type(exc).__name__, note="round postponed")
            return False
        return True

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

    def _no_hello(self) -> list[str]:
        """Sites of the manifest that have not said Hello to this process."""
        return sorted(s for s, r in self.registry.sites.items() if r.state == KNOWN)

    def _warn_waiting(self, now: float) -> None:
        if self._next_waiting_warn is None or now < self._next_waiting_warn:
            return
        self._next_waiting_warn = now + self.settings.waiting_warn_every_s
        missing = self._no_hello()
        if missing:
            log.warning("waiting_for_sites", sites=", ".join(missing),
                        seconds=int(now - (self._opened_at or now)), note="no Hello yet")

    def _step_time(self) -> dict[str, Any]:
        stats: dict[str, Any] = _time_stats(self.step_seconds)
        # throughput view: everything between the first round and the last step, per step
        if self._first_round_at is not None and self._last_step_at is not None and self.step_seconds:
            stats["wall_per_step"] = round((self._last_step_at - self._first_round_at) / len(self.step_seconds), 5)
        return stats

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
                                        "min_sites": self.settings.quorum.min_sites,
                                        "aggregation": self.settings.aggregation,
                                        "condition_source": self.settings.condition_source,
                                        "step_time_s": self._step_time(),
                                        **({"secure_sum": self.scheduler.summary()}
                                           if self.settings.aggregation == "secure-sum" else {}),
                                        **({"final_stop": self._final.summary()} if self._final is not None else {})})

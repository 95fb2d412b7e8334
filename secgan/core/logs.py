"""Structured logging. Events are a short name plus key=value fields:

    log = get_logger(__name__)
    log.info("step_done", step=12, site="site-1", seconds=0.41)

Rules (SECURITY.md): never pass keys, payloads, tensors, file contents or patient identifiers as
fields. Fields whose name suggests a secret are replaced by ``<redacted>`` as a last line of defence.
A count is logged as ``<thing>_count`` (``patient_count=15``), never under the plural (``patients``
stays redacted, being ambiguous); tests/unit/core/test_core_log_fields.py keeps every call site so.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_SECRET_HINTS = ("secret", "key", "password", "token", "payload", "patient", "case_id")
_SAFE_SUFFIXES = ("_count", "_id_hash")  # a count, or a salted hash: never the secret itself


def _safe(name: str, value: Any) -> Any:
    if any(h in name.lower() for h in _SECRET_HINTS) and not name.lower().endswith(_SAFE_SUFFIXES):
        return "<redacted>"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"<array {tuple(value.shape)}>"
    return value


class StructuredLogger:
    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            clean = {k: _safe(k, v) for k, v in fields.items()}
            self._logger.log(level, event, extra={"secgan_fields": clean})

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)


class _KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "secgan_fields", {})
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [ts, record.levelname.lower(), record.name, record.getMessage()]
        parts += [f"{k}={json.dumps(v, default=str) if isinstance(v, str) and ' ' in v else v}" for k, v in fields.items()]
        return " ".join(str(p) for p in parts)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        obj.update(getattr(record, "secgan_fields", {}))
        return json.dumps(obj, default=str)


def setup_logging(level: str = "INFO", *, as_json: bool = False, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if as_json else _KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def get_logger(name: str) -> StructuredLogger:
    return StructuredLogger(logging.getLogger(name))


class LogLimiter:
    """Bounds repeated warnings: per key, the first ``burst`` events of each ``window_s`` are
    logged, the rest only counted; once a window with suppressed events has ended, one summary
    line carries the count. Plain and deterministic: the clock is injected, nothing sleeps.

        limiter = LogLimiter(burst=10, window_s=60.0)
        limiter.warning(log, "inbound_rejected", site=site, code=code, bytes=n)

    The key is the event name plus the fields named in ``key_fields`` (by default every field
    except ``bytes``), so a flood of one code from one peer cannot hide another's first lines.
    A summary line is the event with ``suppressed=K`` and the key fields, e.g.
    ``inbound_rejected site=site-1 code=bad_json suppressed=4990``.
    """

    def __init__(self, *, burst: int = 10, window_s: float = 60.0, clock: Any = time.monotonic,
                 max_keys: int = 4096) -> None:
        if burst < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("burst and max_keys must be >= 1 and window_s > 0")
        self.burst, self.window_s, self.clock, self.max_keys = burst, window_s, clock, max_keys
        # key -> [window start, events in this window, suppressed in this window]
        self._windows: dict[tuple, list] = {}
        self.suppressed_total = 0

    def admit(self, key: tuple) -> tuple[bool, int]:
        """(log this event of ``key``?, suppressed count of this key's window that ended just now,
        to be reported before it; 0 if none)."""
        now = self.clock()
        w = self._windows.get(key)
        ended = 0
        if w is None or now - w[0] >= self.window_s:
            if w is not None:
                ended = w[2]
            elif len(self._windows) >= self.max_keys:
                self._evict(now)
            w = self._windows[key] = [now, 0, 0]
        w[1] += 1
        if w[1] <= self.burst:
            return True, ended
        w[2] += 1
        self.suppressed_total += 1
        return False, ended

    def flush(self) -> list[tuple[tuple, int]]:
        """(key, suppressed) for every window that has ended with suppressed events; those
        windows are closed."""
        now = self.clock()
        due = []
        for key, w in list(self._windows.items()):
            if now - w[0] >= self.window_s:
                if w[2]:
                    due.append((key, w[2]))
                del self._windows[key]
        return due

    def _evict(self, now: float) -> None:
        # too many distinct keys: forget ended windows; if none, the oldest one (its count is lost
        # to the summary lines but stays in the caller's counters)
        for key, w in list(self._windows.items()):
            if now - w[0] >= self.window_s and not w[2]:
                del self._windows[key]
        if len(self._windows) >= self.max_keys:
            del self._windows[min(self._windows, key=lambda k: self._windows[k][0])]

    def warning(self, logger: "StructuredLogger", event: str, *, key_fields: tuple[str, ...] | None = None,
                **fields: Any) -> None:
        """Log ``event`` through ``logger`` unless suppressed; due summary lines come first."""
        self.summarize(logger)
        names = key_fields if key_fields is not None else tuple(k for k in fields if k != "bytes")
        key = (event, *((k, fields.get(k)) for k in names))
        ok, ended = self.admit(key)
        if ended:
            logger.warning(event, **dict(key[1:]), suppressed=ended)
        if ok:
            logger.warning(event, **fields)

    def summarize(self, logger: "StructuredLogger") -> None:
        """Write the summary lines that are due (call it periodically too, e.g. once a second)."""
        for (event, *pairs), count in self.flush():
            logger.warning(event, **dict(pairs), suppressed=count)

"""Structured logging. Events are a short name plus key=value fields:

    log = get_logger(__name__)
    log.info("step_done", step=12, site="site-1", seconds=0.41)

Rules (SECURITY.md): never pass keys, payloads, tensors, file contents or patient identifiers as
fields. Fields whose name suggests a secret are replaced by ``<redacted>`` as a last line of defence.
A count is logged as ``<thing>_count`` (``patient_count=15``), never under the plural (``patients``
stays redacted, being ambiguous); tests/unit/base/test_log_fields.py keeps every call site so.
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

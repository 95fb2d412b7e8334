"""The field-spec vocabulary of the wire schema: one class per kind of value a message carries.

A spec checks a JSON value in two separate stages, so the codec can report them in its fixed
order: :meth:`Spec.type_ok` (exact JSON type, stage ``bad_type``) and :meth:`Spec.range_ok`
(range, length, charset, stage ``out_of_range``); :meth:`Spec.convert` turns an accepted JSON
value into the message's Python value. :class:`Tensor` declares a tensor field: the dtypes it may
have and the shape pattern it must follow. :data:`ENVELOPE` marks a field carried in the envelope.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

MAX_INT = 2**53 - 1  # largest integer every JSON implementation represents exactly

_ID_RE = re.compile(r"[A-Za-z0-9._:-]*")
_HEX_RE = re.compile(r"[0-9a-f]*")


class Spec:
    def type_ok(self, v: Any) -> bool:
        raise NotImplementedError

    def range_ok(self, v: Any) -> bool:
        raise NotImplementedError

    def convert(self, v: Any) -> Any:
        return v


class Int(Spec):
    def __init__(self, lo: int = 0, hi: int = MAX_INT) -> None:
        self.lo, self.hi = lo, hi

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def range_ok(self, v: Any) -> bool:
        return self.lo <= v <= self.hi


class Bool(Spec):
    def type_ok(self, v: Any) -> bool:
        return isinstance(v, bool)

    def range_ok(self, v: Any) -> bool:
        return True


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: int | float) -> bool:
    """Finite without converting: a JSON integer may be far beyond float range (10**400), and
    ``math.isfinite`` on such an int raises OverflowError. Python compares int and float exactly."""
    return isinstance(v, int) or math.isfinite(v)


def _as_float(v: int | float) -> float:
    # only called on range-checked values (so within float range); + 0.0 turns -0.0 into 0.0
    return float(v) + 0.0


class OptFloat(Spec):
    """None or a finite float in [lo, hi]; a JSON integer is accepted as a number."""

    def __init__(self, lo: float = 0.0, hi: float = 1e12) -> None:
        self.lo, self.hi = lo, hi

    def type_ok(self, v: Any) -> bool:
        return v is None or _is_number(v)

    def range_ok(self, v: Any) -> bool:
        return v is None or (_finite(v) and self.lo <= v <= self.hi)

    def convert(self, v: Any) -> Any:
        return None if v is None else _as_float(v)


class Id(Spec):
    """An identifier: ASCII letters, digits and ``._:-``."""

    def __init__(self, min_len: int = 1, max_len: int = 64) -> None:
        self.min_len, self.max_len = min_len, max_len

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, str)

    def range_ok(self, v: Any) -> bool:
        return self.min_len <= len(v) <= self.max_len and _ID_RE.fullmatch(v) is not None


class Text(Spec):
    """Free text for humans: printable (no control characters, no lone surrogates), bounded."""

    def __init__(self, max_len: int = 1024) -> None:
        self.max_len = max_len

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, str)

    def range_ok(self, v: Any) -> bool:
        return len(v) <= self.max_len and v.isprintable()


class IntList(Spec):
    def __init__(self, lo: int, hi: int, min_len: int = 1, max_len: int = 16) -> None:
        self.item = Int(lo, hi)
        self.min_len, self.max_len = min_len, max_len

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, list) and all(self.item.type_ok(x) for x in v)

    def range_ok(self, v: Any) -> bool:
        return self.min_len <= len(v) <= self.max_len and all(self.item.range_ok(x) for x in v)

    def convert(self, v: Any) -> Any:
        return tuple(v)


class Float(Spec):
    """A finite float in (lo, hi] (``lo_open``) or [lo, hi]; a JSON integer is accepted as a number."""

    def __init__(self, lo: float, hi: float, *, lo_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def type_ok(self, v: Any) -> bool:
        return _is_number(v)

    def range_ok(self, v: Any) -> bool:
        return _finite(v) and (v > self.lo if self.lo_open else v >= self.lo) and v <= self.hi

    def convert(self, v: Any) -> Any:
        return _as_float(v)


class Hex(Spec):
    """Lowercase hex of an exact length (digests, X25519 public keys)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, str)

    def range_ok(self, v: Any) -> bool:
        return len(v) == self.length and _HEX_RE.fullmatch(v) is not None


class IdKeyList(Spec):
    """``[[id, 64-hex key], ...]`` (a secure-sum participant set); stays a list of lists."""

    def __init__(self, max_len: int = 1024) -> None:
        self.max_len = max_len
        self.id, self.key = Id(1, 64), Hex(64)

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, list) and all(
            isinstance(p, list) and len(p) == 2 and self.id.type_ok(p[0]) and self.key.type_ok(p[1]) for p in v
        )

    def range_ok(self, v: Any) -> bool:
        return 1 <= len(v) <= self.max_len and all(self.id.range_ok(p[0]) and self.key.range_ok(p[1]) for p in v)

    def convert(self, v: Any) -> Any:
        return [list(p) for p in v]


class JsonObject(Spec):
    """A small JSON object of plain values (policy summary, model parameters)."""

    def __init__(self, max_depth: int = 4, max_nodes: int = 256, max_str: int = 256) -> None:
        self.max_depth, self.max_nodes, self.max_str = max_depth, max_nodes, max_str

    def type_ok(self, v: Any) -> bool:
        return isinstance(v, dict)

    def range_ok(self, v: Any) -> bool:
        budget = [self.max_nodes]

        def ok(x: Any, depth: int) -> bool:
            budget[0] -= 1
            if budget[0] < 0 or depth > self.max_depth:
                return False
            if x is None or isinstance(x, bool):
                return True
            if isinstance(x, int):
                return -MAX_INT <= x <= MAX_INT
            if isinstance(x, float):
                return math.isfinite(x)  # (strict JSON parsing already refuses overflowing floats)
            if isinstance(x, str):
                return len(x) <= self.max_str and x.isprintable()
            if isinstance(x, list):
                return all(ok(y, depth + 1) for y in x)
            if isinstance(x, dict):
                return all(
                    isinstance(k, str) and 0 < len(k) <= 64 and k.isprintable() and ok(y, depth + 1)
                    for k, y in x.items()
                )
            return False

        return ok(v, 0)


@dataclass(frozen=True)
class Tensor:
    """A tensor field: the wire dtypes it may have and, optionally, its shape pattern.

    ``shape`` lists one entry a dimension: an int is that exact length, a str names a length that
    must be the same wherever the name occurs among the message's tensors (``("B", 4, "H", "W")``
    for both ``cond`` and ``fake``: the same [B, 4, H, W]). None: any shape within the limits."""

    dtypes: tuple[str, ...]
    shape: tuple[int | str, ...] | None = None


class _Envelope:
    def __repr__(self) -> str:
        return "ENVELOPE"


# marks a message field carried once, in the envelope (run_id -> "run", round, step)
ENVELOPE = _Envelope()

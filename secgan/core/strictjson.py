"""Strict JSON for anything read from a peer or a file another party wrote: UTF-8 only, no
NaN/Infinity, no float that overflows to infinity, no duplicate keys. Kept free of heavy imports
so key handling can use it without torch."""

from __future__ import annotations

import json
import math
from typing import Any


class _Reject(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Reject("duplicate key")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise _Reject("NaN/Infinity")


def _finite_float(s: str) -> float:
    x = float(s)
    if not math.isfinite(x):  # e.g. 1e999
        raise _Reject("overflowing float")
    return x


def parse_strict_json(data: bytes | memoryview) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity/overflowing floats, no duplicate keys. ValueError otherwise."""
    try:
        text = bytes(data).decode("utf-8")
        return json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(type(exc).__name__) from None

"""What a valid ``ledger.json`` holds: its format number, the accounting assumptions it may name, and
the checks that turn a damaged file into a clear error (never a silent reset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secgan.core.errors import PrivacyError
from secgan.privacy.accounting import ACCOUNTANTS
from secgan.privacy.policy import MODES

FORMAT = 1
# Accounting assumptions a site may opt into (``PrivacyPolicy``); each is named in the ledger.
SHARD_AMPLIFICATION = "sanitize_shard_amplification"
ASSUMPTIONS = (SHARD_AMPLIFICATION,)


def corrupt(path: Path, what: str) -> PrivacyError:
    return PrivacyError(
        f"{path}: privacy ledger is corrupt ({what}); refusing to start. A ledger is never reset "
        "silently: restore it from a backup or start a new run with a new state directory"
    )


def validate(path: Path, data: Any) -> dict[str, Any]:
    """``data`` read from ``path`` if it is a whole, well-typed ledger (PrivacyError naming what is not)."""
    if not isinstance(data, dict):
        raise corrupt(path, "not a JSON object")
    if data.get("format") != FORMAT:
        raise corrupt(path, f"format {data.get('format')!r} is not {FORMAT}")
    expect = {
        "mode": str,
        "delta": float,
        "target_epsilon": float,
        "clip_norm": float,
        "dataset_fingerprint": str,
        "policy_hash": str,
        "accountant": str,
        "accountant_version": str,
        "releases": int,
        "steps": int,
        "history": list,
    }
    for key, tp in expect.items():
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float) if tp is float else tp):
            raise corrupt(path, f"field {key!r} missing or not a {tp.__name__}")
    if data["mode"] not in MODES:
        raise corrupt(path, f"field 'mode' is {data['mode']!r}")
    if data["accountant"] not in ACCOUNTANTS:
        raise corrupt(path, f"field 'accountant' is {data['accountant']!r} (known: {', '.join(ACCOUNTANTS)})")
    if data["releases"] < 0 or data["steps"] < 0:
        raise corrupt(path, "negative counters")
    steps = 0
    for i, e in enumerate(data["history"]):
        if not (
            isinstance(e, list)
            and len(e) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in e)
            and isinstance(e[2], int)
            and e[0] >= 0
            and 0 <= e[1] <= 1
            and e[2] >= 1
        ):
            raise corrupt(path, f"history[{i}] is not [sigma, q, steps]")
        steps += e[2]
    if steps != data["steps"]:
        raise corrupt(path, f"history holds {steps} steps but 'steps' says {data['steps']}")
    eps = data.get("epsilon")
    if eps is not None and not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps >= 0):
        raise corrupt(path, "field 'epsilon' is not a number >= 0 or null")
    if "assumptions" not in data:
        # written before assumptions were recorded: sanitize then always assumed shard amplification
        data["assumptions"] = [SHARD_AMPLIFICATION] if data["mode"] == "sanitize" else []
    a = data["assumptions"]
    if not (isinstance(a, list) and all(isinstance(x, str) and x in ASSUMPTIONS for x in a)):
        raise corrupt(path, f"field 'assumptions' must be a list of {', '.join(ASSUMPTIONS)}")
    tail = data.get("log_tail")
    if tail is not None and not (isinstance(tail, str) and len(tail) == 64 and all(c in "0123456789abcdef" for c in tail)):
        raise corrupt(path, "field 'log_tail' is not a SHA-256 hex digest")
    if not isinstance(data.get("recoveries", []), list):
        raise corrupt(path, "field 'recoveries' is not a list")
    return data

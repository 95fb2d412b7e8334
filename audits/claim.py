"""What a site's audit report says about its privacy claim: the ledger read and verified against its
release log, the claimed epsilon (never below what its own history recomputes to), the findings the
rubric cannot see (a ledger that fails verification, an assumed rather than proven bound), and the
salted dataset fingerprint a report may show."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from audits import report as rep
from secgan.core.errors import DataError, PrivacyError, SecganError


def read_ledger(state_dir: Path) -> dict | None:
    """The site's ledger as a dict (None if there is none). Uses the privacy package's reader."""
    path = Path(state_dir) / "ledger.json"
    if not path.exists():
        return None
    try:
        from secgan.privacy.ledger import PrivacyLedger
    except ImportError:  # pragma: no cover - the ledger module ships with secgan
        PrivacyLedger = None
    if PrivacyLedger is not None:
        try:
            return PrivacyLedger.read(state_dir).to_dict()
        except PrivacyError as exc:
            raise DataError(f"{path}: unreadable privacy ledger ({exc})") from None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable privacy ledger ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a ledger must be a JSON object")
    return data


BROKEN_LEDGER_CHOICES = ("refuse", "mark")


def verify_ledger_state(state_dir: Path) -> dict:
    """Ledger and release log verified together, as ``secgan ledger verify`` does:
    {"ok", "problems", "log_releases", "log_max_epsilon"}. A log without a ledger is a problem."""
    from secgan.privacy.ledger import LEDGER_FILE
    from secgan.privacy.release_log import LOG_FILE, verify_chain, verify_release_log

    state_dir = Path(state_dir)
    chain = verify_chain(state_dir / LOG_FILE)
    if not (state_dir / LEDGER_FILE).exists():
        problems = list(chain.problems)
        if chain.releases:
            problems.append(f"the release log holds {chain.releases} releases but there is no ledger")
        return {"ok": not problems, "problems": problems, "log_releases": chain.releases,
                "log_max_epsilon": chain.max_epsilon}
    res = verify_release_log(state_dir)
    return {"ok": res.ok, "problems": list(res.problems), "log_releases": res.releases,
            "log_max_epsilon": res.max_epsilon}


def ledger_findings(claim: dict) -> list[dict]:
    """Findings the rubric cannot see: a ledger that fails verification (always Critical: its epsilon
    is no bound) and accounting that rests on an assumption rather than a proof (Amber)."""
    out = []
    v = claim.get("ledger_verification") or {}
    if v and not v.get("ok", True):
        out.append({
            "level": "Critical", "area": "epsilon", "subject": rep.LEDGER_SUBJECT,
            "reason": ("the site's privacy ledger FAILS verification against its release log, so the claimed "
                       "epsilon is not a valid bound: " + "; ".join(v.get("problems") or [])[:600]),
            "values": {"problems": list(v.get("problems") or [])},
        })
    for a in claim.get("assumptions") or []:
        out.append({
            "level": "Amber", "area": "epsilon", "subject": "privacy accounting",
            "reason": (f"the claimed epsilon rests on the assumption '{a}' (opted into by the site's policy), not on "
                       "a proof; the proven figure is larger (see SECURITY.md)"),
            "values": {"assumption": a},
        })
    return out


def claim_of(ledger: dict | None, policy) -> dict:
    mode = (ledger or {}).get("mode") or policy.mode
    claimed = None if ledger is None else ledger.get("epsilon")
    recomputed = None
    if ledger is not None and ledger.get("history") and mode != "off":
        try:
            from secgan.privacy.accounting import epsilon_from_history

            recomputed = float(epsilon_from_history([tuple(h) for h in ledger["history"]], delta=float(ledger["delta"]),
                                                    accountant=ledger.get("accountant", policy.accountant)))
        except (ImportError, ValueError, TypeError, KeyError, SecganError):
            recomputed = None
    if claimed is not None and recomputed is not None:
        claimed = max(float(claimed), recomputed)  # never let a stale ledger flatter the site
    return {
        "mode": mode,
        "claimed": None if mode == "off" or claimed is None else float(claimed),
        "recomputed": recomputed,
        "delta": float((ledger or {}).get("delta", policy.delta)),
        "target": float((ledger or {}).get("target_epsilon", policy.target_epsilon)),
        "ledger_found": ledger is not None,
        "accountant": str((ledger or {}).get("accountant", policy.accountant)),
        "assumptions": list((ledger or {}).get("assumptions") or []),
    }


def salted_ledger(ledger: dict | None, salt: bytes) -> dict | None:
    """The ledger for the report, its raw dataset fingerprint replaced by a salted one (an unsalted
    hash of the data would let anyone holding a candidate data set confirm it)."""
    if ledger is None:
        return None
    out = dict(ledger)
    fp = out.pop("dataset_fingerprint", None)
    if fp is not None:
        out["dataset_fingerprint_salted"] = hashlib.sha256(salt + str(fp).encode()).hexdigest()
    return out

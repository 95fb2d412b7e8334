"""Append-only, hash-chained log of everything a site released: ``state_dir/releases.jsonl``.

One JSON line per release: {step, round, run_id, kinds, shapes, sha256 (of the released bytes),
epsilon_after, prev_hash, hash}; ``hash`` is the SHA-256 of the entry's canonical JSON without
``hash``, and ``prev_hash`` chains it to the line before (the first line chains to 64 zeros).
Each append is fsynced before the release is sent. The log lets a privacy officer check, after
the fact, that every release the site made is covered by its ledger (``verify_release_log``).

Order at the site: ledger reserve (durable) -> log append (durable) -> send. So after a crash the
log may miss the last reserved step (the ledger over-counts), never the reverse.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from secgan.errors import PrivacyError
from secgan.logs import get_logger

LOG_FILE = "releases.jsonl"
GENESIS = "0" * 64
_FIELDS = ("step", "round", "run_id", "kinds", "shapes", "sha256", "epsilon_after", "prev_hash")

log = get_logger(__name__)


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def entry_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: entry[k] for k in _FIELDS})).hexdigest()


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the released tensors' names, dtypes, shapes and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(_canonical({"name": name, "dtype": str(t.dtype), "shape": list(t.shape)}))
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class ReleaseLog:
    """The writer. Opening it checks the chain so an append never extends a broken one."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / LOG_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()
        result = verify_chain(self.path)
        if not result.ok:
            raise PrivacyError(f"{self.path}: release log is broken ({'; '.join(result.problems)}); refusing to append")
        self.entries = result.entries
        self.last_hash = result.last_hash
        self.max_epsilon = result.max_epsilon

    def _repair_torn_tail(self) -> None:
        """Drop a final line without its newline: a crash mid-append, whose release was never sent
        (the send happens only after the fsynced append returned)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
            log.warning("release_log_torn_tail_dropped", bytes=len(data) - keep)

    def append(
        self,
        *,
        step: int,
        round: int,
        run_id: str,
        tensors: Mapping[str, torch.Tensor],
        epsilon_after: float | None,
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "step": int(step),
            "round": int(round),
            "run_id": str(run_id),
            "kinds": sorted(tensors),
            "shapes": {k: list(tensors[k].shape) for k in sorted(tensors)},
            "sha256": tensor_digest(tensors),
            "epsilon_after": None if epsilon_after is None else float(epsilon_after),
            "prev_hash": self.last_hash,
        }
        entry["hash"] = entry_hash(entry)
        line = _canonical(entry) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.entries += 1
        self.last_hash = entry["hash"]
        if epsilon_after is not None:
            self.max_epsilon = max(self.max_epsilon or 0.0, float(epsilon_after))
        return entry


@dataclass
class VerifyResult:
    ok: bool
    entries: int = 0
    last_hash: str = GENESIS
    max_epsilon: float | None = None
    problems: list[str] = field(default_factory=list)
    ledger_releases: int | None = None
    ledger_epsilon: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "max_epsilon_logged": self.max_epsilon,
            "ledger_releases": self.ledger_releases,
            "ledger_epsilon": self.ledger_epsilon,
            "problems": list(self.problems),
        }


def verify_chain(path: str | Path) -> VerifyResult:
    """Check every line's hash and its link to the line before."""
    path = Path(path)
    res = VerifyResult(ok=True)
    if not path.exists():
        return res
    prev = GENESIS
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw:
            continue
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or any(k not in entry for k in _FIELDS + ("hash",)):
                raise ValueError("missing fields")
            computed = entry_hash(entry)
        except (ValueError, TypeError) as exc:
            res.problems.append(f"line {n}: not a valid log entry ({exc})")
            res.ok = False
            break
        if entry["prev_hash"] != prev:
            res.problems.append(f"line {n}: prev_hash does not match the line before (entry removed or reordered)")
            res.ok = False
            break
        if entry["hash"] != computed:
            res.problems.append(f"line {n}: hash does not match its content (entry altered)")
            res.ok = False
            break
        prev = entry["hash"]
        res.entries += 1
        eps = entry["epsilon_after"]
        if eps is not None:
            res.max_epsilon = max(res.max_epsilon or 0.0, float(eps))
    res.last_hash = prev
    return res


def verify_release_log(state_dir: str | Path) -> VerifyResult:
    """The chain holds, and the ledger covers every logged release (count and epsilon)."""
    from secgan.privacy.ledger import PrivacyLedger

    state_dir = Path(state_dir)
    res = verify_chain(state_dir / LOG_FILE)
    try:
        ledger = PrivacyLedger.read(state_dir)
    except PrivacyError as exc:
        res.ok = False
        res.problems.append(str(exc))
        return res
    res.ledger_releases = ledger.releases
    res.ledger_epsilon = ledger.epsilon
    if ledger.releases < res.entries:
        res.ok = False
        res.problems.append(f"ledger counts {ledger.releases} releases but the log holds {res.entries}")
    if res.max_epsilon is not None and (ledger.epsilon is None or ledger.epsilon < res.max_epsilon):
        res.ok = False
        res.problems.append(f"ledger epsilon {ledger.epsilon} is below the largest logged epsilon {res.max_epsilon}")
    return res

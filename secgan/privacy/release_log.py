"""Append-only, hash-chained log of everything a site released: ``state_dir/releases.jsonl``.

One JSON line per release: {step, round, run_id, kinds, shapes, sha256 (of the released bytes),
epsilon_after, charged_steps, prev_hash, hash}; ``charged_steps`` is how many sampled-Gaussian steps
the ledger charged for it (1 per private D step, n_D for a D update of n_D steps, 0 for a
gradient-only release through an already-charged D, 0 in mode "off"; an entry written before the
field existed charged 1). Every release is logged, charged or not, so the log is a complete record
of what left the site. ``hash`` is the SHA-256 of the entry's canonical JSON without
``hash``, and ``prev_hash`` chains it to the line before (the first line chains to 64 zeros).
Each append is fsynced before the release is sent. The log lets a privacy officer check, after
the fact, that every release the site made is covered by its ledger (``verify_release_log``).

Order at the site: ledger reserve (durable) -> log append (durable) -> send. So after a crash the
log may miss the last reserved step (the ledger over-counts), never the reverse.

One writer: before every append (and, through the ledger, before every reserve) the writer checks
that the file still ends where its own last append ended (size and last hash), so a second writer
by any path is detected before the next release, never after.

A ``carry_over`` entry (kinds ``["carry_over"]``, written only by ``secgan ledger recover``) starts
a new chain after a broken log was archived; its ``carried`` field records the releases and the
epsilon carried over (the larger of ledger and old log, never less) and the archived file's hash.
It counts as ``carried["releases"]`` releases.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from secgan.core.errors import PrivacyError
from secgan.core.logs import get_logger

LOG_FILE = "releases.jsonl"
GENESIS = "0" * 64
_FIELDS = ("step", "round", "run_id", "kinds", "shapes", "sha256", "epsilon_after", "prev_hash")
CARRY_OVER = "carry_over"
RECOVER_HINT = "see `secgan ledger recover --help` (SECURITY.md, \"Recovering a broken release log\")"

log = get_logger(__name__)


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of the entry's canonical JSON without ``hash`` (every other key is covered)."""
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def entry_releases(entry: Mapping[str, Any]) -> int:
    """How many releases one entry stands for: 1, or the count a carry-over entry carries."""
    if entry.get("kinds") == [CARRY_OVER]:
        return int(entry["carried"]["releases"])
    return 1


def entry_charged_steps(entry: Mapping[str, Any]) -> int:
    """Sampled-Gaussian steps one entry was charged: its ``charged_steps`` (1 when absent: written
    before gradient-only releases and n_D existed); a carry-over entry: the steps of the history it
    carries. ValueError if the field is not a whole number >= 0."""
    if entry.get("kinds") == [CARRY_OVER]:
        return sum(int(h[2]) for h in entry["carried"].get("history", []))
    k = entry.get("charged_steps", 1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"charged_steps {k!r} is not a whole number >= 0")
    return k


def entry_rows(entry: Mapping[str, Any]) -> int:
    """Rows of the released gradient (its first dimension); 0 for a carry-over entry."""
    shape = (entry.get("shapes") or {}).get("grad") or [0]
    return int(shape[0]) if shape else 0


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
            raise PrivacyError(
                f"{self.path}: release log is broken ({'; '.join(result.problems)}); refusing to append. {RECOVER_HINT}"
            )
        self.entries = result.entries
        self.releases = result.releases
        self.last_hash = result.last_hash
        self.max_epsilon = result.max_epsilon
        self.max_rows = result.max_rows
        self.hashes = result.hashes
        self.charged = result.charged
        self._size = self.path.stat().st_size if self.path.exists() else 0

    def check_tail(self) -> None:
        """Raise PrivacyError unless the file still ends with this writer's last append.

        Called before every reserve and every append: another writer (a second process, a restored
        file, a hand edit) shows up as a different size or a different last hash."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0  # as good as empty; a log that had entries then differs in size
        if size == self._size and (size == 0 or self._last_line_hash() == self.last_hash):
            return
        raise PrivacyError(
            f"{self.path}: the release log changed under this process (expected {self._size} bytes ending in "
            f"entry {self.last_hash[:12]}..., found {size} bytes): another writer touched this "
            f"site's state; refusing to release. {RECOVER_HINT}"
        )

    def _last_line_hash(self) -> str | None:
        with self.path.open("rb") as fh:
            fh.seek(max(0, self._size - 65536))
            tail = fh.read()
        lines = [ln for ln in tail.split(b"\n") if ln]
        if not lines:
            return None
        try:
            entry = json.loads(lines[-1])
        except ValueError:
            return None
        return entry.get("hash") if isinstance(entry, dict) else None

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
        charged_steps: int = 1,
    ) -> dict[str, Any]:
        if isinstance(charged_steps, bool) or not isinstance(charged_steps, int) or charged_steps < 0:
            raise PrivacyError(f"charged_steps must be a whole number >= 0, got {charged_steps!r}")
        self.check_tail()
        entry: dict[str, Any] = {
            "step": int(step),
            "round": int(round),
            "run_id": str(run_id),
            "kinds": sorted(tensors),
            "shapes": {k: list(tensors[k].shape) for k in sorted(tensors)},
            "sha256": tensor_digest(tensors),
            "epsilon_after": None if epsilon_after is None else float(epsilon_after),
            "charged_steps": charged_steps,
            "prev_hash": self.last_hash,
        }
        entry["hash"] = entry_hash(entry)
        line = _canonical(entry) + b"\n"
        self._write_line(line)
        self.entries += 1
        self.releases += 1
        self.last_hash = entry["hash"]
        self.hashes.append(entry["hash"])
        self.charged.append(charged_steps)
        self.max_rows = max(self.max_rows, entry_rows(entry))
        if epsilon_after is not None:
            self.max_epsilon = max(self.max_epsilon or 0.0, float(epsilon_after))
        return entry

    def append_carry_over(self, *, carried: Mapping[str, Any], epsilon: float | None, archived_sha256: str) -> dict[str, Any]:
        """The first entry of a new chain (``secgan ledger recover``); the log must be empty."""
        if self.entries:
            raise PrivacyError(f"{self.path}: a carry-over entry only starts a new chain")
        entry: dict[str, Any] = {
            "step": -1,
            "round": -1,
            "run_id": "",
            "kinds": [CARRY_OVER],
            "shapes": {},
            "sha256": archived_sha256,
            "epsilon_after": None if epsilon is None else float(epsilon),
            "prev_hash": GENESIS,
            "carried": dict(carried),
        }
        entry["hash"] = entry_hash(entry)
        self._write_line(_canonical(entry) + b"\n")
        self.entries = 1
        self.releases = entry_releases(entry)
        self.last_hash = entry["hash"]
        self.hashes.append(entry["hash"])
        self.charged.append(entry_charged_steps(entry))
        self.max_epsilon = entry["epsilon_after"]
        return entry

    def _write_line(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._size += len(line)


@dataclass
class VerifyResult:
    ok: bool
    entries: int = 0  # lines of the chain that verified
    releases: int = 0  # releases those lines stand for (a carry-over entry counts its carried releases)
    last_hash: str = GENESIS
    max_epsilon: float | None = None
    max_rows: int = 0
    hashes: list[str] = field(default_factory=list)  # entry hashes in order (the first is line 1)
    charged: list[int] = field(default_factory=list)  # steps each entry was charged, in order
    problems: list[str] = field(default_factory=list)
    ledger_releases: int | None = None
    ledger_epsilon: float | None = None
    ledger_steps: int | None = None

    @property
    def steps(self) -> int:
        """Sampled-Gaussian steps the logged releases were charged (gradient-only ones: 0)."""
        return sum(self.charged)

    @property
    def max_charged(self) -> int:
        """The most steps one logged release was charged (at least 1): prices an unidentified release."""
        return max([1, *self.charged])

    def position(self, h: str) -> int | None:
        """Line number of the entry whose hash is ``h`` (0 for GENESIS), or None."""
        if h == GENESIS:
            return 0
        try:
            return self.hashes.index(h) + 1
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "releases": self.releases,
            "steps": self.steps,
            "max_epsilon_logged": self.max_epsilon,
            "ledger_releases": self.ledger_releases,
            "ledger_steps": self.ledger_steps,
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
            n_rel = entry_releases(entry)
            rows = entry_rows(entry)
            charged = entry_charged_steps(entry)
            if isinstance(n_rel, bool) or n_rel < 0:
                raise ValueError("negative carried releases")
            if entry.get("kinds") == [CARRY_OVER] and n != 1:
                raise ValueError("a carry-over entry that is not the first line")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
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
        res.releases += n_rel
        res.max_rows = max(res.max_rows, rows)
        res.hashes.append(prev)
        res.charged.append(charged)
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
    res.ledger_steps = ledger.steps
    if ledger.releases < res.releases:
        res.ok = False
        res.problems.append(f"ledger counts {ledger.releases} releases but the log holds {res.releases}")
    if ledger.mode != "off" and ledger.steps < res.steps:
        res.ok = False
        res.problems.append(f"ledger charges {ledger.steps} steps but the logged releases were charged {res.steps}")
    if res.max_epsilon is not None and (ledger.epsilon is None or ledger.epsilon < res.max_epsilon):
        res.ok = False
        res.problems.append(f"ledger epsilon {ledger.epsilon} is below the largest logged epsilon {res.max_epsilon}")
    tail = ledger.log_tail
    if res.ok and tail is not None:
        pos = res.position(tail)
        if pos is None:
            res.ok = False
            res.problems.append(
                f"the release log does not hold entry {tail[:12]}..., the last one this ledger saw "
                "(log removed, replaced by an older or another site's log, or rewritten)"
            )
        elif res.entries > pos + 1:
            res.ok = False
            res.problems.append(
                f"{res.entries - pos - 1} logged release(s) after the last one this ledger accounted "
                "(ledger restored from an older state?)"
            )
    if not res.ok:
        res.problems.append(RECOVER_HINT)
    return res


@dataclass
class Salvage:
    """What every readable line of a (possibly broken) log claims, chain or no chain."""

    lines: int = 0
    releases: int = 0
    unreadable: int = 0
    max_epsilon: float | None = None
    max_rows: int = 0
    max_charged: int = 1  # the most steps one readable line was charged (at least 1)


def salvage(path: str | Path) -> Salvage:
    """Count the releases of every parseable line, ignoring the chain (``secgan ledger recover``:
    a broken log may hold more releases than its valid prefix, e.g. two writers' lines)."""
    path = Path(path)
    out = Salvage()
    if not path.exists():
        return out
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        out.lines += 1
        try:
            entry = json.loads(raw)
            n_rel, rows = entry_releases(entry), entry_rows(entry)
            charged = entry_charged_steps(entry) if entry.get("kinds") != [CARRY_OVER] else 1
            eps = entry.get("epsilon_after")
        except (ValueError, TypeError, KeyError, AttributeError):
            out.unreadable += 1
            out.releases += 1  # it may have been a release: count it (over-count, never under)
            continue
        out.releases += max(int(n_rel), 1) if not isinstance(n_rel, bool) else 1
        out.max_rows = max(out.max_rows, rows)
        out.max_charged = max(out.max_charged, charged)
        if isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps == eps:
            out.max_epsilon = max(out.max_epsilon or 0.0, float(eps))
    return out

"""Who runs a sweep job: an atomic claim file with a lease, renewed while the job runs.

Protocol (one claim file ``<id>.claim`` per job, beside its done record in ``out/jobs/``):

- **claim**: ``os.open(path, O_CREAT | O_EXCL | O_WRONLY)``; whoever creates the file owns the job.
  It holds ``{"owner": "<host>:<pid>", "nonce": ..., "claimed_at": t, "lease_until": t + lease}``
  (Unix times). ``O_EXCL`` create is atomic on a local disk and on NFSv3+ and the usual cluster file
  systems, so two workers never both own a job.
- **renew**: while the job runs, a thread rewrites the claim (temp file + rename) with a new
  ``lease_until`` every ``lease / 4`` seconds, as long as the file still carries its nonce.
- **stale**: a claim whose ``lease_until`` has passed belongs to a worker that died or stalled for
  a whole lease. Another worker breaks it: it creates ``<id>.claim.break`` with ``O_EXCL`` (so only
  one breaker acts), re-reads the claim, removes it only if it is the same stale claim (same nonce),
  removes the break file and claims again as above. A break file left by a breaker that died inside
  those few lines is removed once it is older than a lease.
- **release**: the owner writes the job's done record first, then removes its claim (if it still
  carries its nonce).
- A worker that finds, before writing its result, that its claim was taken over (it stalled longer
  than the lease) discards its result: the new owner's result is the one recorded.

Clocks: the lease is compared with the local clock, so the hosts sharing a folder must agree on
the time to well within a lease (NTP does).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from secgan.core.fsio import atomic_write_json
from secgan.core.logs import get_logger

log = get_logger(__name__)

DEFAULT_LEASE_S = 300.0  # seconds a claim stays valid without renewal


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def read_claim(path: Path) -> dict | None:
    """The claim in ``path``, or None when there is none; an unreadable claim (cut off while being
    created) reads as expired."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        float(data["lease_until"])
        return data
    except (ValueError, KeyError, TypeError):
        return {"owner": "?", "nonce": None, "lease_until": 0.0}


def is_stale(claim: dict, *, now: float | None = None) -> bool:
    return float(claim.get("lease_until", 0.0)) < (time.time() if now is None else now)


class Claim:
    """An owned claim; renewed in the background until ``release``."""

    def __init__(self, path: Path, *, lease_s: float, nonce: str) -> None:
        self.path = Path(path)
        self.lease_s = lease_s
        self.nonce = nonce
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name=f"claim-{self.path.name}", daemon=True)
        self._thread.start()

    def _record(self) -> dict:
        now = time.time()
        return {"owner": owner_name(), "nonce": self.nonce, "claimed_at": now, "lease_until": now + self.lease_s}

    def held(self) -> bool:
        """Whether the claim file still carries this claim's nonce."""
        cur = read_claim(self.path)
        return cur is not None and cur.get("nonce") == self.nonce

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                if not self.held():
                    log.warning("sweep_claim_lost", claim=self.path.name)
                    return
                atomic_write_json(self.path, self._record())
            except OSError as exc:  # a flaky shared disk: try again at the next tick
                log.warning("sweep_claim_renew_failed", claim=self.path.name, error=str(exc))

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.held():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _create(path: Path, lease_s: float) -> Claim | None:
    nonce = secrets.token_hex(8)
    now = time.time()
    body = json.dumps({"owner": owner_name(), "nonce": nonce, "claimed_at": now,
                       "lease_until": now + lease_s}).encode()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    return Claim(path, lease_s=lease_s, nonce=nonce)


def _break_stale(path: Path, stale: dict, lease_s: float) -> None:
    """Remove the stale claim ``stale`` from ``path`` unless someone else is already doing so."""
    breaker = path.with_name(path.name + ".break")
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - breaker.stat().st_mtime > lease_s:  # its breaker died mid-way
                breaker.unlink()
        except FileNotFoundError:
            pass
        return
    os.close(fd)
    try:
        cur = read_claim(path)
        if cur is not None and cur.get("nonce") == stale.get("nonce") and is_stale(cur):
            path.unlink()
            log.info("sweep_claim_broken", claim=path.name, owner=str(stale.get("owner")))
    finally:
        breaker.unlink()


def try_claim(path: Path, *, lease_s: float = DEFAULT_LEASE_S) -> Claim | None:
    """Own the job of claim file ``path``; None when another worker holds a live claim on it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    claim = _create(path, lease_s)
    if claim is not None:
        return claim
    cur = read_claim(path)
    if cur is None:  # released between our create and our read
        return _create(path, lease_s)
    if not is_stale(cur):
        return None
    _break_stale(path, cur, lease_s)
    return _create(path, lease_s)

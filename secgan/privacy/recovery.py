"""Ledger and release log together: the start-up cross-check and the recovery of a broken log.

``open_state`` (the learner, at start, under the state lock) never starts from less than the
release log shows:

- no ledger, a log with releases: the ledger is rebuilt from the log (each logged release priced
  at the site's current sigma and q, epsilon at least the largest logged one), never a fresh start;
- a ledger behind its log (restored from a backup, or a lost write): the missing releases are
  added at the most expensive price the log allows, epsilon raised to at least the logged one;
- a ledger whose last seen log entry (``log_tail``) is not in the log (log removed, replaced by an
  older copy or another site's log): refused, pointing to ``secgan ledger recover``;
- a broken chain: refused (``ReleaseLog``), pointing to ``secgan ledger recover``.

``recover`` (``secgan ledger recover``, under the same lock) archives a broken log, raises the
ledger to at least every release and epsilon any readable line of the old log claims, and starts a
new chain whose first entry carries those counts over. Nothing here ever lowers epsilon or counts.

What no check inside the state folder can see: the ledger, the log and the discriminators rolled
back *together* to one consistent older copy (a whole-folder restore) look like a site that simply
stopped there. SECURITY.md says so; keep backups of the state folder append-only or off-site.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from secgan.core.errors import PrivacyError
from secgan.core.logs import get_logger
from secgan.privacy.ledger import LEDGER_FILE, LedgerParams, PrivacyLedger
from secgan.privacy.release_log import (
    CARRY_OVER,
    GENESIS,
    LOG_FILE,
    RECOVER_HINT,
    ReleaseLog,
    entry_charged_steps,
    entry_rows,
    salvage,
    verify_chain,
    verify_release_log,
)
from secgan.privacy.statelock import StateLock

log = get_logger(__name__)

# rows of a release -> (sigma, q) the ledger charges for it; (None, None) in mode "off"
Cost = Callable[[int], tuple[float | None, float | None]]


STATS_KIND = "stats"  # the release log's kind of a one-shot statistics release


def _log_history(path: Path, cost: Cost, stats_price: tuple[float, float] | None = None) -> list[tuple[float, float, int]]:
    """The (sigma, q, steps) history a release log stands for, priced by ``cost`` (a statistics
    release by ``stats_price``)."""
    hist: list[list[float]] = []
    for raw in path.read_bytes().split(b"\n") if path.exists() else []:
        if not raw:
            continue
        entry = json.loads(raw)
        if entry.get("kinds") == [CARRY_OVER]:
            for s, q, k in entry["carried"].get("history", []):
                hist.append([float(s), float(q), int(k)])
            continue
        sigma, q = stats_price if (stats_price and entry.get("kinds") == [STATS_KIND]) else cost(entry_rows(entry))
        k = entry_charged_steps(entry)  # 0 for a gradient-only release: priced at zero
        if sigma is None or q is None or k == 0:
            continue
        if hist and hist[-1][0] == sigma and hist[-1][1] == q:
            hist[-1][2] += k
        else:
            hist.append([float(sigma), float(q), k])
    return [(s, q, int(k)) for s, q, k in hist]


def open_state(state_dir: str | Path, *, params: LedgerParams, cost: Cost,
               stats_price: tuple[float, float] | None = None) -> tuple[PrivacyLedger, ReleaseLog]:
    """The ledger and the release log of a site, cross-checked; the ledger is attached to the log.

    ``stats_price``: (sigma, q) of the site's statistics release, if its policy makes one; missing
    releases of unknown kind are then priced at the worse of it and ``cost`` (smallest sigma, largest q)."""
    state_dir = Path(state_dir)
    rlog = ReleaseLog(state_dir)  # a broken chain is refused here
    if not PrivacyLedger.exists(state_dir):
        if rlog.releases == 0:
            ledger = PrivacyLedger.rebuilt(state_dir, params=params, history=[], releases=0, epsilon_floor=None,
                                           log_tail=rlog.last_hash)
        else:
            ledger = PrivacyLedger.rebuilt(
                state_dir, params=params, history=_log_history(rlog.path, cost, stats_price), releases=rlog.releases,
                epsilon_floor=rlog.max_epsilon, log_tail=rlog.last_hash,
                recovery={"reason": f"{LEDGER_FILE} missing; rebuilt from {LOG_FILE} ({rlog.releases} releases)"},
            )
            log.warning("ledger_rebuilt_from_release_log", releases=ledger.releases, epsilon=ledger.epsilon)
        ledger.attach_release_log(rlog)
        return ledger, rlog

    ledger = PrivacyLedger.open(state_dir, params=params)
    unaccounted = 0
    if ledger.log_tail is not None:
        tail = ledger.log_tail
        pos = 0 if tail == GENESIS else (rlog.hashes.index(tail) + 1 if tail in rlog.hashes else None)
        if pos is None:
            raise PrivacyError(
                f"{state_dir / LOG_FILE}: the release log does not hold entry {ledger.log_tail[:12]}..., the last one "
                f"the ledger ({ledger.releases} releases) saw: the log was removed, replaced by an older copy or by "
                f"another site's log. Refusing to start a new chain silently; {RECOVER_HINT}"
            )
        unaccounted = max(0, rlog.entries - pos - 1)
    shortfall = max(unaccounted, rlog.releases - ledger.releases)
    eps_behind = rlog.max_epsilon is not None and ledger.epsilon is not None and ledger.epsilon < rlog.max_epsilon
    if shortfall > 0 or eps_behind:
        sigma, q = cost(max(rlog.max_rows, 1))
        if stats_price and sigma is not None and q is not None:
            sigma, q = min(sigma, stats_price[0]), max(q, stats_price[1])
        before = (ledger.releases, ledger.epsilon)
        # the identified missing entries at the steps they were charged; any further missing release
        # (no log_tail to place it) at the most steps one logged release was charged
        charged = sum(rlog.charged[len(rlog.charged) - unaccounted:]) if unaccounted else 0
        ledger.account_missing(
            steps=charged, releases=unaccounted, steps_per_release=max([1, *rlog.charged]),
            releases_floor=rlog.releases, sigma=sigma, q=q, epsilon_floor=rlog.max_epsilon,
            log_tail=rlog.last_hash,
            reason=f"{LEDGER_FILE} behind {LOG_FILE} ({before[0]} releases, log {rlog.releases}; "
                   f"{unaccounted} logged after its last seen entry): brought up to the log",
        )
        log.warning("ledger_behind_release_log", releases_before=before[0], releases=ledger.releases,
                    epsilon_before=before[1], epsilon=ledger.epsilon)
    ledger.attach_release_log(rlog)
    return ledger, rlog


def cover_saved_state(ledger: PrivacyLedger, *, saved_releases: int, cost: Cost, rows: int, what: str,
                      steps_per_release: int = 1) -> None:
    """A model state saved after more releases than the ledger counts (the ledger was removed or
    restored, and rebuilt from a log that missed releases reserved before a crash) is paid for:
    the ledger is raised to ``saved_releases``, each missing release at ``steps_per_release`` steps
    (the most one release can charge) at the price of ``rows`` rows."""
    if saved_releases <= ledger.releases:
        return
    sigma, q = cost(max(rows, 1))
    before = ledger.releases
    ledger.account_missing(
        steps=0, releases=0, steps_per_release=steps_per_release, releases_floor=saved_releases, sigma=sigma, q=q,
        epsilon_floor=None,
        log_tail=None, reason=f"{what} saved after {saved_releases} releases, ledger counted {before}",
    )
    log.warning("ledger_behind_saved_state", releases_before=before, releases=ledger.releases, epsilon=ledger.epsilon)


def saved_releases(paths: list[Path]) -> int:
    """The largest release count recorded in the metadata of saved module states (0 if none)."""
    from safetensors import safe_open

    most = 0
    for path in paths:
        if not path.is_file():
            continue
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = json.loads((fh.metadata() or {}).get("secgan", "{}"))
            most = max(most, int((header.get("meta") or {}).get("releases", 0)))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise PrivacyError(f"{path}: unreadable discriminator state ({type(exc).__name__})") from None
    return most


def _worst_price(history: list[tuple[float, float, int]]) -> tuple[float, float] | None:
    """A (sigma, q) at least as expensive as every entry: the smallest sigma with the largest q."""
    if not history:
        return None
    return min(s for s, _, _ in history), max(q for _, q, _ in history)


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(state_dir: str | Path) -> dict[str, Any]:
    """``secgan ledger recover``: make ledger and log verify again without lowering anything.

    Under the state lock (a running site is refused). Returns what was done."""
    state_dir = Path(state_dir)
    with StateLock.acquire(state_dir):
        before = verify_release_log(state_dir)
        if before.ok:
            return {"changed": False, "problems": [], "releases": before.ledger_releases, "epsilon": before.ledger_epsilon}
        if not PrivacyLedger.exists(state_dir):
            raise PrivacyError(
                f"{state_dir}: no {LEDGER_FILE}; start the site with its config instead, which rebuilds the ledger "
                f"from {LOG_FILE} (an intact log); a broken log without a ledger cannot be priced here"
            )
        ledger = PrivacyLedger.read(state_dir)
        path = state_dir / LOG_FILE
        chain = verify_chain(path)
        tail_lost = ledger.log_tail is not None and chain.position(ledger.log_tail) is None
        archive = not chain.ok or tail_lost
        seen = salvage(path) if archive else None
        log_releases = seen.releases if seen else chain.releases
        log_eps = max(filter(None, [seen.max_epsilon if seen else None, chain.max_epsilon]), default=None)
        missing = max(0, log_releases - ledger.releases)
        price = _worst_price(ledger.history)
        if missing and ledger.mode != "off" and price is None:
            raise PrivacyError(
                f"{state_dir}: the log holds {log_releases} releases, the ledger {ledger.releases} and no step to price "
                "the missing ones by; start the site once with its config (it prices them from its policy)"
            )
        problems = [p for p in before.problems if "ledger recover" not in p]
        archived = None
        if archive and path.exists():
            archived = path.with_name(f"releases.broken-{_stamp()}.jsonl")
            os.replace(path, archived)
            _fsync_dir(state_dir)
        sigma, q = price if price else (None, None)
        # which releases are missing is unknown here: each at the most steps one logged release was charged
        per_release = max(seen.max_charged if seen else 1, chain.max_charged)
        ledger.account_missing(
            steps=0, releases=0, steps_per_release=per_release, releases_floor=log_releases, sigma=sigma, q=q,
            epsilon_floor=log_eps, log_tail=None,
            reason=f"secgan ledger recover: {'; '.join(problems)[:500]}"
                   + (f"; broken log archived as {archived.name}" if archived else ""),
        )
        if archive:
            rlog = ReleaseLog(state_dir)
            digest = hashlib.sha256(archived.read_bytes()).hexdigest() if archived else "0" * 64
            entry = rlog.append_carry_over(
                carried={"releases": ledger.releases, "epsilon": ledger.epsilon,
                         "history": [list(h) for h in ledger.history],
                         "archived": archived.name if archived else None, "problems": problems},
                epsilon=ledger.epsilon, archived_sha256=digest,
            )
            ledger.record_log_tail(entry["hash"])
        else:
            ledger.record_log_tail(chain.last_hash)
        after = verify_release_log(state_dir)
        if not after.ok:  # pragma: no cover - a defect of this function, never a silent success
            raise PrivacyError(f"{state_dir}: recovery did not verify: {'; '.join(after.problems)}")
        log.warning("ledger_recovered", releases=ledger.releases, epsilon=ledger.epsilon, archived=bool(archived))
        return {"changed": True, "problems": problems, "archived": archived.name if archived else None,
                "releases": ledger.releases, "epsilon": ledger.epsilon}

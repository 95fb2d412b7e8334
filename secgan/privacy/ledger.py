"""The site's durable privacy ledger: ``state_dir/ledger.json``.

Holds the accountant's whole state (the (sigma, q, steps) history) next to everything the epsilon
depends on, so a restart can neither lose spent budget nor reuse it under other parameters:

- ``reserve_step`` computes epsilon after one more release, refuses (``BudgetExhausted``) past the
  target, and writes the new state atomically (temp file, fsync, rename, fsync dir) **before** the
  caller may release anything. A crash after the write and before the send can only over-count.
- ``open`` refuses a ledger written for another dataset (fingerprint) or other privacy parameters
  (mode, delta, target, C, accountant, policy hash, accounting assumptions), naming the field; a
  corrupt ledger is an error, never a silent reset.
- one writer: once a release log is attached, ``reserve_step`` first checks that ``ledger.json``
  still holds what this writer last wrote and that the log still ends with this writer's last
  entry, then records that entry's hash (``log_tail``), binding ledger and log together; so a second
  writer by any path is refused before the next release. Epsilon never goes down.
- ``account_missing`` / ``rebuilt`` (``secgan.privacy.recovery``): a ledger found behind its
  release log is brought up to (at least) what the log shows, and the event is recorded in
  ``recoveries``.

The math stays in ``secgan.privacy.accounting``; this module only keeps state. What a valid
``ledger.json`` holds is checked by ``secgan.privacy.ledger_file``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from secgan.core.errors import BudgetExhausted, PrivacyError
from secgan.core.fsio import atomic_write_json
from secgan.privacy.accounting import ACCOUNTANT, accountant_version, check_accountant, epsilon_from_history
from secgan.privacy.ledger_file import FORMAT, SHARD_AMPLIFICATION, corrupt, validate  # noqa: F401 (SHARD_AMPLIFICATION: named by importers)
from secgan.privacy.policy import MODES

LEDGER_FILE = "ledger.json"


@dataclass(frozen=True)
class LedgerParams:
    """What a ledger is bound to. A restart whose parameters differ in any field is refused."""

    mode: str
    delta: float
    target_epsilon: float
    clip_norm: float
    dataset_fingerprint: str
    policy_hash: str
    # the accountant that prices every release ("rdp" or "prv", secgan.privacy.accounting)
    accountant: str = ACCOUNTANT
    # None: the version of ``accountant`` in this code (accounting.accountant_version)
    accountant_version: str | None = None
    # accounting assumptions this budget rests on (names from ledger_file.ASSUMPTIONS, sorted); () = proven only
    assumptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_accountant(self.accountant)
        if self.accountant_version is None:
            object.__setattr__(self, "accountant_version", accountant_version(self.accountant))


# Fields compared on open, in this order (the first mismatch is named).
# Keys written by the accounting itself (creation and reserve_step); annotate() may not touch them.
_ACCOUNTING_KEYS = frozenset({"format", "history", "steps", "releases", "epsilon", "log_tail", "recoveries",
                              *(f.name for f in fields(LedgerParams))})
BOUND_FIELDS = ("dataset_fingerprint", "mode", "delta", "target_epsilon", "clip_norm", "accountant", "assumptions",
                "policy_hash")


def _params_dict(params: LedgerParams) -> dict[str, Any]:
    d = asdict(params)
    d["assumptions"] = sorted(params.assumptions)
    return d


def _scheme_of(version: str) -> str:
    return version.rsplit("+", 1)[-1]


class PrivacyLedger:
    """State of one site's accountant, bound to its data and policy. Not thread-safe: one owner."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self._data = data
        self._disk: dict[str, Any] | None = json.loads(json.dumps(data))  # what the file holds
        self._log: Any = None  # the attached ReleaseLog (attach_release_log)

    # ------------------------------------------------------------------ opening

    @classmethod
    def read(cls, state_dir: str | Path) -> "PrivacyLedger":
        """Load and validate an existing ledger without binding it (for ``secgan ledger show``)."""
        path = Path(state_dir) / LEDGER_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise PrivacyError(f"{path}: no privacy ledger here") from None
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise corrupt(path, f"not valid JSON: {exc.msg if hasattr(exc, 'msg') else exc}") from None
        ledger = cls(path, validate(path, data))
        ledger._disk = json.loads(raw)
        return ledger

    @staticmethod
    def exists(state_dir: str | Path) -> bool:
        return (Path(state_dir) / LEDGER_FILE).exists()

    @classmethod
    def open(cls, state_dir: str | Path, *, params: LedgerParams) -> "PrivacyLedger":
        """The ledger for ``params``: created (durably) if absent, else loaded and checked."""
        if params.mode not in MODES:
            raise PrivacyError(f"ledger mode must be one of {', '.join(MODES)}, got {params.mode!r}")
        path = Path(state_dir) / LEDGER_FILE
        if not path.exists():
            return cls.rebuilt(state_dir, params=params, history=[], releases=0, epsilon_floor=None, log_tail=None)
        ledger = cls.read(state_dir)
        ledger._check_bound(params)
        return ledger

    @classmethod
    def rebuilt(
        cls,
        state_dir: str | Path,
        *,
        params: LedgerParams,
        history: list[tuple[float, float, int]],
        releases: int,
        epsilon_floor: float | None,
        log_tail: str | None,
        recovery: dict[str, Any] | None = None,
    ) -> "PrivacyLedger":
        """A new ledger (written durably) holding ``history`` and ``releases``: empty for a fresh
        site, or rebuilt from a release log that outlived its ledger. Refuses to overwrite one."""
        path = Path(state_dir) / LEDGER_FILE
        if path.exists():
            raise PrivacyError(f"{path}: a ledger exists; it is never overwritten")
        if params.mode not in MODES:
            raise PrivacyError(f"ledger mode must be one of {', '.join(MODES)}, got {params.mode!r}")
        hist = [[float(s), float(q), int(k)] for s, q, k in history if int(k) > 0]
        eps: float | None = None
        if params.mode != "off":
            eps = epsilon_from_history(hist, delta=params.delta, accountant=params.accountant) if hist else 0.0
            eps = max(eps, epsilon_floor or 0.0)
        data: dict[str, Any] = {
            "format": FORMAT,
            **_params_dict(params),
            "history": hist,
            "steps": sum(k for _, _, k in hist),
            "releases": int(releases),
            "epsilon": eps,
            "recoveries": [recovery] if recovery else [],
        }
        if log_tail is not None:  # bound to a release log (the learner's ledger always is)
            data["log_tail"] = log_tail
        ledger = cls(path, data)
        ledger._disk = None
        ledger._write()
        return ledger

    def _check_bound(self, params: LedgerParams) -> None:
        want = _params_dict(params)
        for key in BOUND_FIELDS:
            if self._data[key] != want[key]:
                shown = (lambda v: v) if key not in ("dataset_fingerprint", "policy_hash") else (lambda v: str(v)[:12] + "...")
                raise PrivacyError(
                    f"{self.path}: ledger field {key!r} is {shown(self._data[key])!r} but the site now has "
                    f"{shown(want[key])!r}; refusing to continue a privacy budget under different data or "
                    "parameters (use a new state directory for a new run)"
                )
        if _scheme_of(self._data["accountant_version"]) != _scheme_of(params.accountant_version):
            raise PrivacyError(
                f"{self.path}: ledger was written by accounting scheme {self._data['accountant_version']!r}, "
                f"this code uses {params.accountant_version!r}; refusing to mix schemes"
            )
        # A newer Opacus may compute the same history differently: never let epsilon go down.
        if self.mode != "off":
            recomputed = epsilon_from_history(self.history, delta=self.delta, accountant=self.accountant)
            stored = self._data["epsilon"] or 0.0
            self._data["epsilon"] = max(stored, recomputed)

    # ------------------------------------------------------------------ state

    @property
    def mode(self) -> str:
        return self._data["mode"]

    @property
    def delta(self) -> float:
        return float(self._data["delta"])

    @property
    def accountant(self) -> str:
        """The accountant every epsilon of this ledger is computed with ("rdp" or "prv")."""
        return self._data["accountant"]

    @property
    def target_epsilon(self) -> float:
        return float(self._data["target_epsilon"])

    @property
    def history(self) -> list[tuple[float, float, int]]:
        return [(float(s), float(q), int(k)) for s, q, k in self._data["history"]]

    @property
    def releases(self) -> int:
        return int(self._data["releases"])

    @property
    def steps(self) -> int:
        return int(self._data["steps"])

    @property
    def log_tail(self) -> str | None:
        """Hash of the last release-log entry this ledger saw (None: written before it was recorded)."""
        return self._data.get("log_tail")

    @property
    def assumptions(self) -> list[str]:
        return list(self._data["assumptions"])

    @property
    def epsilon(self) -> float | None:
        """Epsilon after the last recorded release (None in mode "off": nothing is accounted)."""
        eps = self._data["epsilon"]
        return None if eps is None else float(eps)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._data))

    # ------------------------------------------------------------------ spending

    def _history_after(self, sigma: float, q: float, steps: int = 1) -> list[list[float]]:
        hist = [list(e) for e in self._data["history"]]
        if steps < 1:
            return hist
        if hist and hist[-1][0] == sigma and hist[-1][1] == q:
            hist[-1][2] += steps
        else:
            hist.append([sigma, q, steps])
        return hist

    def epsilon_after(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        """Epsilon if ``steps`` more steps with these parameters were released (nothing written)."""
        hist = self._history_after(float(noise_multiplier), float(sample_rate), int(steps))
        return epsilon_from_history(hist, delta=self.delta, accountant=self.accountant) if hist else 0.0

    def check_budget(self, *, noise_multiplier: float | None, sample_rate: float | None, steps: int = 1) -> float | None:
        """Raise BudgetExhausted if ``steps`` more steps would pass the target; else the epsilon after them."""
        if self.mode == "off":
            return None
        eps = max(self.epsilon_after(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps),
                  self.epsilon or 0.0)
        if not eps <= self.target_epsilon:
            raise BudgetExhausted(eps, self.target_epsilon)
        return eps

    def reserve_step(self, *, noise_multiplier: float | None, sample_rate: float | None, steps: int = 1) -> float | None:
        """Account one release that charges ``steps`` sampled-Gaussian steps and make it durable;
        only after this returns may it be sent.

        ``steps``: 1 for a release after one private D step, n_D after n_D of them, 0 for a
        gradient-only release (post-processing of an already-charged D: counted as a release, so
        ledger and log stay bound, and charged nothing). Returns epsilon after the release (None in
        mode "off", where only releases are counted). With a release log attached, first checks
        that this process is still the only writer.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise PrivacyError(f"a release charges a whole number of steps >= 0, got {steps!r}")
        self.check_sole_writer()
        tail = {} if self._log is None else {"log_tail": self._log.last_hash}
        if self.mode == "off":
            new = dict(self._data, releases=self.releases + 1, **tail)
        else:
            if noise_multiplier is None or sample_rate is None:
                raise PrivacyError("a DP release needs its noise multiplier and sampling rate")
            eps = self.check_budget(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
            new = dict(
                self._data,
                history=self._history_after(float(noise_multiplier), float(sample_rate), steps),
                steps=self.steps + steps,
                releases=self.releases + 1,
                epsilon=eps,
                **tail,
            )
        if new.get("epsilon") is not None and not math.isfinite(new["epsilon"]):
            raise BudgetExhausted(math.inf, self.target_epsilon)
        self._commit(new)
        return self.epsilon

    def attach_release_log(self, release_log: Any) -> None:
        """From now on every reserve checks ``release_log`` (its tail is still this writer's last
        entry) and records its last hash in ``log_tail``."""
        self._log = release_log

    def check_sole_writer(self) -> None:
        """Raise PrivacyError if ``ledger.json`` no longer holds what this writer last wrote, or the
        attached release log no longer ends with this writer's last entry."""
        try:
            on_disk = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            on_disk = None
        if on_disk != self._disk:
            raise PrivacyError(
                f"{self.path}: the ledger changed under this process (another writer, a restore or an edit); "
                "refusing to release. Stop every other process on this state folder, then restart the site"
            )
        if self._log is not None:
            self._log.check_tail()

    def account_missing(
        self,
        *,
        steps: int,
        sigma: float | None,
        q: float | None,
        epsilon_floor: float | None,
        releases_floor: int,
        log_tail: str | None,
        reason: str,
        releases: int | None = None,
        steps_per_release: int = 1,
    ) -> None:
        """Bring a ledger found behind its release log up to it, at (sigma, q) per step (the caller
        passes the most expensive price the log allows): ``releases`` identified missing releases
        (default: ``steps`` of them, one step each) charging ``steps`` steps in all; the release count
        raised to at least ``releases_floor``, each further (unidentified) release priced at
        ``steps_per_release`` steps; epsilon raised to at least ``epsilon_floor``; why recorded.
        Never lowers anything."""
        before = {"releases": self.releases, "epsilon": self.epsilon}
        new = dict(self._data)
        ident = int(steps) if releases is None else int(releases)
        add = max(ident, int(releases_floor) - self.releases, 0)
        add_steps = max(int(steps), 0) + (add - max(ident, 0)) * max(int(steps_per_release), 1)
        new["releases"] = self.releases + add
        if self.mode != "off" and add_steps:
            if sigma is None or q is None:
                raise PrivacyError("accounting missing DP releases needs their noise multiplier and sampling rate")
            hist = [list(e) for e in self._data["history"]]
            if hist and hist[-1][0] == float(sigma) and hist[-1][1] == float(q):
                hist[-1][2] += add_steps
            else:
                hist.append([float(sigma), float(q), add_steps])
            new["history"] = hist
            new["steps"] = self.steps + add_steps
        if self.mode != "off":
            eps = (epsilon_from_history(new["history"], delta=self.delta, accountant=self.accountant)
                   if new["history"] else 0.0)
            new["epsilon"] = max(eps, self.epsilon or 0.0, epsilon_floor or 0.0)
        if log_tail is not None:
            new["log_tail"] = log_tail
        new["recoveries"] = [*self._data.get("recoveries", []),
                             {"reason": reason, "added_releases": add, "added_steps": add_steps if self.mode != "off" else 0,
                              "before": before,
                              "after": {"releases": new["releases"], "epsilon": new["epsilon"]}}]
        self._commit(new)

    def record_log_tail(self, log_tail: str) -> None:
        """Durably record the release log's last entry as seen (after ``secgan ledger recover``)."""
        self._commit(dict(self._data, log_tail=log_tail))

    def annotate(self, key: str, value: Any) -> None:
        """Record a statement next to the accounting (e.g. the distributed-noise assumption of a
        secure-sum site), durably, before whatever it describes is released. Accounting keys are
        refused: they change only through reserve_step."""
        if key in _ACCOUNTING_KEYS:
            raise PrivacyError(f"ledger key {key!r} is set by the accounting itself, not by annotate()")
        old = dict(self._data)
        self._data[key] = value
        try:
            self._write()
        except BaseException:
            self._data = old
            raise

    def _commit(self, new: dict[str, Any]) -> None:
        """Make ``new`` the ledger's state only once it is durably written; on failure keep the old."""
        old = self._data
        self._data = new
        try:
            self._write()
        except BaseException:
            self._data = old
            raise

    def _write(self) -> None:
        atomic_write_json(self.path, self._data)
        self._disk = json.loads(json.dumps(self._data))

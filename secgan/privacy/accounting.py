"""Pure privacy accounting of the Poisson-subsampled Gaussian mechanism, converted to (epsilon, delta).

No state lives here (the ledger keeps the history); every function is a pure function of its
arguments, so it can be checked against known answers and independent implementations.

Two accountants (``ACCOUNTANTS``), chosen by the site's policy and recorded in its ledger:

- ``rdp`` (default): Opacus's Rényi-DP math (``opacus.accountants.analysis.rdp``: Mironov, Talwar,
  Zhang 2019 for the Poisson-subsampled Gaussian; Balle et al. 2020 for the RDP -> (eps, delta)
  conversion) at the orders of ``opacus.accountants.RDPAccountant``, so a site's epsilon is exactly
  what Opacus would report for the same history.
- ``prv``: numerical composition of privacy-loss random variables (Gopi, Lee, Wutschitz 2021), with
  Opacus's building blocks (``opacus.accountants.analysis.prv``, the math of its ``PRVAccountant``).
  It is approximate with a proven error bound, so the ledger takes its UPPER bound: epsilon at
  delta - delta_error, plus eps_error (``PRV_EPS_ERROR``; delta_error = ``PRV_DELTA_ERROR`` x delta,
  Opacus's defaults). Since RDP is a valid bound too, the figure is min(PRV upper, RDP): never
  more than RDP, never less than either proven bound. Where PRV cannot resolve a history (Opacus's
  own numerical checks fail, or epsilon is far past any budget: ``PRV_MAX_HALF_WIDTH``) it is RDP's. One difference from ``PRVAccountant``: the
  grid size is rounded up to a fast FFT length (a finer mesh than its bound needs, never coarser);
  a 4x speed-up at a few thousand steps, where pocketfft is slow on lengths with large prime factors.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Iterable, Sequence

from importlib.metadata import version as _dist_version

import numpy as np

from secgan.core.errors import PrivacyError

ACCOUNTANTS = ("rdp", "prv")
ACCOUNTANT = "rdp"  # the default: the one that is proven in closed form
# Bump SCHEME_VERSION whenever the way this module turns a history into epsilon changes
# (orders, conversion, history layout); ledgers written under another version are refused.
SCHEME_VERSION = 1
# The same for the "prv" accountant (error parameters, grid, the min with RDP).
PRV_SCHEME_VERSION = 1
# Opacus is imported where the math runs, not here: a site in mode "off" (and every import of the
# ledger) should not pay for it. The version string comes from the installed distribution.
ACCOUNTANT_VERSION = f"opacus-{_dist_version('opacus')}+secgan-rdp-{SCHEME_VERSION}"
ACCOUNTANT_VERSIONS = {
    "rdp": ACCOUNTANT_VERSION,
    "prv": f"opacus-{_dist_version('opacus')}+secgan-prv-{PRV_SCHEME_VERSION}",
}
# PRV error parameters (Opacus's PRVAccountant defaults): the upper bound is epsilon at
# delta * (1 - PRV_DELTA_ERROR), plus PRV_EPS_ERROR.
PRV_EPS_ERROR = 0.01
PRV_DELTA_ERROR = 1e-3
# The PRV grid grows with its half-width (about epsilon at delta_error / 4, from RDP): beyond this
# width (epsilon far past any budget) the PRV composition takes minutes, and the figure is RDP's.
PRV_MAX_HALF_WIDTH = 128.0
# The orders of opacus.accountants.RDPAccountant.DEFAULT_ALPHAS (a test keeps them equal).
ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
INT_ORDERS: tuple[float, ...] = tuple(a for a in ORDERS if float(a).is_integer())

Entry = tuple[float, float, int]  # (noise multiplier sigma, sampling rate q, steps)


def _check_entry(sigma: float, q: float, steps: int) -> None:
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise PrivacyError(f"noise_multiplier must be a finite number >= 0, got {sigma!r}")
    if not (isinstance(q, (int, float)) and 0.0 <= q <= 1.0):
        raise PrivacyError(f"sample_rate must be in [0, 1], got {q!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise PrivacyError(f"steps must be an integer >= 0, got {steps!r}")


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not (isinstance(delta, (int, float)) and 0.0 < delta < 1.0):
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")


def check_accountant(accountant: str) -> str:
    """``accountant`` if it is one of ``ACCOUNTANTS``; a PrivacyError naming it otherwise."""
    if not isinstance(accountant, str) or accountant not in ACCOUNTANTS:
        raise PrivacyError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    return accountant


def accountant_version(accountant: str) -> str:
    """The version string a ledger records for ``accountant`` (Opacus's version + this scheme)."""
    return ACCOUNTANT_VERSIONS[check_accountant(accountant)]


@lru_cache(maxsize=1024)
def _one_step_rdp(sigma: float, q: float, orders: tuple[float, ...] = ORDERS) -> tuple[float, ...]:
    # RDP composes linearly in the number of steps, so one step's curve is all that is ever
    # computed (the series Opacus evaluates for fractional orders is slow: ~0.1 s a curve).
    from opacus.accountants.analysis import rdp as _rdp

    return tuple(float(v) for v in _rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(orders)))


def rdp_curve(*, noise_multiplier: float, sample_rate: float, steps: int) -> np.ndarray:
    """RDP at every order in ``ORDERS`` of ``steps`` compositions of the sampled Gaussian."""
    _check_entry(noise_multiplier, sample_rate, steps)
    if steps == 0 or sample_rate == 0:
        return np.zeros(len(ORDERS))
    return np.asarray(_one_step_rdp(float(noise_multiplier), float(sample_rate)), dtype=float) * int(steps)


def _epsilon_of(rdp: np.ndarray, delta: float, orders: tuple[float, ...] = ORDERS) -> float:
    if not np.any(rdp):
        return 0.0
    if np.all(np.isinf(rdp)):
        return math.inf
    with warnings.catch_warnings():
        # Opacus warns when the optimum sits at the edge of the order range; the value is still a
        # valid (if looser) upper bound, which is all a ledger needs.
        warnings.simplefilter("ignore")
        from opacus.accountants.analysis import rdp as _rdp

        eps, _ = _rdp.get_privacy_spent(orders=list(orders), rdp=rdp, delta=delta)
    eps = float(eps)
    return math.inf if math.isnan(eps) else eps


def _entries(history: Iterable[Sequence[float]]) -> tuple[Entry, ...]:
    out = []
    for entry in history:
        if len(entry) != 3:
            raise PrivacyError(f"history entries are (sigma, q, steps), got {list(entry)!r}")
        sigma, q, steps = entry
        _check_entry(sigma, q, steps)
        if int(steps) > 0 and q > 0:
            out.append((float(sigma), float(q), int(steps)))
    return tuple(out)


def _rdp_of(entries: tuple[Entry, ...], delta: float) -> float:
    total = np.zeros(len(ORDERS))
    for sigma, q, steps in entries:
        total = total + rdp_curve(noise_multiplier=sigma, sample_rate=q, steps=steps)
    return _epsilon_of(total, delta)


def _fast_even_len(n: int) -> int:
    from scipy.fft import next_fast_len

    n = next_fast_len(n)
    while n % 2:
        n = next_fast_len(n + 1)
    return n


@lru_cache(maxsize=512)
def _prv_upper(entries: tuple[Entry, ...], delta: float) -> float:
    """PRV upper bound on epsilon (Opacus's ``PRVAccountant.get_epsilon`` math); cached on the history."""
    from opacus.accountants.analysis.prv import (
        Domain,
        PoissonSubsampledGaussianPRV,
        TruncatedPrivacyRandomVariable,
        compose_heterogeneous,
        discretize,
    )

    eps_error, delta_error = PRV_EPS_ERROR, delta * PRV_DELTA_ERROR
    total = sum(k for _, _, k in entries)
    # the safe domain of Gopi et al. (remark 5.6), as opacus' compute_safe_domain_size, on cached curves
    big = _rdp_of(entries, delta_error / 4)
    for sigma, q, _ in entries:
        big = max(big, _rdp_of(((sigma, q, 1),), delta_error / (8 * total)))
    if not big + 3 <= PRV_MAX_HALF_WIDTH:  # also inf / nan
        return math.inf
    half = max(big, eps_error) + 3
    mesh = eps_error / math.sqrt(total * math.log(12 / delta_error) / 2)
    # Opacus's aligned grid (0 at index size/2 - 1), its size rounded up to a fast FFT length
    size = _fast_even_len(2 * math.ceil(half / mesh) + 2)
    dt = half / (size // 2 - 1)
    domain = Domain(t_min=-half, t_max=half + dt, size=size)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            tprvs = [TruncatedPrivacyRandomVariable(PoissonSubsampledGaussianPRV(q, sigma), domain.t_min, domain.t_max)
                     for sigma, q, _ in entries]
            dprv = compose_heterogeneous(dprvs=[discretize(t, domain) for t in tprvs],
                                         num_self_compositions=[k for _, _, k in entries])
            _, _, upper = dprv.compute_epsilon(delta, delta_error, eps_error)
        except (RuntimeError, ValueError):  # Opacus's own checks: the grid cannot resolve it; keep RDP
            return math.inf
    upper = float(upper)
    return math.inf if math.isnan(upper) else upper


def epsilon_prv_upper(history: Iterable[Sequence[float]], *, delta: float) -> float:
    """The PRV accountant's own upper bound (without the min with RDP; for tests and reports)."""
    _check_delta(delta)
    entries = _entries(history)
    return _prv_upper(entries, float(delta)) if entries else 0.0


def epsilon_from_history(history: Iterable[Sequence[float]], *, delta: float, accountant: str = ACCOUNTANT) -> float:
    """Epsilon after a composition of heterogeneous (sigma, q, steps) entries, by ``accountant``.

    ``rdp``: RDP adds up over the entries. ``prv``: min(PRV upper bound, RDP), both valid bounds.
    """
    check_accountant(accountant)
    _check_delta(delta)
    entries = _entries(history)
    if not entries:
        return 0.0
    rdp = _rdp_of(entries, delta)
    if accountant == "rdp" or not math.isfinite(rdp):
        return rdp
    return min(rdp, _prv_upper(entries, float(delta)))


def epsilon_rdp(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon after ``steps`` steps of the Poisson-subsampled Gaussian mechanism (RDP)."""
    return epsilon_from_history([(noise_multiplier, sample_rate, steps)], delta=delta)


def epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = ACCOUNTANT) -> float:
    """Epsilon after ``steps`` steps of the Poisson-subsampled Gaussian mechanism, by ``accountant``."""
    return epsilon_from_history([(noise_multiplier, sample_rate, steps)], delta=delta, accountant=accountant)


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    tol: float = 0.01,
    max_sigma: float = 1e4,
    accountant: str = ACCOUNTANT,
    prior: Sequence[Sequence[float]] = (),
) -> float:
    """The smallest noise multiplier (to within ``tol``, relative) whose epsilon is <= the target.

    ``prior``: (sigma, q, steps) entries already spent (e.g. a one-shot statistics release); the
    target is then for their composition with the ``steps`` calibrated ones.
    Bisection on sigma (epsilon decreases in sigma); the returned value is always one whose
    epsilon (by ``accountant``) was evaluated and found within the target, so it never overshoots.
    """
    check_accountant(accountant)
    _check_delta(delta)
    before = _entries(prior)
    _check_entry(1.0, sample_rate, steps)
    if not (isinstance(target_epsilon, (int, float)) and target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise PrivacyError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    if not 0 < tol < 1:
        raise PrivacyError(f"tol must be in (0, 1), got {tol!r}")

    if steps == 0 or sample_rate == 0:
        return 0.0

    def curve_of(sigma: float, q: float, k: int, orders: tuple[float, ...]) -> np.ndarray:
        return np.asarray(_one_step_rdp(float(sigma), float(q), orders), dtype=float) * int(k)

    spent = {o: sum((curve_of(s, q, k, o) for s, q, k in before), np.zeros(len(o))) for o in (INT_ORDERS, ORDERS)}
    if before and epsilon_from_history(before, delta=delta, accountant=accountant) >= target_epsilon:
        raise PrivacyError(f"the prior entries alone spend epsilon {target_epsilon:g} or more; nothing is left to calibrate")

    def eps(sigma: float, orders: tuple[float, ...]) -> float:
        return _epsilon_of(curve_of(sigma, sample_rate, steps, orders) + spent[orders], delta, orders)

    # Phase 1 brackets sigma with the integer orders only: 20x faster than Opacus's series for
    # fractional orders, and an upper bound on epsilon (a minimum over fewer orders), so its answer
    # is already safe. Phase 2 tightens it with every order.
    lo, hi = 0.0, 1.0
    while eps(hi, INT_ORDERS) > target_epsilon:
        lo, hi = hi, hi * 2.0
        if hi > max_sigma:
            raise PrivacyError(
                f"no noise multiplier up to {max_sigma:g} reaches epsilon {target_epsilon:g} "
                f"(delta {delta:g}, q {sample_rate:g}, {steps} steps); raise the target or lower the steps"
            )
    while hi - lo > 0.25 * tol * hi:
        mid = 0.5 * (lo + hi)
        if eps(mid, INT_ORDERS) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    step = tol * hi
    for _ in range(10):
        if hi - step <= 0 or eps(hi - step, ORDERS) > target_epsilon:
            break
        hi -= step
    if accountant == "rdp":
        return hi
    # PRV: epsilon(prv) <= epsilon(rdp), so the RDP answer is within the target; bisect below it
    # with the PRV figure (each evaluation is a full PRV composition, hence the bracket).
    def eps_prv(sigma: float) -> float:
        return epsilon_from_history([*before, (sigma, sample_rate, steps)], delta=delta, accountant="prv")

    lo = 0.5 * hi
    while lo > 1e-3 and eps_prv(lo) <= target_epsilon:
        lo, hi = 0.5 * lo, lo
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        if eps_prv(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi

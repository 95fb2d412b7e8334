"""Pure privacy accounting: Rényi-DP of the sampled Gaussian mechanism, converted to (epsilon, delta).

No state lives here (the ledger keeps the history); every function is a pure function of its
arguments, so it can be checked against known answers and Opacus's own RDP accountant.

The math is Opacus's (``opacus.accountants.analysis.rdp``: Mironov, Talwar, Zhang 2019 for the
Poisson-subsampled Gaussian; Balle et al. 2020 for the RDP -> (eps, delta) conversion) evaluated at
the same orders as ``opacus.accountants.RDPAccountant``, so a site's epsilon is exactly what Opacus
would report for the same history.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Iterable, Sequence

from importlib.metadata import version as _dist_version

import numpy as np

from secgan.core.errors import PrivacyError

ACCOUNTANT = "rdp"
# Bump SCHEME_VERSION whenever the way this module turns a history into epsilon changes
# (orders, conversion, history layout); ledgers written under another version are refused.
SCHEME_VERSION = 1
# Opacus is imported where the math runs, not here: a site in mode "off" (and every import of the
# ledger) should not pay for it. The version string comes from the installed distribution.
ACCOUNTANT_VERSION = f"opacus-{_dist_version('opacus')}+secgan-rdp-{SCHEME_VERSION}"
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
    if not (isinstance(delta, (int, float)) and 0.0 < delta < 1.0):
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")


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


def epsilon_from_history(history: Iterable[Sequence[float]], *, delta: float) -> float:
    """Epsilon after a composition of heterogeneous (sigma, q, steps) entries (RDP adds up)."""
    _check_delta(delta)
    total = np.zeros(len(ORDERS))
    for entry in history:
        if len(entry) != 3:
            raise PrivacyError(f"history entries are (sigma, q, steps), got {list(entry)!r}")
        sigma, q, steps = entry
        total = total + rdp_curve(noise_multiplier=sigma, sample_rate=q, steps=int(steps))
    return _epsilon_of(total, delta)


def epsilon_rdp(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon after ``steps`` steps of the Poisson-subsampled Gaussian mechanism."""
    return epsilon_from_history([(noise_multiplier, sample_rate, steps)], delta=delta)


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    tol: float = 0.01,
    max_sigma: float = 1e4,
) -> float:
    """The smallest noise multiplier (to within ``tol``, relative) whose epsilon is <= the target.

    Bisection on sigma (epsilon decreases in sigma); the returned value is always one whose
    epsilon was evaluated and found within the target, so it never overshoots.
    """
    _check_delta(delta)
    _check_entry(1.0, sample_rate, steps)
    if not (isinstance(target_epsilon, (int, float)) and target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise PrivacyError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    if not 0 < tol < 1:
        raise PrivacyError(f"tol must be in (0, 1), got {tol!r}")

    if steps == 0 or sample_rate == 0:
        return 0.0

    def eps(sigma: float, orders: tuple[float, ...]) -> float:
        curve = np.asarray(_one_step_rdp(float(sigma), float(sample_rate), orders), dtype=float) * int(steps)
        return _epsilon_of(curve, delta, orders)

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
    return hi

"""What a site tells the coordinator about its privacy budget, and nothing more.

The exact epsilon after each release is a function of (sigma, q = E / n, steps); with sigma known
(or calibrated from the policy summary's target and delta) it gives away the cohort size n exactly,
and the add/remove guarantee does not cover n. So the wire carries only:

- ``budget_left``: the fraction of the target epsilon still unspent, rounded DOWN to a multiple of
  ``BUDGET_STEP`` (1.0 at the start, 0.0 for the last tenth), on every reply;
- a final ``Refusal`` (code ``budget_exhausted``) whose reason holds no figure.

The exact epsilon stays in the site's ledger, its release log, its own logs and its signed audit.
"""

from __future__ import annotations

import math

BUDGET_STEP = 0.1  # granularity of budget_left: ten buckets
_BUCKETS = round(1.0 / BUDGET_STEP)

EXHAUSTED_REASON = (
    "privacy budget exhausted: one more release would pass this site's target epsilon. "
    "This site serves no further steps of this run."
)


def budget_left(*, epsilon: float | None, target_epsilon: float) -> float | None:
    """Coarse fraction of the budget left: floor(buckets * (1 - epsilon / target)) / buckets.

    None when nothing is accounted (mode "off"). Rounding down means the coordinator can only
    under-estimate what is left; a non-finite or over-target epsilon reads as 0.0.
    """
    if epsilon is None:
        return None
    if not (math.isfinite(epsilon) and math.isfinite(target_epsilon) and target_epsilon > 0):
        return 0.0
    left = 1.0 - float(epsilon) / float(target_epsilon)
    k = math.floor(left * _BUCKETS)
    return min(max(k, 0), _BUCKETS) / _BUCKETS

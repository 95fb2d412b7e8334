"""A run's steps against a site's privacy plan: what the run will spend and how long the budget lasts.

For the site's own log only: the exact epsilon never goes on the wire (``secgan.privacy.disclosure``).
"""

from __future__ import annotations

from typing import Any

from secgan.privacy.accounting import epsilon
from secgan.privacy.policy import PrivacyPolicy


def run_plan(policy: PrivacyPolicy, *, run_steps: int, noise_multiplier: float, sample_rate: float, delta: float,
             target_epsilon: float, accountant: str) -> dict[str, Any]:
    """``epsilon_run``: what a run of ``run_steps`` rounds spends from a fresh ledger at this site's
    sigma and q (``policy.charged_steps`` of them are charged), stopping where the budget does
    (``budget_lasts_steps``, the most rounds the target allows). ``mismatch``: the noise was
    calibrated for another number of steps, or the budget runs out before the run ends."""

    def eps(k: int) -> float:  # k rounds: the policy's schedule says how many steps they charge
        steps = policy.charged_steps(k)
        return epsilon(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta,
                       accountant=accountant) if steps else 0.0

    run_steps = int(run_steps)
    lasts = run_steps
    if eps(run_steps) > target_epsilon:  # bisection: largest k with eps(k) <= target
        lo, hi = 0, run_steps
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if eps(mid) <= target_epsilon else (lo, mid)
        lasts = lo
    calibrated = policy.noise_multiplier is None
    return {
        "run_steps": run_steps,
        "planned_steps": policy.planned_steps if calibrated else None,
        "epsilon_run": round(eps(lasts), 4),
        "target_epsilon": target_epsilon,
        "budget_lasts_steps": lasts,
        "mismatch": (calibrated and run_steps != policy.planned_steps) or lasts < run_steps,
    }

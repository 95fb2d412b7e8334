"""Cross-field checks a site runs on its own policy before it serves anything.

Each refusal names its reason, so the operator (and the coordinator, via a Refusal) sees why.
"""

from __future__ import annotations

from secgan.core.errors import PrivacyError
from secgan.gan.config import CONDITION_SOURCES
from secgan.privacy.policy import PrivacyPolicy

DP_MODES = ("dpsgd", "sanitize")


def source_refusal(policy: PrivacyPolicy, name: str) -> str | None:
    """Why this site refuses the condition source ``name`` (None: it accepts it)."""
    if name not in CONDITION_SOURCES:
        return f"unknown condition source {name!r} (known: {', '.join(CONDITION_SOURCES)})"
    if name not in policy.accept_sources:
        return f"condition source {name!r} is not in this site's accept_sources {list(policy.accept_sources)}"
    if name == "site" and policy.mode in DP_MODES:
        return (
            f"condition source 'site' sends this site's own label maps to the coordinator, outside the "
            f"privacy accounting; refused under privacy mode {policy.mode!r}"
        )
    return None


def check_policy(
    policy: PrivacyPolicy,
    *,
    condition_source: str | None = None,
    l1_weight: float = 0.0,
    perceptual_weight: float = 0.0,
) -> None:
    """Refuse (PrivacyError) a policy that cannot hold its promise in this run."""
    if policy.mode == "off" and not policy.allow_off:
        raise PrivacyError("privacy mode 'off' needs allow_off = true in the site's own policy")
    if policy.mode in DP_MODES:
        for name, w in (("l1_weight", l1_weight), ("perceptual_weight", perceptual_weight)):
            if w > 0:
                raise PrivacyError(
                    f"{name} = {w:g} adds a loss term computed against real images, whose gradient is a "
                    f"direct function of real pixels; refused under privacy mode {policy.mode!r}"
                )
    if condition_source is not None:
        reason = source_refusal(policy, condition_source)
        if reason:
            raise PrivacyError(reason)

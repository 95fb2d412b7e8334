"""check_policy refuses exactly the forbidden combinations, each with a reason naming it."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secgan.core.errors import PrivacyError
from secgan.privacy.guards import check_policy
from secgan.gan.config import CONDITION_SOURCES as SOURCES
from secgan.privacy.policy import MODES, PrivacyPolicy

accepts = st.lists(st.sampled_from(SOURCES), min_size=0, max_size=3, unique=True).map(tuple)


@given(mode=st.sampled_from(MODES), accept=accepts, source=st.sampled_from(SOURCES),
       l1=st.sampled_from([0.0, 0.5]), perceptual=st.sampled_from([0.0, 2.0]))
def test_refuses_exactly_the_forbidden_combinations(mode, accept, source, l1, perceptual):
    policy = PrivacyPolicy(mode=mode, allow_off=True, accept_sources=accept)
    dp = mode != "off"
    expected = None
    if dp and l1 > 0:
        expected = "l1_weight"
    elif dp and perceptual > 0:
        expected = "perceptual_weight"
    elif source not in accept:
        expected = "accept_sources"
    elif dp and source == "site":
        expected = "condition source 'site'"
    if expected is None:
        check_policy(policy, condition_source=source, l1_weight=l1, perceptual_weight=perceptual)
    else:
        with pytest.raises(PrivacyError, match=expected):
            check_policy(policy, condition_source=source, l1_weight=l1, perceptual_weight=perceptual)


def test_off_needs_allow_off_even_if_the_dataclass_check_was_bypassed():
    with pytest.raises(ValueError, match="allow_off"):
        PrivacyPolicy(mode="off")
    sneaky = dataclasses.replace(PrivacyPolicy(), mode="dpsgd")
    object.__setattr__(sneaky, "mode", "off")
    with pytest.raises(PrivacyError, match="allow_off"):
        check_policy(sneaky)

"""Known answers for the pure accounting functions (against Opacus's stateful RDP accountant)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from secgan.core.errors import PrivacyError
from secgan.privacy import accounting as acc

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "privacy_rdp.json").read_text())


@pytest.mark.parametrize("case", VECTORS["single"], ids=lambda c: f"s{c['noise_multiplier']}-q{c['sample_rate']}-k{c['steps']}")
def test_epsilon_matches_stored_reference(case):
    eps = acc.epsilon_rdp(
        noise_multiplier=case["noise_multiplier"], sample_rate=case["sample_rate"], steps=case["steps"], delta=case["delta"]
    )
    assert eps == pytest.approx(case["epsilon"], rel=1e-9)


@pytest.mark.parametrize("sigma,q,steps,delta", [(1.0, 0.02, 37, 1e-5), (0.7, 0.1, 12, 1e-4), (3.0, 0.5, 25, 1e-6)])
def test_epsilon_matches_opacus_accountant_stepped(sigma, q, steps, delta):
    a = RDPAccountant()
    for _ in range(steps):
        a.step(noise_multiplier=sigma, sample_rate=q)
    assert acc.epsilon_rdp(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta) == pytest.approx(
        a.get_epsilon(delta=delta), rel=1e-12
    )


def test_history_composition_matches_reference():
    case = VECTORS["composed"][0]
    assert acc.epsilon_from_history(case["history"], delta=case["delta"]) == pytest.approx(case["epsilon"], rel=1e-9)
    # splitting one entry in two changes nothing (RDP adds up)
    s, q, k = case["history"][0]
    split = [(s, q, 20), (s, q, k - 20)] + [tuple(e) for e in case["history"][1:]]
    assert acc.epsilon_from_history(split, delta=case["delta"]) == pytest.approx(case["epsilon"], rel=1e-12)


def test_full_batch_gaussian_closed_form():
    """q = 1: RDP of k Gaussian mechanisms is k*alpha/(2 sigma^2); the conversion is Balle et al. 2020."""
    sigma, k, delta = 4.0, 9, 1e-5
    a = np.array(acc.ORDERS)
    eps = k * a / (2 * sigma**2) - (math.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    assert acc.epsilon_rdp(noise_multiplier=sigma, sample_rate=1.0, steps=k, delta=delta) == pytest.approx(eps.min(), rel=1e-12)


def test_degenerate_cases():
    assert acc.epsilon_rdp(noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=1e-5) == 0.0
    assert acc.epsilon_from_history([], delta=1e-5) == 0.0
    assert acc.epsilon_rdp(noise_multiplier=0.0, sample_rate=0.1, steps=3, delta=1e-5) == math.inf


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(noise_multiplier=-1.0, sample_rate=0.1, steps=1, delta=1e-5), "noise_multiplier"),
        (dict(noise_multiplier=1.0, sample_rate=1.5, steps=1, delta=1e-5), "sample_rate"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=-1, delta=1e-5), "steps"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=0.0), "delta"),
        (dict(noise_multiplier=float("nan"), sample_rate=0.1, steps=1, delta=1e-5), "noise_multiplier"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, needle):
    with pytest.raises(PrivacyError, match=needle):
        acc.epsilon_rdp(**kwargs)


def test_calibration_hits_target_from_below():
    sigma = acc.calibrate_noise(target_epsilon=3.0, delta=1e-5, sample_rate=0.05, steps=200)
    eps = acc.epsilon_rdp(noise_multiplier=sigma, sample_rate=0.05, steps=200, delta=1e-5)
    assert eps <= 3.0
    # and it is not wastefully large: 2% less noise would overshoot
    assert acc.epsilon_rdp(noise_multiplier=sigma * 0.98, sample_rate=0.05, steps=200, delta=1e-5) > 3.0


def test_calibration_unreachable_is_a_clear_error():
    with pytest.raises(PrivacyError, match="no noise multiplier"):
        acc.calibrate_noise(target_epsilon=1e-6, delta=1e-5, sample_rate=1.0, steps=10_000, max_sigma=10.0)


def test_accountant_version_names_opacus_and_scheme():
    import opacus

    assert acc.ACCOUNTANT == "rdp"
    assert opacus.__version__ in acc.ACCOUNTANT_VERSION and f"rdp-{acc.SCHEME_VERSION}" in acc.ACCOUNTANT_VERSION

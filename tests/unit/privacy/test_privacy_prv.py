"""The PRV accountant beside RDP: known answers, Opacus's PRVAccountant, Google's dp-accounting PLD
as an independent reference, calibration, and the ledger's binding to the accountant it was written under."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from contextlib import nullcontext as _nothing
from pathlib import Path

import pytest

from secgan.core.config import load_dataclass
from secgan.core.errors import ConfigError, PrivacyError
from secgan.privacy import accounting as acc
from secgan.privacy.ledger import LEDGER_FILE, LedgerParams, PrivacyLedger
from secgan.privacy.policy import PrivacyPolicy

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "privacy_prv.json").read_text())
DELTA = 1e-5
# our PRV upper bound may exceed dp-accounting's pessimistic PLD by its eps_error plus this relative slack
REL_TOL = 0.02
PARAMS = LedgerParams(mode="dpsgd", delta=DELTA, target_epsilon=10.0, clip_norm=1.0, dataset_fingerprint="ab" * 32,
                      policy_hash="cd" * 32, accountant="prv")


def pld_epsilon(history, delta, *, pessimistic):
    """dp-accounting's PLD of the Poisson-subsampled Gaussian: pessimistic = upper, optimistic = lower estimate."""
    from dp_accounting.pld import privacy_loss_distribution as pld

    logging.getLogger().setLevel(logging.ERROR)
    out = None
    for sigma, q, k in history:
        one = pld.from_gaussian_mechanism(standard_deviation=sigma, sampling_prob=q, pessimistic_estimate=pessimistic,
                                          value_discretization_interval=1e-3, use_connect_dots=pessimistic)
        one = one.self_compose(k)
        out = one if out is None else out.compose(one)
    return out.get_epsilon_for_delta(delta)


def check_against_pld(history, delta=DELTA):
    ours = acc.epsilon_from_history(history, delta=delta, accountant="prv")
    rdp = acc.epsilon_from_history(history, delta=delta)
    lower = pld_epsilon(history, delta, pessimistic=False)
    assert ours >= lower, (history, ours, lower)  # never below what the independent lower estimate proves
    assert ours <= rdp
    if acc.epsilon_prv_upper(history, delta=delta) <= rdp:  # PRV was used (not capped to RDP)
        upper = pld_epsilon(history, delta, pessimistic=True)
        # PRV's upper bound is its estimate + eps_error, and the estimate itself is within eps_error of
        # the truth: up to 2 eps_error above an exact figure (seen at sigma 26, q 1/16, 1 step: 0.0159
        # against PLD's 0.0058, where epsilon is tiny and the absolute error dominates)
        assert ours <= upper * (1 + REL_TOL) + 2 * acc.PRV_EPS_ERROR, (history, ours, upper)
    return ours, rdp


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: "-".join(f"{s}:{q:.3g}:{k}" for s, q, k in c["history"]))
def test_prv_matches_stored_known_answers_and_opacus_prv_accountant(case):
    hist = [tuple(e) for e in case["history"]]
    got = acc.epsilon_from_history(hist, delta=case["delta"], accountant="prv")
    assert got == pytest.approx(case["epsilon_prv"], rel=1e-9)
    assert acc.epsilon_prv_upper(hist, delta=case["delta"]) == pytest.approx(case["prv_upper"], rel=1e-9)
    # Opacus's own PRVAccountant (its grid not rounded to a fast FFT length) agrees to its resolution
    assert got == pytest.approx(case["opacus_prv_accountant"], rel=1e-5)
    assert case["pld_optimistic"] <= got <= case["epsilon_rdp"]


def test_prv_matches_opacus_prv_accountant_live():
    from opacus.accountants import PRVAccountant

    hist = [(1.3, 0.12, 40), (3.0, 16 / 45, 7)]
    a = PRVAccountant()
    for s, q, k in hist:
        for _ in range(k):
            a.step(noise_multiplier=s, sample_rate=q)
    assert acc.epsilon_prv_upper(hist, delta=DELTA) == pytest.approx(a.get_epsilon(DELTA), rel=1e-5)


@pytest.mark.parametrize("sigma", [0.8, 3.0, 30.0])
@pytest.mark.parametrize("q", [0.05, 16 / 45, 1.0])
@pytest.mark.parametrize("steps", [1, 300, 3000])
def test_prv_within_dp_accounting_pld_bounds_on_a_grid(sigma, q, steps):
    check_against_pld([(sigma, q, steps)])


def test_prv_heterogeneous_history_within_pld_bounds():
    # what a ledger holds after a one-shot Gaussian release (q = 1) and DP-SGD at two prices
    check_against_pld([(6.0, 1.0, 1), (2.5, 16 / 45, 120), (3.0, 0.2, 60)])


@pytest.mark.parametrize("sigma,q,steps", [(0.8, 0.05, 1), (1.0, 0.01, 100), (2.0, 16 / 45, 300), (5.0, 1.0, 10),
                                           (10.0, 0.3, 3000), (3.4, 16 / 45, 300), (1.0, 1.0, 1)])
def test_prv_is_strictly_tighter_than_rdp_where_epsilon_is_not_tiny(sigma, q, steps):
    rdp = acc.epsilon_rdp(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA)
    prv = acc.epsilon_prv_upper([(sigma, q, steps)], delta=DELTA)
    assert rdp >= 0.5 and prv < rdp * 0.99


def test_prv_degenerate_and_out_of_range_histories_fall_back_on_bounds():
    assert acc.epsilon_from_history([], delta=DELTA, accountant="prv") == 0.0
    assert acc.epsilon(noise_multiplier=1.0, sample_rate=0.0, steps=5, delta=DELTA, accountant="prv") == 0.0
    assert acc.epsilon(noise_multiplier=0.0, sample_rate=0.1, steps=3, delta=DELTA, accountant="prv") == math.inf
    # far past any budget the PRV grid is not built: the figure is RDP's (a valid bound), at once
    huge = [(0.8, 1.0, 3000)]
    assert acc.epsilon_prv_upper(huge, delta=DELTA) == math.inf
    assert acc.epsilon_from_history(huge, delta=DELTA, accountant="prv") == acc.epsilon_from_history(huge, delta=DELTA)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(noise_multiplier=-1.0, sample_rate=0.1, steps=1, delta=DELTA, accountant="prv"), "noise_multiplier"),
        (dict(noise_multiplier=float("nan"), sample_rate=0.1, steps=1, delta=DELTA, accountant="prv"), "noise_multiplier"),
        (dict(noise_multiplier=1.0, sample_rate=1.5, steps=1, delta=DELTA, accountant="prv"), "sample_rate"),
        (dict(noise_multiplier=1.0, sample_rate=-0.1, steps=1, delta=DELTA, accountant="prv"), "sample_rate"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=-1, delta=DELTA, accountant="prv"), "steps"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=2.5, delta=DELTA, accountant="prv"), "steps"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=0.0, accountant="prv"), "delta"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=1.0, accountant="prv"), "delta"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=DELTA, accountant="moments"), "accountant"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=DELTA, accountant=None), "accountant"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, needle):
    with pytest.raises(PrivacyError, match=needle):
        acc.epsilon(**kwargs)


def test_bad_accountant_is_refused_everywhere_by_name(tmp_path):
    with pytest.raises(PrivacyError, match="accountant"):
        acc.calibrate_noise(target_epsilon=3.0, delta=DELTA, sample_rate=0.1, steps=10, accountant="gdp")
    with pytest.raises(PrivacyError, match="accountant"):
        dataclasses.replace(PARAMS, accountant="gdp")
    with pytest.raises(ValueError, match="accountant"):
        PrivacyPolicy(accountant="gdp")
    with pytest.raises(ConfigError, match="accountant"):
        load_dataclass(PrivacyPolicy, {"accountant": "gdp"})
    # a ledger file naming an unknown accountant is corrupt, not silently read as RDP
    PrivacyLedger.open(tmp_path, params=PARAMS)
    data = json.loads((tmp_path / LEDGER_FILE).read_text())
    (tmp_path / LEDGER_FILE).write_text(json.dumps(dict(data, accountant="gdp")))
    with pytest.raises(PrivacyError, match="accountant"):
        PrivacyLedger.read(tmp_path)


@pytest.mark.parametrize("target", [1.0, 3.0, 10.0])
def test_prv_calibration_lands_at_or_below_target_with_less_noise_than_rdp(target):
    q, steps = 16 / 45, 300
    s_rdp = acc.calibrate_noise(target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps)
    s_prv = acc.calibrate_noise(target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps, accountant="prv")

    def eps(s):
        return acc.epsilon(noise_multiplier=s, sample_rate=q, steps=steps, delta=DELTA, accountant="prv")

    assert eps(s_prv) <= target
    assert eps(s_prv * 0.97) > target  # not wastefully large (tol 1%)
    assert s_prv < s_rdp * 0.97


def test_policy_records_the_accountant_in_its_accounting_hash():
    assert "accountant" in PrivacyPolicy.__dataclass_fields__
    assert PrivacyPolicy().accountant == acc.ACCOUNTANT == "rdp"
    assert PrivacyPolicy(accountant="prv").accounting_hash() != PrivacyPolicy().accounting_hash()


def test_ledger_prices_with_its_recorded_accountant(tmp_path):
    led = PrivacyLedger.open(tmp_path, params=PARAMS)
    for _ in range(4):
        led.reserve_step(noise_multiplier=1.5, sample_rate=0.1)
    led.reserve_step(noise_multiplier=6.0, sample_rate=1.0)
    hist = [(1.5, 0.1, 4), (6.0, 1.0, 1)]
    on_disk = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert on_disk["accountant"] == "prv" and on_disk["accountant_version"] == acc.accountant_version("prv")
    assert "prv" in on_disk["accountant_version"] and on_disk["accountant_version"] != acc.ACCOUNTANT_VERSION
    want = acc.epsilon_from_history(hist, delta=DELTA, accountant="prv")
    assert on_disk["epsilon"] == pytest.approx(want, rel=1e-12)
    assert want < acc.epsilon_from_history(hist, delta=DELTA)
    assert led.epsilon_after(noise_multiplier=1.5, sample_rate=0.1) == pytest.approx(
        acc.epsilon_from_history([*hist, (1.5, 0.1, 1)], delta=DELTA, accountant="prv"), rel=1e-12)
    again = PrivacyLedger.open(tmp_path, params=PARAMS)
    assert again.accountant == "prv" and again.epsilon == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("first,then", [("rdp", "prv"), ("prv", "rdp")])
def test_ledger_refuses_a_switch_of_accountant(tmp_path, first, then):
    led = PrivacyLedger.open(tmp_path, params=dataclasses.replace(PARAMS, accountant=first, accountant_version=None))
    led.reserve_step(noise_multiplier=2.0, sample_rate=0.1)
    with pytest.raises(PrivacyError, match="'accountant'"):
        PrivacyLedger.open(tmp_path, params=dataclasses.replace(PARAMS, accountant=then, accountant_version=None))
    # a version string of the other accountant under the same name is refused too (scheme mismatch)
    other = acc.accountant_version(then)
    with pytest.raises(PrivacyError, match="scheme"):
        PrivacyLedger.open(tmp_path, params=dataclasses.replace(PARAMS, accountant=first, accountant_version=other))


def test_ledger_budget_check_uses_the_recorded_accountant(tmp_path):
    # a target between the PRV and the RDP figure of the same history: PRV allows it, RDP refuses
    hist = [(2.0, 16 / 45, 20)]
    prv = acc.epsilon_from_history(hist, delta=DELTA, accountant="prv")
    rdp = acc.epsilon_from_history(hist, delta=DELTA)
    assert prv < rdp
    target = 0.5 * (prv + rdp)
    from secgan.core.errors import BudgetExhausted

    served = {}
    for name in ("prv", "rdp"):
        led = PrivacyLedger.open(tmp_path / name, params=dataclasses.replace(
            PARAMS, accountant=name, accountant_version=None, target_epsilon=target))
        served[name] = 0
        with pytest.raises(BudgetExhausted) if name == "rdp" else _nothing():
            for _ in range(20):
                led.reserve_step(noise_multiplier=2.0, sample_rate=16 / 45)
                served[name] += 1
        assert led.epsilon <= target
    assert served["prv"] == 20 and led.releases == served["rdp"] < 20

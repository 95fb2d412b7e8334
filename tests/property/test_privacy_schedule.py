"""D/G balance without paying twice: after R rounds the ledger charges exactly the pure
``PrivacyPolicy.charged_steps(R)`` prediction, whatever (gradient_only_rounds, d_steps)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secgan.net.schema import GradientReply
from secgan.privacy import accounting as acc
from sites.learner import SiteLearner
from secgan.privacy.release_log import LOG_FILE, verify_chain, verify_release_log
from tests.unit.privacy.privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy

schedules = dict(g=st.integers(0, 3), d=st.integers(1, 3))


@settings(max_examples=20, deadline=None)
@given(**schedules, rounds=st.integers(0, 200))
def test_charged_steps_is_the_sum_of_the_per_release_charges(g, d, rounds):
    pol = policy("dpsgd", gradient_only_rounds=g, d_steps=d)
    per = [pol.steps_for_release(i) for i in range(rounds)]
    assert pol.charged_steps(rounds) == sum(per)
    assert all(c == (d if i % (g + 1) == 0 else 0) for i, c in enumerate(per))
    assert policy("off", gradient_only_rounds=g, d_steps=d).charged_steps(rounds) == 0


@settings(max_examples=10, deadline=None)
@given(**schedules, rounds=st.integers(1, 7))
def test_the_ledger_after_r_rounds_is_the_pure_prediction(g, d, rounds):
    pol = policy("dpsgd", gradient_only_rounds=g, d_steps=d, noise_multiplier=1.1)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "site"
        site = SiteLearner(dataset=dataset(), policy=pol, model=MODEL, image=IMAGE, train=TRAIN, state_dir=state,
                           generator_seed=1)
        for msg in batches(rounds):
            assert isinstance(site.serve(msg), GradientReply)
        want = pol.charged_steps(rounds)
        q = site.sample_rate
        assert site.ledger.steps == want and site.ledger.releases == rounds
        assert site.ledger.history == [(1.1, q, want)]
        assert site.epsilon() == pytest.approx(acc.epsilon_rdp(noise_multiplier=1.1, sample_rate=q, steps=want, delta=pol.delta),
                                               rel=1e-12)
        # Opacus's own accountant, stepped by every noisy optimiser step, is the witness
        assert sum(k for _, _, k in site._dp.accountant.history) == want
        # every round is in the log, charged or not
        chain = verify_chain(state / LOG_FILE)
        assert chain.entries == rounds and chain.charged == [pol.steps_for_release(i) for i in range(rounds)]
        assert verify_release_log(state).ok


@settings(max_examples=8, deadline=None)
@given(**schedules, planned=st.integers(2, 60))
def test_calibration_lands_a_run_of_planned_rounds_on_the_target(g, d, planned):
    pol = policy("dpsgd", gradient_only_rounds=g, d_steps=d, noise_multiplier=None, target_epsilon=3.0,
                 planned_steps=planned)
    with tempfile.TemporaryDirectory() as tmp:
        site = SiteLearner(dataset=dataset(), policy=pol, model=MODEL, image=IMAGE, train=TRAIN,
                           state_dir=Path(tmp) / "site", generator_seed=1)
        steps = pol.charged_steps(planned)
        eps = acc.epsilon_rdp(noise_multiplier=site.noise_multiplier, sample_rate=site.sample_rate, steps=steps,
                              delta=pol.delta)
        assert 0.9 * 3.0 <= eps <= 3.0  # calibrated for the charged steps, not the rounds
        plan = site.plan(planned)
        assert plan["mismatch"] is False and plan["budget_lasts_steps"] == planned and plan["epsilon_run"] <= 3.0

"""What a site tells the coordinator about its budget: a coarse fraction left, never the exact
epsilon (which, with q = E / n and the calibrated sigma, gives away the cohort size n)."""

from __future__ import annotations

import json
import math
import re

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secgan.net import codec
from secgan.net.schema import GradientReply, Refusal
from secgan.privacy.disclosure import BUDGET_STEP, budget_left
from sites.learner import SiteLearner

from .privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy

GRID = {round(k * BUDGET_STEP, 10) for k in range(round(1 / BUDGET_STEP) + 1)}


@settings(max_examples=300, deadline=None)
@given(eps=st.floats(0, 1e6, allow_nan=False), target=st.floats(1e-6, 1e6))
def test_budget_left_is_coarse_and_never_over_states_what_is_left(eps, target):
    left = budget_left(epsilon=eps, target_epsilon=target)
    assert left in GRID
    true = 1.0 - eps / target
    assert left <= max(true, 0.0) + 1e-12  # rounded down: the coordinator can only under-estimate
    assert left > min(true, 1.0) - BUDGET_STEP - 1e-12 or left == 0.0


def test_budget_left_edges():
    assert budget_left(epsilon=None, target_epsilon=10.0) is None
    assert budget_left(epsilon=0.0, target_epsilon=10.0) == 1.0
    assert budget_left(epsilon=10.0, target_epsilon=10.0) == 0.0
    assert budget_left(epsilon=math.inf, target_epsilon=10.0) == 0.0
    assert budget_left(epsilon=3.5, target_epsilon=10.0) == 0.6


def _run(tmp_path, n, sub):
    site = SiteLearner(dataset=dataset(n), policy=policy("dpsgd", noise_multiplier=None, target_epsilon=2.0,
                                                         planned_steps=6),
                       model=MODEL, image=IMAGE, train=TRAIN, state_dir=tmp_path / sub, generator_seed=1)
    replies = [site.serve(m) for m in batches(10)]
    return site, replies


def _bodies(replies):
    out = []
    for r in replies:
        frames = codec.encode(r, run_id=r.run_id, round=r.round, step=r.step, site="site-1", seq=1)
        out.append(json.loads(bytes(frames[0]))["body"])
    return out


def test_replies_carry_no_exact_epsilon_and_the_refusal_no_figure(tmp_path):
    site, replies = _run(tmp_path, 10, "a")
    served = [r for r in replies if isinstance(r, GradientReply)]
    refusals = [r for r in replies if isinstance(r, Refusal)]
    assert served and refusals and refusals[0].final and refusals[0].code == "budget_exhausted"
    for body in _bodies(served):
        assert set(body) == {"budget_left", "attempt"} and body["budget_left"] in GRID
    # the exact figure stays at the site (ledger) and is in none of the replies' headers
    exact = site.epsilon()
    assert exact is not None and 0 < exact <= 2.0
    assert all(r.budget_left <= 1.0 - e / 2.0 + 1e-12 for r, e in zip(served, _eps_history(tmp_path / "a")))
    for r in refusals:
        assert not re.search(r"\d", r.reason), r.reason  # no epsilon, target or delta in the text
    # a site with another cohort size sends the same refusal text: nothing of n in it
    _, other = _run(tmp_path, 13, "b")
    assert {r.reason for r in other if isinstance(r, Refusal)} == {r.reason for r in refusals}


def _eps_history(state):
    from secgan.privacy.release_log import LOG_FILE

    return [json.loads(line)["epsilon_after"] for line in (state / LOG_FILE).read_text().splitlines()]


def test_hello_policy_summary_holds_nothing_of_the_cohort(tmp_path):
    a = SiteLearner(dataset=dataset(10), policy=policy("dpsgd"), model=MODEL, image=IMAGE, train=TRAIN,
                    state_dir=tmp_path / "a", generator_seed=1)
    b = SiteLearner(dataset=dataset(17), policy=policy("dpsgd"), model=MODEL, image=IMAGE, train=TRAIN,
                    state_dir=tmp_path / "b", generator_seed=1)
    assert a.sample_rate != b.sample_rate
    assert a.policy.summary() == b.policy.summary()
    assert set(a.policy.summary()) == {"mode", "target_epsilon", "delta", "accept_sources"}
    assert a.budget_left() == b.budget_left() == 1.0
    for m in batches(1):
        assert torch.isfinite(a.serve(m).grad).all()

"""SiteLearner: accounting agrees with Opacus, refusals, restarts, RNG hygiene, no real data in replies."""

from __future__ import annotations

import inspect
import json
import math
import random

import numpy as np
import pytest
import torch

from secgan.core.errors import PrivacyError
from secgan.net.schema import GradientReply, Refusal
from secgan.privacy import accounting as acc
from sites.learner import SiteLearner
from secgan.privacy.release_log import verify_release_log
from secgan.privacy.sanitize import effective_noise_multiplier, sanitized_gradient
from secgan.gan.step import generator_gradient

from .privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy, with_patient_changed


def make(tmp_path, pol, ds=None, *, seed=1, sub="site", **kw):
    return SiteLearner(
        dataset=ds if ds is not None else dataset(), policy=pol, model=MODEL, image=IMAGE, train=kw.pop("train", TRAIN),
        state_dir=tmp_path / sub, generator_seed=seed, **kw,
    )


def test_dpsgd_epsilon_equals_opacus_accountant_and_accounting(tmp_path):
    site = make(tmp_path, policy("dpsgd", noise_multiplier=1.3))
    for msg in batches(4):
        reply = site.serve(msg)
        assert isinstance(reply, GradientReply) and reply.grad.shape == msg.fake.shape
    q = 3 / 10
    want = acc.epsilon_rdp(noise_multiplier=1.3, sample_rate=q, steps=4, delta=site.policy.delta)
    assert site.epsilon() == pytest.approx(want, rel=1e-12)
    # the reply carries only the coarse budget left (floor to tenths of the target), never epsilon
    assert reply.budget_left == math.floor(10 * (1 - want / site.policy.target_epsilon)) / 10
    assert site._dp.accountant.history == [(1.3, q, 4)]
    assert site._dp.accountant.get_epsilon(delta=site.policy.delta) == pytest.approx(want, rel=1e-12)
    ledger = json.loads((tmp_path / "site" / "ledger.json").read_text())
    assert ledger["history"] == [[1.3, q, 4]] and ledger["releases"] == 4


def test_calibrated_noise_plans_to_the_target(tmp_path):
    site = make(tmp_path, policy("dpsgd", noise_multiplier=None, target_epsilon=4.0, planned_steps=30))
    q = site.sample_rate
    assert acc.epsilon_rdp(noise_multiplier=site.noise_multiplier, sample_rate=q, steps=30, delta=1e-5) <= 4.0


def test_sanitize_accounts_the_batch_level_sensitivity_without_amplification_by_default(tmp_path):
    site = make(tmp_path, policy("sanitize", noise_multiplier=4.0, shards=2))
    for msg in batches(2, rows=4):
        reply = site.serve(msg)
    sig_eff = effective_noise_multiplier(4.0, rows=4)
    assert sig_eff == pytest.approx(4.0 / (2 * 2))
    # the proven figure: q = 1 per release (no shard amplification), whatever K is
    assert site.sample_rate == 1.0 and site.ledger.history == [(sig_eff, 1.0, 2)]
    assert site.ledger.assumptions == []
    assert site.epsilon() == pytest.approx(acc.epsilon_rdp(noise_multiplier=sig_eff, sample_rate=1.0, steps=2, delta=1e-5))


def test_sanitize_default_known_answer(tmp_path):
    """sigma 4, 4 rows: sigma_eff = 4 / (2 * 2) = 1. Two releases of the Gaussian mechanism at
    sigma_eff = 1 (q = 1) cost epsilon 7.0774 at delta 1e-5 (RDP 2a/2 at order a,
    Balle et al. 2020 conversion), against 5.3770 under the q = 1/2 shard-amplification assumption."""
    import math

    site = make(tmp_path, policy("sanitize", noise_multiplier=4.0, shards=2))
    for msg in batches(2, rows=4):
        reply = site.serve(msg)
    a = np.asarray(acc.ORDERS)
    closed = float(np.min(2 * a / 2 - (math.log(1e-5) + np.log(a)) / (a - 1) + np.log((a - 1) / a)))
    assert site.epsilon() == pytest.approx(closed, rel=1e-9) and site.epsilon() == pytest.approx(7.077391578, rel=1e-8)
    amplified = make(tmp_path, policy("sanitize", noise_multiplier=4.0, shards=2, assume_shard_amplification=True), sub="amp")
    for msg in batches(2, rows=4):
        amp = amplified.serve(msg)
    assert amplified.epsilon() == pytest.approx(5.377021461, rel=1e-8) and amplified.epsilon() < site.epsilon()


def test_shard_amplification_is_an_opt_in_recorded_in_the_ledger_and_bound(tmp_path):
    amp = policy("sanitize", noise_multiplier=4.0, shards=2, assume_shard_amplification=True)
    site = make(tmp_path, amp)
    for msg in batches(2, rows=4):
        site.serve(msg)
    led = json.loads((tmp_path / "site" / "ledger.json").read_text())
    assert led["assumptions"] == ["sanitize_shard_amplification"]
    assert site.ledger.history == [(1.0, 0.5, 2)]
    # flipping the assumption on restart is refused, naming the field, in both directions
    with pytest.raises(PrivacyError, match="'assumptions'"):
        make(tmp_path, policy("sanitize", noise_multiplier=4.0, shards=2))
    make(tmp_path, policy("sanitize", noise_multiplier=4.0, shards=2), sub="proven")
    with pytest.raises(PrivacyError, match="'assumptions'"):
        make(tmp_path, amp, sub="proven")
    with pytest.raises(ValueError, match="sanitize"):
        policy("dpsgd", assume_shard_amplification=True)


def test_sanitize_calibration_plans_to_the_target_at_q_1(tmp_path):
    site = make(tmp_path, policy("sanitize", noise_multiplier=None, target_epsilon=8.0, planned_steps=20, shards=4))
    sig_eff = effective_noise_multiplier(site.noise_multiplier, rows=TRAIN.batch_size)
    assert acc.epsilon_rdp(noise_multiplier=sig_eff, sample_rate=1.0, steps=20, delta=1e-5) <= 8.0
    assert acc.epsilon_rdp(noise_multiplier=sig_eff * 0.97, sample_rate=1.0, steps=20, delta=1e-5) > 8.0 * 0.9


def test_gradient_functions_take_no_real_data():
    for fn in (generator_gradient, sanitized_gradient):
        names = list(inspect.signature(fn).parameters)
        assert names[:3] == ["D", "fake_cond", "fake_img"], fn
        assert not any("real" in n or "dataset" in n or "data" == n for n in names), names


class _Recording:
    """A dataset proxy that records which patients a learner reads."""

    def __init__(self, ds):
        self._ds, self.read = ds, set()

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def sample_slices(self, idx, *, generator):
        self.read.update(int(i) for i in idx)
        return self._ds.sample_slices(idx, generator=generator)


def test_unsampled_patient_changes_nothing_sampled_one_does(tmp_path):
    base = dataset(12, seed=3)
    rec = _Recording(base)
    a = make(tmp_path, policy("dpsgd", expected_batch_size=2), rec, sub="a")
    replies_a = [a.serve(m).grad for m in batches(3)]
    unsampled = sorted(set(range(12)) - rec.read)
    sampled = sorted(rec.read)
    assert unsampled and sampled
    b = make(tmp_path, policy("dpsgd", expected_batch_size=2), with_patient_changed(base, unsampled[0]), sub="b")
    replies_b = [b.serve(m).grad for m in batches(3)]
    assert all(torch.equal(x, y) for x, y in zip(replies_a, replies_b))
    c = make(tmp_path, policy("dpsgd", expected_batch_size=2), with_patient_changed(base, sampled[0]), sub="c")
    replies_c = [c.serve(m).grad for m in batches(3)]
    assert not all(torch.equal(x, y) for x, y in zip(replies_a, replies_c))


@pytest.mark.parametrize("mode", ["off", "dpsgd", "sanitize"])
def test_global_rng_untouched(tmp_path, mode):
    site = make(tmp_path, policy(mode))
    msgs = list(batches(2))
    t, n, r = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    for m in msgs:
        assert isinstance(site.serve(m), GradientReply)
    assert torch.equal(t, torch.random.get_rng_state())
    n2 = np.random.get_state()
    assert n[0] == n2[0] and np.array_equal(n[1], n2[1]) and n[2:] == n2[2:]
    assert r == random.getstate()


def test_budget_exhausted_is_a_final_refusal(tmp_path):
    site = make(tmp_path, policy("dpsgd", target_epsilon=2.0, noise_multiplier=2.0, expected_batch_size=3))
    replies = [site.serve(m) for m in batches(12)]
    refusals = [r for r in replies if isinstance(r, Refusal)]
    served = [r for r in replies if isinstance(r, GradientReply)]
    assert served and refusals
    assert all(r.code == "budget_exhausted" and r.final and "budget exhausted" in r.reason for r in refusals)
    # once refused, always refused; the epsilon never passed the target
    first = replies.index(refusals[0])
    assert all(isinstance(r, Refusal) for r in replies[first:])
    assert len(served) == 4 and site.epsilon() <= 2.0 and min(r.budget_left for r in served) >= 0.0
    assert site.ledger.releases == len(served) and verify_release_log(tmp_path / "site").ok


def test_restart_resumes_and_refuses_other_data_or_parameters(tmp_path):
    ds = dataset()
    site = make(tmp_path, policy("dpsgd"), ds)
    for m in batches(3):
        site.serve(m)
    site.save()
    w = {k: v.clone() for k, v in site.discriminator.state_dict().items()}
    again = make(tmp_path, policy("dpsgd"), ds)
    assert again.epsilon() == site.epsilon() and again.ledger.releases == 3
    assert all(torch.equal(w[k], v) for k, v in again.discriminator.state_dict().items())
    with pytest.raises(PrivacyError, match="dataset_fingerprint"):
        make(tmp_path, policy("dpsgd"), with_patient_changed(ds, 0))
    with pytest.raises(PrivacyError, match="clip_norm"):
        make(tmp_path, policy("dpsgd", clip_norm=0.5), ds)
    with pytest.raises(PrivacyError, match="policy_hash"):
        make(tmp_path, policy("dpsgd", noise_multiplier=2.0), ds)


def test_forbidden_combinations_are_refused(tmp_path):
    import dataclasses

    with pytest.raises(PrivacyError, match="l1_weight"):
        make(tmp_path, policy("dpsgd"), train=dataclasses.replace(TRAIN, l1_weight=1.0))
    site = make(tmp_path, policy("sanitize", accept_sources=("procedural", "site")))
    assert "site" in site.refuses_source("site") and "sanitize" in site.refuses_source("site")
    assert site.refuses_source("procedural") is None
    assert "accept_sources" in site.refuses_source("bank")


def test_wrong_shape_is_a_protocol_error_and_nothing_is_spent(tmp_path):
    from secgan.core.errors import ProtocolError
    from secgan.net.schema import FakeBatch

    site = make(tmp_path, policy("dpsgd"))
    bad = FakeBatch(run_id="run", round=0, step=0, cond=torch.zeros(2, 4, 32, 32), fake=torch.zeros(2, 4, 32, 32))
    with pytest.raises(ProtocolError):
        site.serve(bad)
    assert site.ledger.releases == 0 and site.epsilon() == 0.0

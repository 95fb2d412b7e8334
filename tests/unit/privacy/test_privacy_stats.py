"""The one-shot DP summary statistics: bounded per-patient contribution, composition with DP-SGD in
the ledger, the budget split landing on the target, released once, recovery, and G's moment term."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from secgan.core.errors import PrivacyError
from secgan.gan.models import SEMANTIC_CLASSES
from secgan.privacy import accounting as acc
from secgan.privacy import stats as S
from sites.learner import SiteLearner
from sites.stats_release import STATS_FILE
from secgan.privacy.ledger import LEDGER_FILE
from secgan.privacy.policy import PrivacyPolicy

from .privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(vectors=arrays(np.float64, st.tuples(st.integers(1, 12), st.just(S.DIM)), elements=finite),
       clip=st.floats(min_value=1e-3, max_value=50.0), drop=st.integers(0, 11))
def test_removing_one_patient_moves_the_pre_noise_sum_by_at_most_c(vectors, clip, drop):
    drop %= vectors.shape[0]
    full = S.clipped_sum(vectors, clip)
    without = S.clipped_sum(np.delete(vectors, drop, axis=0), clip)
    assert np.linalg.norm(full - without) <= clip * (1 + 1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), slices=st.integers(1, 4))
def test_a_patients_vector_from_its_images_is_bounded_and_one_row(seed, slices):
    rng = np.random.default_rng(seed)
    img = rng.uniform(-1, 1, (slices, 4, 8, 8))
    cond = (rng.random((slices, 4, 8, 8)) > 0.5).astype(np.float32)
    v = S.patient_vector(img, cond)
    assert v.shape == (S.DIM,) and np.linalg.norm(v) <= 6.0 + 1e-9
    # the vector of k slices is one row: the sum over patients grows by one clipped row per patient
    assert np.linalg.norm(S.clipped_sum(v[None], 3.0)) <= 3.0 + 1e-9


def test_classes_are_the_semantic_ds_without_background():
    assert S.STATS_CLASSES == tuple(c for c in SEMANTIC_CLASSES if c != "background")


def test_patient_vector_and_debias_known_answer():
    # patient A: all brain, modality m has value 0.1 * (m + 1); patient B: all brain, value -0.1 * (m + 1)
    cond = np.zeros((2, 4, 4, 4), np.float32)
    cond[:, 0] = 1
    a = np.broadcast_to(np.array([0.1, 0.2, 0.3, 0.4])[None, :, None, None], (2, 4, 4, 4))
    va, vb = S.patient_vector(a, cond), S.patient_vector(-a, cond)
    assert va[0] == 1 and np.allclose(va[1:5], [0.1, 0.2, 0.3, 0.4]) and np.allclose(va[5:9], [0.01, 0.04, 0.09, 0.16])
    assert not va[S.PER_CLASS:].any()  # no tumour classes: zeros, indicator 0
    out = S.debias(S.clipped_sum(np.stack([va, vb]), 10.0))
    assert np.allclose(out["mean"][0], 0.0) and np.allclose(out["std"][0], [0.1, 0.2, 0.3, 0.4])
    assert out["count"][0] == 2 and out["count"][1] == 0


def test_noise_needs_an_explicit_generator_and_has_the_calibrated_scale():
    v = np.zeros((3, S.DIM))
    with pytest.raises(PrivacyError, match="Generator"):
        S.noised_sum(v, clip_norm=2.0, noise_multiplier=1.5, generator=None)
    draws = np.stack([S.noised_sum(v, clip_norm=2.0, noise_multiplier=1.5, generator=np.random.default_rng(i))
                      for i in range(400)])
    assert draws.std() == pytest.approx(3.0, rel=0.05)
    with pytest.raises(PrivacyError, match="stats_clip_norm"):
        S.clip_rows(v, 0.0)


def test_policy_validates_the_statistics_fields():
    with pytest.raises(ValueError, match="dpsgd"):
        PrivacyPolicy(mode="sanitize", release_stats=True)
    with pytest.raises(ValueError, match="stats_epsilon"):
        PrivacyPolicy(release_stats=True, stats_epsilon=10.0, target_epsilon=10.0)
    assert PrivacyPolicy(release_stats=True).accounting_hash() != PrivacyPolicy().accounting_hash()


def _site(tmp_path, accountant="rdp", **kw):
    pol = policy("dpsgd", noise_multiplier=None, target_epsilon=6.0, planned_steps=20, release_stats=True,
                 stats_epsilon=1.0, accountant=accountant, **kw)
    return SiteLearner(dataset=dataset(), policy=pol, model=MODEL, image=IMAGE, train=TRAIN, state_dir=tmp_path / "site",
                       generator_seed=1)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_budget_split_lands_on_target_and_the_ledger_is_the_pure_composition(tmp_path, accountant):
    site = _site(tmp_path, accountant)
    q, delta, R = 3 / 10, site.policy.delta, 5
    sigma_s = S.stats_noise_multiplier(stats_epsilon=1.0, delta=delta, accountant=accountant)
    assert acc.epsilon(noise_multiplier=sigma_s, sample_rate=1.0, steps=1, delta=delta, accountant=accountant) <= 1.0
    plan = [(sigma_s, 1.0, 1), (site.noise_multiplier, q, 20)]
    total = acc.epsilon_from_history(plan, delta=delta, accountant=accountant)
    assert total <= 6.0 and total > 6.0 * 0.97  # the whole plan lands on the target, from below
    # without the statistics share DP-SGD would have been calibrated with less noise
    assert site.noise_multiplier > acc.calibrate_noise(target_epsilon=6.0, delta=delta, sample_rate=q, steps=20,
                                                        accountant=accountant)
    stats = site.release_stats()
    assert stats["mean"].shape == (4, 4) and stats["std"].shape == (4, 4)
    for msg in batches(R):
        site.serve(msg)
    hist = [(sigma_s, 1.0, 1), (site.noise_multiplier, q, R)]
    assert site.ledger.history == hist
    assert site.epsilon() == pytest.approx(acc.epsilon_from_history(hist, delta=delta, accountant=accountant), rel=1e-12)
    kinds = [json.loads(line)["kinds"] for line in (tmp_path / "site" / "releases.jsonl").read_text().splitlines()]
    assert kinds[0] == ["stats"] and len(kinds) == R + 1


def test_statistics_are_released_once_across_calls_and_restarts(tmp_path):
    site = _site(tmp_path)
    first = site.release_stats()
    releases = site.ledger.releases
    again = site.release_stats()
    assert site.ledger.releases == releases == 1 and np.array_equal(first["mean"], again["mean"])
    site.save()
    restarted = _site(tmp_path)
    kept = restarted.release_stats()
    assert restarted.ledger.releases == 1 and np.array_equal(first["std"], kept["std"])
    # nothing about single patients is kept: only the debiased aggregates
    assert set(json.loads((tmp_path / "site" / STATS_FILE).read_text())) == {"mean", "std", "count", "classes"}


def test_a_lost_ledger_is_rebuilt_with_the_statistics_release_priced_as_one(tmp_path):
    site = _site(tmp_path)
    site.release_stats()
    for msg in batches(2):
        site.serve(msg)
    eps = site.epsilon()
    site.save()
    (tmp_path / "site" / LEDGER_FILE).unlink()
    rebuilt = _site(tmp_path)
    assert rebuilt.ledger.releases == 3 and rebuilt.epsilon() >= eps - 1e-12
    assert rebuilt.ledger.history[0][1] == 1.0


def test_moment_loss_is_zero_at_the_target_and_pulls_g_towards_it():
    from coordinator.core import moment_loss

    cond = torch.zeros(2, 4, 8, 8)
    cond[:, 0] = 1
    fake = torch.full((2, 4, 8, 8), 0.3)
    fake[:, :, ::2] = -0.3
    target = {"mean": torch.zeros(4, 4), "std": torch.full((4, 4), 0.3 * (128 / 127) ** 0.5)}
    assert float(moment_loss(fake, cond, target)) == pytest.approx(0.0, abs=1e-10)
    x = torch.zeros(2, 4, 8, 8, requires_grad=True)
    loss = moment_loss(x + 0.5 + 0.01 * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), cond, target)
    loss.backward()
    assert float(loss.detach()) > 0 and float(x.grad.sum()) > 0  # gradient pushes the mean down towards 0


def test_runner_averages_the_sites_releases_and_refuses_a_weight_without_them(tmp_path):
    import dataclasses

    from secgan.core.errors import ConfigError
    from secgan.gan.config import TrainConfig
    from secgan.run.config import RunConfig
    from secgan.simulation.runner import _site_moments

    a, b = _site(tmp_path / "a"), _site(tmp_path / "b")
    cfg = RunConfig(train=dataclasses.replace(TrainConfig(), stats_weight=1.0))
    got = _site_moments(cfg, {"site-1": a, "site-2": b})
    want = (a.release_stats()["mean"] + b.release_stats()["mean"]) / 2
    assert np.allclose(got["mean"], want) and a.ledger.releases == b.ledger.releases == 1
    class NoStats:  # a site whose policy releases no statistics
        def release_stats(self):
            return None

    with pytest.raises(ConfigError, match="release_stats"):
        _site_moments(cfg, {"site-1": NoStats()})

"""The mechanisms themselves: noise scale, clipping, empty Poisson batches, sampling, shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from secgan.gan.models import build_discriminator
from secgan.privacy.dpsgd import DPSGDDiscriminator
from secgan.privacy.sampling import patient_shards, poisson_patients, sample_rate
from secgan.privacy.sanitize import clip_rows, gaussian_noise, sanitized_gradient
from secgan.gan.step import generator_gradient

from .privacy_helpers import IMAGE, MODEL, SIZE, dataset, with_patient_changed


def _std_within_chi2(x: torch.Tensor, sigma: float, alpha: float = 1e-4) -> None:
    """(n-1) s^2 / sigma^2 ~ chi2(n-1) for Gaussian samples: the two-sided (1 - alpha) interval."""
    x = x.double().flatten()
    n = x.numel()
    stat = (n - 1) * x.var(unbiased=True).item() / sigma**2
    lo, hi = stats.chi2.ppf(alpha / 2, n - 1), stats.chi2.ppf(1 - alpha / 2, n - 1)
    assert lo <= stat <= hi, (stat, lo, hi, n)
    assert abs(x.mean().item()) < 5 * sigma / n**0.5


def _dp(noise_multiplier, clip, seed=0, secure=True):
    D = build_discriminator(MODEL, IMAGE, seed=3)
    return DPSGDDiscriminator(
        D, lr=1e-3, betas=(0.5, 0.999), noise_multiplier=noise_multiplier, clip_norm=clip,
        expected_batch_size=4, sample_rate=0.4, noise_generator=torch.Generator().manual_seed(seed), secure_noise=secure,
    )


def _rows(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 4, SIZE, SIZE, generator=g) > 0.5).float(), torch.rand(n, 4, SIZE, SIZE, generator=g) * 2 - 1


@pytest.mark.parametrize("secure", [True, False])
def test_dpsgd_noise_std_is_sigma_times_c(secure):
    sigma, clip = 1.7, 0.8
    dp = _dp(sigma, clip, secure=secure)
    noise = []

    def grab(opt):  # runs after add_noise and scale_grad: p.grad = (summed + noise) / E
        for p in opt.params:
            noise.append((p.grad * opt.expected_batch_size - p.summed_grad).detach().flatten())

    dp.optimizer.attach_step_hook(grab)
    rc, ri = _rows(3, 1)
    fc, fi = _rows(2, 2)
    for _ in range(3):
        dp.step(rc, ri, fc, fi, loss="bce")
    _std_within_chi2(torch.cat(noise), sigma * clip)


def test_empty_poisson_batch_still_adds_noise_and_is_accounted():
    dp = _dp(1.0, 1.0)
    before = [p.detach().clone() for p in dp.plain.parameters()]
    empty_c = torch.zeros(0, 4, SIZE, SIZE)
    fc, fi = _rows(2, 5)
    dp.step(empty_c, empty_c.clone(), fc, fi, loss="hinge")
    assert dp.accountant.history == [(1.0, 0.4, 1)]
    assert any(not torch.equal(a, p) for a, p in zip(before, dp.plain.parameters()))
    assert all(p.grad is None and getattr(p, "grad_sample", None) is None for p in dp.module.parameters())


def test_generator_gradient_leaves_no_per_sample_state():
    dp = _dp(1.0, 1.0)
    fc, fi = _rows(3, 7)
    g = generator_gradient(dp.for_gradient, fc, fi, loss="bce")
    assert g.shape == fi.shape and torch.isfinite(g).all()
    assert all(p.grad is None and getattr(p, "grad_sample", None) is None for p in dp.module.parameters())


def test_sanitized_gradient_clips_rows_and_adds_sigma_c_noise():
    D = build_discriminator(MODEL, IMAGE, seed=4)
    fc, fi = _rows(64, 9)
    clip, sigma = 1e-3, 2.0
    raw = generator_gradient(D, fc, fi, loss="bce")
    assert (raw.flatten(1).norm(dim=1) > clip).all()  # so clipping is exercised
    clipped = clip_rows(raw, clip)
    assert torch.allclose(clipped.flatten(1).norm(dim=1), torch.full((64,), clip), rtol=1e-4)
    out = sanitized_gradient(D, fc, fi, loss="bce", clip_norm=clip, noise_multiplier=sigma, generator=torch.Generator().manual_seed(0))
    _std_within_chi2(out - clipped, sigma * clip)
    # the same generator seed gives the same release; another gives another
    again = sanitized_gradient(D, fc, fi, loss="bce", clip_norm=clip, noise_multiplier=sigma, generator=torch.Generator().manual_seed(0))
    other = sanitized_gradient(D, fc, fi, loss="bce", clip_norm=clip, noise_multiplier=sigma, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_secure_noise_has_the_same_scale():
    _std_within_chi2(gaussian_noise(torch.Size([20000]), std=0.3, generator=torch.Generator().manual_seed(2), secure=True), 0.3)


def test_poisson_sampling_rate_and_independence():
    rng = np.random.default_rng(0)
    n, q, trials = 50, 0.1, 2000
    counts = np.zeros(n)
    sizes = []
    for _ in range(trials):
        idx = poisson_patients(n, rate=q, generator=rng)
        assert np.all(np.diff(idx) > 0)
        counts[idx] += 1
        sizes.append(len(idx))
    # every patient is included with probability q (binomial, 5 sigma), sizes vary (not fixed-size)
    assert np.all(np.abs(counts - trials * q) < 5 * np.sqrt(trials * q * (1 - q)))
    assert 0 in sizes or min(sizes) < n * q - 2
    assert len(poisson_patients(0, rate=q, generator=rng)) == 0
    assert sample_rate(expected_batch_size=8, n_patients=4) == 1.0


def test_shard_of_a_patient_does_not_depend_on_the_others():
    ds = dataset(12, seed=5)
    full = patient_shards(ds, shards=3, seed=11)
    sub = patient_shards(ds.subset([i for i in range(12) if i != 4]), shards=3, seed=11)
    assert np.array_equal(np.delete(full, 4), sub)
    assert set(full) <= {0, 1, 2}
    assert not np.array_equal(full, patient_shards(ds, shards=3, seed=12))
    changed = patient_shards(with_patient_changed(ds, 4), shards=3, seed=11)
    assert np.array_equal(np.delete(changed, 4), np.delete(full, 4))

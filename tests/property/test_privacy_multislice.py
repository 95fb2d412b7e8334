"""Several slices per patient in ONE clipped row: removing a patient moves the pre-noise clipped sum
by at most C, whatever k, the cohort and C (real Opacus, per-sample gradients, noise 0)."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from secgan.gan.models import build_discriminator
from secgan.privacy.dpsgd import DPSGDDiscriminator
from tests.unit.privacy.privacy_helpers import IMAGE, MODEL, SIZE


LOSS = {"patch": "bce", "semantic": "semantic"}


def _clipped_sum(real_cond, real_img, fake_cond, fake_img, *, clip, mode="hooks", arch="patch"):
    """The pre-noise clipped sum of one D step (Opacus's p.summed_grad), flattened over all parameters."""
    D = build_discriminator(dataclasses.replace(MODEL, d_arch=arch), IMAGE, seed=3)
    dp = DPSGDDiscriminator(D, lr=1e-3, betas=(0.5, 0.999), noise_multiplier=0.0, clip_norm=clip, expected_batch_size=4,
                            sample_rate=0.4, noise_generator=torch.Generator().manual_seed(0), secure_noise=False,
                            grad_sample_mode=mode)
    seen = []
    add_noise = dp.optimizer.add_noise

    def spy():
        seen.append(torch.cat([p.summed_grad.detach().flatten().clone() for p in dp.optimizer.params]))
        add_noise()

    dp.optimizer.add_noise = spy
    dp.step(real_cond, real_img, fake_cond, fake_img, loss=LOSS[arch])
    assert len(seen) == 1
    return seen[0].double(), dp.last_rows


def _data(patients, k, seed):
    g = torch.Generator().manual_seed(seed)

    def onehot(*lead):
        lab = torch.randint(0, 4, (*lead, SIZE, SIZE), generator=g)
        return F.one_hot(lab, 4).movedim(-1, -3).float()

    cond = onehot(patients, k)
    img = torch.rand(patients, k, 4, SIZE, SIZE, generator=g) * 2 - 1
    fc = onehot(2)
    fi = torch.rand(2, 4, SIZE, SIZE, generator=g) * 2 - 1
    return cond, img, fc, fi


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 4), patients=st.integers(1, 4), clip=st.sampled_from([1e-3, 0.05, 1.0, 20.0]),
       drop=st.integers(0, 3), seed=st.integers(0, 2**16), arch=st.sampled_from(["patch", "semantic"]))
def test_removing_one_patient_moves_the_clipped_sum_by_at_most_c(k, patients, clip, drop, seed, arch):
    drop = drop % patients
    cond, img, fc, fi = _data(patients, k, seed)
    keep = [i for i in range(patients) if i != drop]
    full, rows_full = _clipped_sum(cond, img, fc, fi, clip=clip, arch=arch)
    less, rows_less = _clipped_sum(cond[keep], img[keep], fc, fi, clip=clip, arch=arch)
    assert float((full - less).norm()) <= clip * (1 + 1e-4) + 1e-7
    # k rows of one patient are one clipped row: patients + fakes rows, never patients * k
    assert rows_full == patients + 2 and rows_less == patients - 1 + 2


@settings(max_examples=4, deadline=None)
@given(k=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_the_functorch_mode_groups_the_same_way(k, seed):
    cond, img, fc, fi = _data(3, k, seed)
    hooks, rows_h = _clipped_sum(cond, img, fc, fi, clip=0.05, mode="hooks", arch="semantic")
    func, rows_f = _clipped_sum(cond, img, fc, fi, clip=0.05, mode="functorch", arch="semantic")
    assert rows_h == rows_f == 3 + 2
    assert torch.allclose(hooks, func, rtol=1e-4, atol=1e-7)

"""slices_per_patient / slice_augment at the site learner: one patient is one clipped row, the ledger
charges what k = 1 charges, "ew" is refused at config time, augmentation keeps label and image aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from secgan.core.config import load_dataclass
from secgan.core.errors import ConfigError, PrivacyError
from secgan.net.schema import GradientReply
from sites.learner import SiteLearner
from secgan.privacy.multislice import augment, patient_rows
from secgan.privacy.policy import PrivacyPolicy

from .privacy_helpers import IMAGE, MODEL, SIZE, TRAIN, batches, dataset, policy


def make(tmp_path, pol, *, sub="site", ds=None):
    return SiteLearner(dataset=ds if ds is not None else dataset(), policy=pol, model=MODEL, image=IMAGE, train=TRAIN,
                       state_dir=tmp_path / sub, generator_seed=1)


def _spy_rows(site):
    """Records, for every D step, (patients sampled, rows Opacus clipped)."""
    seen = []
    real_rows, clip = site._real_rows, site._dp.optimizer.clip_and_accumulate

    def rows(idx, **kw):
        out = real_rows(idx, **kw)
        seen.append([len(idx), None, tuple(out[1].shape)])
        return out

    def clipped():
        seen[-1][1] = len(site._dp.optimizer.grad_samples[0])
        clip()

    site._real_rows = rows
    site._dp.optimizer.clip_and_accumulate = clipped
    return seen


@pytest.mark.parametrize("mode", ["hooks", "functorch"])
def test_k_slices_of_a_patient_are_one_clipped_row(tmp_path, mode):
    site = make(tmp_path, policy("dpsgd", slices_per_patient=4, grad_sample_mode=mode, expected_batch_size=6))
    seen = _spy_rows(site)
    for msg in batches(4, rows=3):
        assert isinstance(site.serve(msg), GradientReply)
    assert len(seen) == 4 and sum(p for p, _, _ in seen) > 0
    for patients, rows, shape in seen:
        assert shape == (patients, 4, 4, SIZE, SIZE)  # patient-major, k = 4 slices each
        assert rows == patients + 3  # never patients * 4 + 3


def test_the_ledger_charges_k_slices_exactly_as_one(tmp_path):
    one = make(tmp_path, policy("dpsgd", noise_multiplier=None, target_epsilon=5.0, planned_steps=20), sub="k1")
    four = make(tmp_path, policy("dpsgd", noise_multiplier=None, target_epsilon=5.0, planned_steps=20,
                                 slices_per_patient=4, slice_augment=True), sub="k4")
    assert one.noise_multiplier == four.noise_multiplier and one.sample_rate == four.sample_rate
    for msg in batches(3):
        one.serve(msg)
    for msg in batches(3):
        four.serve(msg)
    a, b = one.ledger.to_dict(), four.ledger.to_dict()
    assert a["history"] == b["history"] and a["steps"] == b["steps"] == 3 and a["epsilon"] == b["epsilon"]
    assert four._dp.accountant.history == one._dp.accountant.history


def test_k_above_one_with_expanded_weights_is_refused_at_config_time():
    with pytest.raises(ValueError, match="ew"):
        PrivacyPolicy(slices_per_patient=2, grad_sample_mode="ew")
    with pytest.raises(ConfigError, match="ew"):
        load_dataclass(PrivacyPolicy, {"slices_per_patient": 3, "grad_sample_mode": "ew"})
    with pytest.raises(ConfigError, match="slices_per_patient"):
        load_dataclass(PrivacyPolicy, {"slices_per_patient": 0})
    assert PrivacyPolicy(slices_per_patient=1, grad_sample_mode="ew").slices_per_patient == 1


def test_the_dp_step_itself_refuses_grouping_without_per_sample_gradients():
    from secgan.gan.models import build_discriminator
    from secgan.privacy.dpsgd import DPSGDDiscriminator

    dp = DPSGDDiscriminator(build_discriminator(MODEL, IMAGE, seed=0), lr=1e-3, betas=(0.5, 0.999), noise_multiplier=1.0,
                            clip_norm=1.0, expected_batch_size=2, sample_rate=0.5,
                            noise_generator=torch.Generator().manual_seed(0), grad_sample_mode="ew")
    x = torch.zeros(2, 3, 4, SIZE, SIZE)
    with pytest.raises(PrivacyError, match="ew"):
        dp.step(x, x, x[0], x[0], loss="bce")


@pytest.mark.parametrize("mode", ["off", "sanitize"])
def test_off_and_sanitize_use_k_slices_as_plain_rows(tmp_path, mode, monkeypatch):
    import secgan.gan.step as step

    site = make(tmp_path, policy(mode, slices_per_patient=2))
    seen = []
    if mode == "off":
        real = step.discriminator_step
        monkeypatch.setattr(step, "discriminator_step", lambda D, o, rc, ri, *a, **k: (seen.append(ri.shape[0]), real(D, o, rc, ri, *a, **k)))
    else:
        real = site._shards.train_step
        monkeypatch.setattr(site._shards, "train_step", lambda i, rc, ri, *a, **k: (seen.append(ri.shape[0]), real(i, rc, ri, *a, **k)))
    for msg in batches(2):
        assert isinstance(site.serve(msg), GradientReply)
    assert seen and all(n % 2 == 0 and n > 0 for n in seen)


def test_k_slices_are_the_patients_own_distinct_slices():
    ds = dataset(4, slices=3)
    img, cond = patient_rows(ds, [2, 0], k=3, size=SIZE, augmented=False, generator=np.random.default_rng(0))
    assert img.shape == (2, 3, 4, SIZE, SIZE) and cond.shape == img.shape
    for row, p in enumerate([2, 0]):
        own = [ds.images(p)[j] for j in range(3)]
        picks = [next(j for j, s in enumerate(own) if np.array_equal(s, img[row, i])) for i in range(3)]
        assert sorted(picks) == [0, 1, 2]  # distinct while the patient has enough slices
    more, _ = patient_rows(ds, [1], k=5, size=SIZE, augmented=False, generator=np.random.default_rng(0))
    assert all(any(np.array_equal(more[0, i], ds.images(1)[j]) for j in range(3)) for i in range(5))
    # k = 1 without augmentation is the dataset's own draw, same stream
    a, _ = patient_rows(ds, [3, 1], k=1, size=SIZE, augmented=False, generator=np.random.default_rng(7))
    b, _ = ds.sample_slices([3, 1], generator=np.random.default_rng(7))
    assert np.array_equal(a[:, 0], b)


def test_augmentation_moves_label_map_and_image_together_and_keeps_one_hot():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, (SIZE, SIZE))
    cond = np.eye(4, dtype=np.float32)[lab].transpose(2, 0, 1)
    img = cond * np.arange(1, 5, dtype=np.float32)[:, None, None]  # a function of the label map, pixelwise
    changed = 0
    for _ in range(30):
        ai, ac = augment(img, cond, rng)
        assert ai.shape == img.shape and ac.shape == cond.shape
        assert np.array_equal(ai, ac * np.arange(1, 5, dtype=np.float32)[:, None, None])
        assert np.array_equal(ac.sum(axis=0), np.ones((SIZE, SIZE), np.float32))
        changed += not np.array_equal(ac, cond)
    assert changed > 20

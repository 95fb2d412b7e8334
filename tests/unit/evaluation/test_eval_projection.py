"""Latent projection distances (training against held-out) as an authenticity check: known answers
with a generator that memorised its training images, one unrelated to both sets, determinism, every
validation check, and properties of the AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from secgan.core.errors import DataError
from secgan.core.spec import ImageSpec, one_hot_classes, rgb_spec
from secgan.evaluation.projection import check_distances, membership_auc, project, projection_check
from secgan.gan.config import ModelConfig
from secgan.gan.models import build_generator

SPEC = rgb_spec(16, condition="class", cond_names=("nevus", "melanoma", "other"))
FAST = {"steps": 30, "restarts": 2, "lr": 0.1}


class BankG(nn.Module):
    """A generator that memorised ``bank``: G(c, z) = softmax(W z) mixture of the stored images, so
    some z reproduces each stored image (nearly) exactly and nothing else."""

    def __init__(self, bank: np.ndarray, noise_dim: int = 8) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.bank = nn.Parameter(torch.as_tensor(bank, dtype=torch.float32))
        self.mix = nn.Linear(noise_dim, len(bank), bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.randn(len(bank), noise_dim, generator=torch.Generator().manual_seed(5)))

    def forward(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bk,kchw->bchw", torch.softmax(self.mix(z), dim=1), self.bank)


def _images(n: int, seed: int, spec: ImageSpec = SPEC) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lo, hi = spec.value_range
    x = (lo + (hi - lo) * rng.random((n,) + spec.image_shape)).astype(np.float32)
    return x, one_hot_classes(rng.integers(0, spec.cond_channels, n), spec.cond_channels)


def _real_g(seed: int = 1) -> nn.Module:
    return build_generator(ModelConfig(g_width=8, g_depth=2, d_layers=2, noise_dim=8), SPEC, seed=seed)


# ---------------------------------------------------------------------------------------------
# known answers


def test_a_memorising_generator_puts_its_training_images_at_distance_zero() -> None:
    train, tc = _images(8, 0)
    held, hc = _images(8, 1)
    G = BankG(train)
    long = {"steps": 100, "restarts": 2, "lr": 0.3}
    p = project(G, np.concatenate([train, held]), np.concatenate([tc, hc]), image=SPEC, seed=0, **long)
    assert p.distances[:8].max() < 1e-5  # each training image reconstructed (nearly) exactly
    assert p.distances[8:].min() > 0.02  # held-out images are not in G
    r = projection_check(G, train, tc, held, hc, image=SPEC, seed=0, **long)
    assert r.auc == 1.0 and r.auc_ci[0] > 0.5 and r.p_value < 0.001
    assert r.verdict == "memorisation" and r.gap > 0.02 and r.train_median < 1e-5 < r.heldout_median
    assert (r.n_train, r.n_heldout, r.unit, r.space) == (8, 8, "image", "pixels")
    assert "memorisation" in r.summary() and "AUC 1.000" in r.summary()


def test_an_unrelated_generator_gives_no_evidence() -> None:
    train, tc = _images(12, 2)
    held, hc = _images(12, 3)
    r = projection_check(_real_g(), train, tc, held, hc, image=SPEC, seed=0, **FAST)
    lo, hi = r.auc_ci
    assert lo <= 0.5 <= hi and r.verdict == "no evidence"
    assert "no evidence" in r.summary()


def test_pixel_distance_is_mse_over_the_value_range() -> None:
    spec = ImageSpec(size=16)  # brain: 4 channels in [-1, 1], range width 2
    x, _ = _images(3, 4, spec)
    c = np.zeros((3,) + spec.cond_shape, np.float32)
    constant = np.zeros((1,) + spec.image_shape, np.float32)
    G = BankG(constant)  # one stored image: every z gives it
    p = project(G, x, c, image=spec, seed=0, steps=1, restarts=1)
    np.testing.assert_allclose(p.distances, (x**2).reshape(3, -1).mean(1) / 4.0, rtol=1e-6)


def test_feature_distance_is_measured_between_image_and_reconstruction() -> None:
    x, c = _images(4, 5)
    G = BankG(_images(3, 6)[0])
    flat = lambda a: np.asarray(a).reshape(len(a), -1)  # noqa: E731
    pix = project(G, x, c, image=SPEC, seed=7, **FAST)
    feat = project(G, x, c, image=SPEC, seed=7, distance="features", features=flat, **FAST)
    assert feat.space == "features"
    np.testing.assert_array_equal(pix.z, feat.z)
    d = math.prod(SPEC.image_shape)
    np.testing.assert_allclose(feat.distances**2 / d, pix.distances, rtol=1e-4)


def test_same_seed_same_z_and_distances_other_seed_not() -> None:
    x, c = _images(5, 8)
    G = _real_g()
    a = project(G, x, c, image=SPEC, seed=11, **FAST)
    b = project(G, x, c, image=SPEC, seed=11, **FAST)
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.distances, b.distances)
    other = project(G, x, c, image=SPEC, seed=12, **FAST)
    assert not np.array_equal(a.z, other.z)


def test_the_result_does_not_depend_on_the_batch_size_nor_on_the_global_rng() -> None:
    x, c = _images(5, 9)
    G = _real_g()
    torch.manual_seed(1)
    whole = project(G, x, c, image=SPEC, seed=3, batch=128, **FAST)
    torch.manual_seed(2)
    pieces = project(G, x, c, image=SPEC, seed=3, batch=2, **FAST)
    np.testing.assert_allclose(whole.z, pieces.z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole.distances, pieces.distances, rtol=1e-4, atol=1e-9)


def test_projection_never_changes_G_and_restores_its_modes() -> None:
    x, c = _images(3, 10)
    G = _real_g()
    G.train()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with torch.no_grad():  # a caller inside no_grad still gets a projection
        p = project(G, x, c, image=SPEC, seed=0, **FAST)
    assert np.isfinite(p.distances).all() and p.z.shape == (3, 8)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert all(q.grad is None and q.requires_grad for q in G.parameters())
    assert all(m.training for m in G.modules())


def test_patients_count_once_by_their_closest_image() -> None:
    r = check_distances([0.5, 0.1, 0.4, 0.4], [0.2, 0.3, 0.6], train_groups=[0, 0, 1, 1], heldout_groups=[5, 5, 7])
    assert (r.unit, r.n_train, r.n_heldout) == ("patient", 2, 2)
    assert (r.train_mean, r.heldout_mean) == (pytest.approx(0.25), pytest.approx(0.4))  # (0.1, 0.4) vs (0.2, 0.6)
    assert r.auc == 0.75  # 0.2 > 0.1, 0.6 > 0.1, 0.6 > 0.4; 0.2 < 0.4


def test_auc_known_answers_and_delong_variance() -> None:
    assert membership_auc([0.0, 1.0], [2.0, 3.0])[0] == 1.0
    assert membership_auc([2.0, 3.0], [0.0, 1.0])[0] == 0.0
    assert membership_auc([0.0, 2.0], [1.0, 3.0])[0] == 0.75
    assert membership_auc([1.0, 1.0], [1.0, 1.0])[0] == 0.5
    rng = np.random.default_rng(0)
    t, h = rng.normal(size=9), rng.normal(0.7, size=7)
    auc, (lo, hi), p = membership_auc(t, h, confidence=0.9)
    psi = (h[:, None] > t[None, :]) + 0.5 * (h[:, None] == t[None, :])  # [held-out, training]
    assert auc == pytest.approx(psi.mean())
    se = math.sqrt(psi.mean(1).var(ddof=1) / 7 + psi.mean(0).var(ddof=1) / 9)  # DeLong et al. 1988
    assert (lo, hi) == (pytest.approx(max(0, auc - 1.6448536 * se)), pytest.approx(min(1, auc + 1.6448536 * se)))
    assert p == stats.mannwhitneyu(h, t, alternative="greater").pvalue


def test_too_few_images_are_inconclusive_even_when_separated() -> None:
    r = check_distances([0.0, 0.0], [1.0, 1.0])  # the best exact p-value at 2 + 2 is 1/6
    assert r.auc == 1.0 and r.verdict == "inconclusive" and "too few" in r.summary()
    assert check_distances([0.0] * 4, [1.0] * 4).verdict == "memorisation"  # 1/70 < 0.05


# ---------------------------------------------------------------------------------------------
# validation: one negative test per check


def _good() -> dict:
    x, c = _images(2, 12)
    return {"G": _real_g(), "images": x, "conds": c}


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"images": np.zeros((2, 3, 32, 32), np.float32)}, DataError, "expected \\[N, 3, 16, 16\\]"),
    ({"images": np.zeros((2, 1, 16, 16), np.float32)}, DataError, "shape"),
    ({"images": np.zeros((0, 3, 16, 16), np.float32), "conds": np.zeros((0, 3, 1, 1), np.float32)}, DataError,
     "no images"),
    ({"images": np.zeros((2, 3, 16, 16), np.uint8)}, DataError, "not floating point"),
    ({"images": np.full((2, 3, 16, 16), 255.0, np.float32)}, DataError, "outside the spec's value range"),
    ({"images": np.full((2, 3, 16, 16), np.nan, np.float32)}, DataError, "NaN"),
    ({"conds": np.zeros((3, 3, 1, 1), np.float32)}, DataError, "one 'class' condition per image"),
    ({"conds": np.zeros((2, 3, 16, 16), np.float32)}, DataError, "conditions: shape"),
    ({"conds": np.full((2, 3, 1, 1), 0.5, np.float32)}, DataError, "one-hot"),
    ({"conds": np.full((2, 3, 1, 1), 2.0, np.float32)}, DataError, "in \\[0, 1\\]"),
    ({"image": {"size": 16}}, ValueError, "must be an ImageSpec"),
    ({"steps": 0}, ValueError, "steps"),
    ({"restarts": 0}, ValueError, "restarts"),
    ({"batch": 1.5}, ValueError, "batch"),
    ({"lr": 0.0}, ValueError, "lr"),
    ({"lr": float("nan")}, ValueError, "lr"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": True}, ValueError, "seed"),
    ({"distance": "lpips"}, ValueError, "distance must be one of"),
    ({"distance": "features"}, ValueError, "needs a features function"),
    ({"G": lambda c, z: c}, ValueError, "torch module"),
    ({"G": nn.Identity()}, ValueError, "noise dimension"),
    ({"noise_dim": 5}, DataError, "cannot take these conditions"),
    ({"G": BankG(np.zeros((1, 3, 32, 32), np.float32))}, DataError, "G produces \\(3, 32, 32\\)"),
    ({"distance": "features", "features": lambda a: np.zeros(len(a))}, DataError, "\\[N, D\\] vectors"),
])
def test_project_refuses_bad_input(change, error, match) -> None:
    kw = {**_good(), "image": SPEC, "steps": 1, "restarts": 1, **change}
    G, x, c = kw.pop("G"), kw.pop("images"), kw.pop("conds")
    with pytest.raises(error, match=match):
        project(G, x, c, **kw)


@pytest.mark.parametrize(("kw", "error", "match"), [
    ({"train": [0.1], "heldout": [0.2, 0.3]}, DataError, "training: need at least 2 images"),
    ({"train": [0.1, 0.2], "heldout": [0.3, 0.3], "train_groups": [0, 0], "heldout_groups": [1, 2]}, DataError,
     "at least 2 patients"),
    ({"train": [0.1, 0.2], "heldout": [0.2, 0.3], "train_groups": [0, 1]}, ValueError, "both sets or for neither"),
    ({"train": [0.1, 0.2], "heldout": [0.2, 0.3], "train_groups": [0], "heldout_groups": [1, 2]}, DataError,
     "patient ids"),
    ({"train": [0.1, 0.2], "heldout": [0.2, 0.3], "train_groups": [0.0, 1.0], "heldout_groups": [1, 2]}, DataError,
     "integers"),
    ({"train": [0.1, -0.2], "heldout": [0.2, 0.3]}, DataError, ">= 0"),
    ({"train": [0.1, 0.2], "heldout": [0.2, float("inf")]}, DataError, "finite"),
    ({"train": [[0.1, 0.2]], "heldout": [0.2, 0.3]}, DataError, "1-D"),
    ({"train": [0.1, 0.2], "heldout": [0.2, 0.3], "confidence": 1.0}, ValueError, "confidence"),
])
def test_check_distances_refuses_bad_input(kw, error, match) -> None:
    with pytest.raises(error, match=match):
        check_distances(**kw)


def test_projection_check_names_the_set_that_is_wrong() -> None:
    x, c = _images(3, 13)
    with pytest.raises(DataError, match="held-out images"):
        projection_check(_real_g(), x, c, x[:, :2], c, image=SPEC, steps=1, restarts=1)


# ---------------------------------------------------------------------------------------------
# properties of the AUC

# distances on a grid of 0.01 (ties are common; a transform cannot merge two of them by rounding)
_dists = st.lists(st.integers(0, 1000).map(lambda k: k / 100.0), min_size=2, max_size=25)


@given(_dists)
@settings(max_examples=150, deadline=None)
def test_a_set_against_itself_scores_one_half(d) -> None:
    r = check_distances(d, list(d))
    assert r.auc == pytest.approx(0.5) and r.verdict != "memorisation"
    assert r.auc_ci[0] <= 0.5 <= r.auc_ci[1]


@given(_dists, _dists)
@settings(max_examples=150, deadline=None)
def test_auc_is_invariant_to_a_monotone_transform_and_antisymmetric(t, h) -> None:
    a = check_distances(t, h)
    f = lambda v: np.expm1(np.asarray(v)) + 3.0 * np.asarray(v)  # noqa: E731  strictly increasing, >= 0
    b = check_distances(f(t), f(h))
    assert a.auc == pytest.approx(b.auc) and a.p_value == pytest.approx(b.p_value)
    assert a.auc + check_distances(h, t).auc == pytest.approx(1.0)
    lo, hi = a.auc_ci
    assert 0.0 <= lo <= a.auc <= hi <= 1.0

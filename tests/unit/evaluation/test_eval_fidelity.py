"""Improved precision and recall (Kynkäänniemi et al. 2019): known answers on toy point sets."""

from __future__ import annotations

import numpy as np
import pytest

from secgan.evaluation.fidelity import knn_radii, precision_recall


def _cloud(n=60, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_identical_sets_score_one_one() -> None:
    x = _cloud()
    s = precision_recall(x, x.copy())
    assert (s.precision, s.recall) == (1.0, 1.0)


def test_disjoint_sets_score_zero_zero() -> None:
    x = _cloud()
    s = precision_recall(x, _cloud(seed=1) + 50.0)
    assert (s.precision, s.recall) == (0.0, 0.0)


def test_hand_computed_line() -> None:
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k=1 radii: 1, 1, 1, 1
    fake = np.array([[0.5], [3.9], [10.0], [11.0]])  # radii: 3.4, 3.4, 1, 1
    np.testing.assert_allclose(knn_radii(real, 1), [1, 1, 1, 1])
    np.testing.assert_allclose(knn_radii(fake, 1), [3.4, 3.4, 1.0, 1.0])
    s = precision_recall(real, fake, k=1)
    assert s.precision == pytest.approx(2 / 4)  # 0.5 and 3.9 are within 1 of a real point; 10, 11 not
    # real points within a fake ball: 0 (|0-0.5| <= 3.4), 1, 2, 3 (all within 3.4 of 0.5 or 3.9)
    assert s.recall == 1.0


def test_mode_collapse_keeps_precision_loses_recall() -> None:
    real = _cloud(200, 2)
    fake = real[0] + np.random.default_rng(3).normal(scale=0.01, size=(40, 2))  # one real image, jittered
    s = precision_recall(real, fake, k=3)
    assert s.precision == 1.0  # every fake looks real
    assert s.recall < 0.05  # but they cover one real point's neighbourhood only


@pytest.mark.parametrize(("real", "fake", "k"), [
    (np.zeros((5, 2)), np.zeros((5, 3)), 3),
    (np.zeros((3, 2)), np.zeros((5, 2)), 3),
    (np.zeros((5, 2)), np.zeros((5, 2)), 0),
    (np.full((5, 2), np.inf), np.zeros((5, 2)), 1),
])
def test_bad_input(real, fake, k) -> None:
    with pytest.raises(ValueError):
        precision_recall(real, fake, k=k)

"""Known answers for the audit statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from audits import stats
from secgan.core.errors import DataError

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def _cases(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text())["cases"]


@pytest.mark.parametrize("case", _cases("audits_cp.json"), ids=lambda c: f"{c['k']}/{c['n']}@{c['confidence']}")
def test_clopper_pearson_known_answers(case: dict) -> None:
    lo, hi = stats.clopper_pearson(case["k"], case["n"], confidence=case["confidence"])
    assert lo == pytest.approx(case["lower"], abs=case["tol"])
    assert hi == pytest.approx(case["upper"], abs=case["tol"])


@pytest.mark.parametrize("case", _cases("audits_epsilon.json"), ids=lambda c: f"{c['tp']}/{c['n_pos']}-{c['fp']}/{c['n_neg']}")
def test_epsilon_lower_bound_known_answers(case: dict) -> None:
    b = stats.epsilon_lower_bound(tp=case["tp"], n_pos=case["n_pos"], fp=case["fp"], n_neg=case["n_neg"],
                                  delta=case["delta"], confidence=case["confidence"])
    assert b.epsilon_lb == pytest.approx(case["epsilon_lb"], abs=max(case["tol"], 1e-12))


def test_useless_attack_proves_nothing_even_with_tiny_samples() -> None:
    # The optimistic ends (FPR_lo, TPR_hi) in the second term would "prove" eps > 0 here.
    assert stats.epsilon_lower_bound(tp=0, n_pos=10, fp=0, n_neg=10, delta=1e-5).epsilon_lb == 0.0


def test_max_resolvable_grows_with_sample_size_and_bounds_any_attack() -> None:
    small = stats.max_resolvable_epsilon(n_pos=10, n_neg=10, delta=1e-5)
    big = stats.max_resolvable_epsilon(n_pos=1000, n_neg=1000, delta=1e-5)
    assert 0 < small < big
    for tp in range(0, 11):
        for fp in range(0, 11):
            assert stats.epsilon_lower_bound(tp=tp, n_pos=10, fp=fp, n_neg=10, delta=1e-5).epsilon_lb <= small + 1e-12


def test_clopper_pearson_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="at least one trial"):
        stats.clopper_pearson(0, 0)
    with pytest.raises(DataError, match="within 0..n"):
        stats.clopper_pearson(11, 10)
    with pytest.raises(DataError, match="confidence"):
        stats.clopper_pearson(1, 10, confidence=1.0)


def test_roc_and_auc_on_a_hand_example() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 1, 0, 1, 0, 0])
    fpr, tpr, thr = stats.roc_curve(scores, labels)
    assert fpr.tolist() == [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1]
    assert tpr.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert thr[0] == math.inf
    auc, p = stats.auc_score(scores, labels)
    assert auc == pytest.approx(8 / 9)
    assert 0 < p < 0.5


def test_auc_needs_both_classes_and_finite_scores() -> None:
    with pytest.raises(DataError, match="one member and one non-member"):
        stats.auc_score(np.ones(3), np.ones(3))
    with pytest.raises(DataError, match="NaN"):
        stats.auc_score(np.array([np.nan, 1.0]), np.array([1, 0]))


def test_threshold_at_fpr_respects_the_target() -> None:
    neg = np.arange(100, dtype=float)
    t = stats.threshold_at_fpr(neg, 0.05)
    assert (neg >= t).sum() == 5
    t0 = stats.threshold_at_fpr(neg, 0.001)
    assert (neg >= t0).sum() == 0


def test_mann_whitney_z_signs() -> None:
    g = np.random.default_rng(0)
    x, y = g.normal(size=200), g.normal(size=200)
    assert abs(stats.mann_whitney_z(x, y)) < 3
    assert stats.mann_whitney_z(x - 2, y) < -10
    assert stats.mann_whitney_z(x + 2, y) > 10

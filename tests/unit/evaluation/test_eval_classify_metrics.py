"""TSTR classification scores: known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secgan.evaluation.classify_metrics import balanced_accuracy, classify_scores, macro_auc, per_class_recall


def test_known_answer_three_classes() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    probs = np.array([
        [0.8, 0.1, 0.1],
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.2, 0.7, 0.1],  # a class-0 image called 1
        [0.1, 0.8, 0.1],
        [0.5, 0.4, 0.1],  # a class-1 image called 0
        [0.1, 0.1, 0.8],
    ])
    np.testing.assert_allclose(per_class_recall(probs, labels), [3 / 4, 1 / 2, 1.0], rtol=1e-6)
    assert balanced_accuracy(probs, labels) == pytest.approx((0.75 + 0.5 + 1.0) / 3, rel=1e-6)
    # one-vs-rest AUCs by hand: class 0 scores positives {.8,.7,.6,.2} vs negatives {.1,.5,.1}: pairs won
    # 4+4+4+2=... per positive: .8 beats 3, .7 beats 3, .6 beats 3, .2 beats 2 (the two .1) -> 11/12
    # class 1: positives {.8,.4} vs negatives {.1,.2,.3,.7,.1}: .8 beats 5, .4 beats 4 -> 9/10
    # class 2: positive {.8} beats all six .1 -> 1
    assert macro_auc(probs, labels) == pytest.approx((11 / 12 + 9 / 10 + 1.0) / 3)


def test_accuracy_would_hide_what_balanced_accuracy_shows() -> None:
    labels = np.array([0] * 9 + [1])
    probs = np.tile([0.9, 0.1], (10, 1))  # always the majority class: accuracy 0.9
    assert balanced_accuracy(probs, labels) == pytest.approx(0.5)
    assert macro_auc(probs, labels) == pytest.approx(0.5)  # constant scores: ties are half


def test_a_class_absent_from_the_test_set() -> None:
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    s = classify_scores(probs, labels)
    assert s.absent == (2,)
    assert math.isnan(s.per_class_recall[2])
    assert s.balanced_accuracy == pytest.approx(1.0) and s.macro_auc == pytest.approx(1.0) and s.n == 4


@pytest.mark.parametrize(("probs", "labels"), [
    (np.zeros((3, 1)), np.array([0, 0, 0])),
    (np.zeros((3, 2)), np.array([0, 2, 0])),
    (np.zeros((3, 2)), np.array([0.0, 1.0, 0.0])),
    (np.full((2, 2), np.nan), np.array([0, 1])),
])
def test_bad_input(probs, labels) -> None:
    with pytest.raises(ValueError):
        classify_scores(probs, labels)

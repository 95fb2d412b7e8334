"""Nuclei scores: known answers worked by hand from the definitions (Dice, F1 at IoU 0.5, AJI of
Kumar et al. 2017)."""

from __future__ import annotations

import numpy as np
import pytest

from secgan.evaluation.nuclei_metrics import aji, foreground_dice, object_f1, score_tiles


def _maps():
    t = np.zeros((6, 6), int)
    t[0:2, 0:2] = 1  # 4 px
    t[3:6, 3:6] = 2  # 9 px
    p = np.zeros((6, 6), int)
    p[0:2, 0:3] = 5  # 6 px, covers nucleus 1 (IoU 4/6)
    p[3:5, 3:5] = 9  # 4 px inside nucleus 2 (IoU 4/9)
    return p, t


def test_known_answer_two_nuclei() -> None:
    p, t = _maps()
    assert foreground_dice(p, t) == pytest.approx(2 * 8 / (10 + 13))
    assert object_f1(p, t) == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))  # 1 match, 1 FP, 1 FN
    assert aji(p, t) == pytest.approx((4 + 4) / (6 + 9))


def test_one_prediction_spanning_two_nuclei_is_counted_twice_in_the_union() -> None:
    t = np.zeros((4, 6), int)
    t[0:2, 0:2] = 1
    t[0:2, 3:5] = 2
    p = np.zeros((4, 6), int)
    p[0:2, 0:5] = 3  # 10 px covering both (and the gap column)
    # AJI: each true nucleus picks p (IoU 4/10), C = 4 + 4, U = 10 + 10 (p's pixels in both unions)
    assert aji(p, t) == pytest.approx(8 / 20)
    assert object_f1(p, t) == 0.0  # no IoU above 0.5
    assert foreground_dice(p, t) == pytest.approx(2 * 8 / (10 + 8))


def test_unmatched_predictions_add_to_the_union_and_misses_count_whole() -> None:
    t = np.zeros((6, 6), int)
    t[0:2, 0:2] = 1  # 4 px, found exactly
    t[4:6, 4:6] = 2  # 4 px, missed
    p = np.zeros((6, 6), int)
    p[0:2, 0:2] = 1
    p[0:3, 5] = 2  # 3 px false nucleus
    assert aji(p, t) == pytest.approx(4 / (4 + 4 + 3))
    assert object_f1(p, t) == pytest.approx(2 / (2 + 1 + 1))


def test_identical_and_empty_maps() -> None:
    _, t = _maps()
    relabelled = np.where(t == 1, 40, np.where(t == 2, 7, 0))
    assert foreground_dice(relabelled, t) == 1.0
    assert object_f1(relabelled, t) == 1.0
    assert aji(relabelled, t) == 1.0
    z = np.zeros((6, 6), int)
    assert (foreground_dice(z, z), object_f1(z, z), aji(z, z)) == (1.0, 1.0, 1.0)
    assert (foreground_dice(z, t), object_f1(z, t), aji(z, t)) == (0.0, 0.0, 0.0)
    assert (object_f1(t, z), aji(t, z)) == (0.0, 0.0)


def test_score_tiles_means_and_bad_input() -> None:
    p, t = _maps()
    s = score_tiles([p, t], [t, t])
    assert s.tiles == 2
    assert s.aji == pytest.approx((8 / 15 + 1.0) / 2)
    assert s.f1 == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="same shape|one \\[H, W\\] shape"):
        aji(p[:5], t)
    with pytest.raises(ValueError, match="integer"):
        object_f1(p.astype(float), t)
    with pytest.raises(ValueError):
        score_tiles([], [])

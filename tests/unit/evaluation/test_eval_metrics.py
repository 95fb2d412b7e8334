"""Known-answer checks of the region metrics on constructed masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secgan.evaluation.metrics import (
    region_masks,
    regions_to_labels,
    score_patients,
    summarise_runs,
    summarise_seeds,
    volume_scores,
)


def _vol(s: int = 4, h: int = 16, w: int = 16) -> np.ndarray:
    return np.zeros((3, s, h, w), dtype=bool)


def test_region_masks_follow_brats_regions():
    seg = np.array([[0, 1, 2, 4]], dtype=np.int16)
    wt, tc, et = region_masks(seg)
    assert wt.tolist() == [[False, True, True, True]]
    assert tc.tolist() == [[False, True, False, True]]
    assert et.tolist() == [[False, False, False, True]]


def test_regions_to_labels_round_trips():
    seg = np.random.default_rng(0).choice([0, 1, 2, 4], size=(5, 8, 8)).astype(np.int16)
    assert np.array_equal(regions_to_labels(region_masks(seg)), seg)


def test_identical_masks_score_perfectly():
    t = _vol()
    t[:, 1:3, 4:9, 4:9] = True
    s = volume_scores(t, t)
    for r in ("wt", "tc", "et"):
        assert s[r]["dice"] == pytest.approx(1.0)
        assert s[r]["hd95"] == pytest.approx(0.0)


def test_dice_of_half_overlap():
    # truth 4x4 = 16 voxels, prediction 4x8 = 32 voxels containing it: dice = 2*16/(16+32) = 2/3
    t, p = _vol(), _vol()
    t[0, 0, 0:4, 0:4] = True
    p[0, 0, 0:4, 0:8] = True
    assert volume_scores(p, t)["wt"]["dice"] == pytest.approx(2 / 3)


def test_hd95_between_single_voxels_is_their_distance():
    t, p = _vol(), _vol()
    t[0, 0, 0, 0] = True
    p[0, 0, 3, 4] = True  # 3-4-5 triangle in-plane
    t[1, 0, 2, 2] = True
    p[1, 3, 2, 2] = True  # three slices apart
    s = volume_scores(p, t)
    assert s["wt"]["hd95"] == pytest.approx(5.0)
    assert s["wt"]["dice"] == pytest.approx(0.0)
    assert s["tc"]["hd95"] == pytest.approx(3.0)


def test_empty_mask_conventions():
    t, p = _vol(), _vol()
    t[0, 0, 2, 2] = True  # wt present in truth only; tc, et empty on both sides
    p[1, 0, 5, 5] = True  # tc predicted but absent in truth
    s = volume_scores(p, t)
    diag = math.sqrt(4**2 + 16**2 + 16**2)
    assert s["wt"] == {"dice": 0.0, "hd95": pytest.approx(diag)}
    assert s["tc"] == {"dice": 0.0, "hd95": pytest.approx(diag)}
    assert s["et"] == {"dice": 1.0, "hd95": 0.0}


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        volume_scores(_vol(), _vol(s=3))


def test_score_patients_averages_over_patients_and_regions():
    t = _vol()
    t[:, 0, 0:4, 0:4] = True
    p_good = t.copy()
    p_bad = _vol()
    p_bad[:, 0, 10:14, 10:14] = True
    s = score_patients([p_good, p_bad], [t, t])
    assert s["wt"]["dice"] == pytest.approx(0.5)
    assert s["mean"]["dice"] == pytest.approx(0.5)
    assert s["mean"]["hd95"] > 0


def test_seed_summary():
    s = summarise_seeds([0.5, 0.7])
    assert s.mean == pytest.approx(0.6)
    assert s.std == pytest.approx(math.sqrt(0.02))
    assert summarise_seeds([0.3]).std == 0.0
    with pytest.raises(ValueError):
        summarise_seeds([])


def test_summarise_runs_keys():
    run = {r: {"dice": 0.5, "hd95": 2.0} for r in ("wt", "tc", "et", "mean")}
    out = summarise_runs([run, run])
    assert out["dice_mean"] == pytest.approx(0.5)
    assert out["dice_std"] == 0.0
    assert out["hd95_et_mean"] == pytest.approx(2.0)
    assert out["seeds"] == 2

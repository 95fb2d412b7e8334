"""Patient-level permutation tests of the memorisation statistics, on constructed data with known answers.

Records come in patients (a few slices around a patient centre); the unit re-assigned by the
permutations is the patient. Features are low-dimensional so every case runs in well under a second.
"""

from __future__ import annotations

import numpy as np
import pytest

from audits.memorisation import MemorisationConfig, memorisation_tests, patient_labels
from audits.rubric import DEFAULT_RUBRIC, grade, load_rubric
from secgan.core.errors import DataError

CFG = MemorisationConfig(permutations=499)
N_TR, N_HO, SLICES, DIM = 18, 12, 6, 8


def _patients(n: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """[n * SLICES, DIM] records around n patient centres, and their patient ids 0..n-1."""
    centres = g.normal(size=(n, DIM)) * 3
    x = np.repeat(centres, SLICES, 0) + g.normal(scale=0.5, size=(n * SLICES, DIM))
    return x.astype(np.float32), np.repeat(np.arange(n), SLICES)


def _site(seed: int = 0):
    g = np.random.default_rng(seed)
    tr, gtr = _patients(N_TR, g)
    ho, gho = _patients(N_HO, g)  # ids restart at 0, as a site's held-out split does
    return tr, gtr, ho, gho, g


def _memo(tr, gtr, ho, gho, syn, seed: int = 1) -> dict:
    return memorisation_tests(tr, ho, syn.astype(np.float32), rng=np.random.default_rng(seed), config=CFG,
                              train_groups=gtr, hold_groups=gho, perm_rng=np.random.default_rng(seed + 100))


def _grade_memo(m: dict, rubric_file: str | None = None) -> list[dict]:
    rubric = load_rubric(None if rubric_file is None else DEFAULT_RUBRIC.with_name(rubric_file))[0]
    results = {"attacks": [], "memorisation": {"pixels": m},
               "epsilon": {"empirical_lb": 0.0, "claimed": 8.0, "mode": "dpsgd", "max_resolvable": 3.0}}
    return [f for f in grade(results, rubric)[1] if f["area"] == "memorisation"]


def test_copies_of_many_training_patients_give_the_smallest_p_value() -> None:
    tr, gtr, ho, gho, g = _site()
    syn = tr[g.choice(len(tr), 120)] + g.normal(scale=0.01, size=(120, DIM))
    m = _memo(tr, gtr, ho, gho, syn)
    smallest = 1 / (CFG.permutations + 1)
    assert m["dcr"]["fraction_closer_to_train"] == 1.0
    assert m["dcr"]["p_value"] == pytest.approx(smallest)
    assert m["near_duplicates"]["p_value"] == pytest.approx(smallest)
    assert m["data_copying"]["c_t"] is not None and m["data_copying"]["p_value"] <= 0.01
    # the permutation mean is the share of training patients (each patient's copies move together)
    assert m["dcr"]["expected_fraction"] == pytest.approx(N_TR / (N_TR + N_HO), abs=0.05)
    assert m["dcr"]["distinct_patients_closer_to_train"] == N_TR
    assert m["near_duplicates"]["distinct_patients"] == N_TR
    assert any(f["level"] == "Red" for f in _grade_memo(m))


def test_identical_samples_next_to_one_patient_are_not_significant() -> None:
    """Winner takes all: every sample shares one nearest patient, so the permutation p-value is the
    chance that this patient lands in the training set, about 18/30, however many samples there are."""
    tr, gtr, ho, gho, g = _site()
    syn = np.repeat(tr[:1] + 0.8, 64, 0) + g.normal(scale=1e-3, size=(64, DIM))
    m = _memo(tr, gtr, ho, gho, syn)
    assert m["dcr"]["fraction_closer_to_train"] == 1.0
    assert m["dcr"]["slice_binomial_p"] < 1e-10  # what the independent-samples test used to say
    assert m["dcr"]["p_value"] == pytest.approx(N_TR / (N_TR + N_HO), abs=0.07)
    assert m["dcr"]["distinct_nearest_patients"] == 1
    dcr = [f for f in _grade_memo(m) if "closer to training" in f["reason"]][0]
    assert dcr["level"] == "Green" and "from 1 patient(s)" in dcr["reason"]


def test_identical_noise_far_from_everything_is_green_and_was_red_under_the_binomial_reading() -> None:
    tr, gtr, ho, gho, g = _site(3)
    syn = np.repeat(g.normal(size=(1, DIM)) * 12, 64, 0) + g.normal(scale=1e-2, size=(64, DIM))
    m = _memo(tr, gtr, ho, gho, syn)
    frac = m["dcr"]["fraction_closer_to_train"]
    assert frac in (0.0, 1.0)  # all on one side
    assert m["dcr"]["p_value"] > 0.2
    assert all(f["level"] == "Green" for f in _grade_memo(m))


def test_copies_of_one_training_slice_are_amber_not_red_and_say_why() -> None:
    tr, gtr, ho, gho, g = _site()
    syn = np.repeat(tr[7:8], 64, 0) + g.normal(scale=1e-3, size=(64, DIM))
    m = _memo(tr, gtr, ho, gho, syn)
    assert m["near_duplicates"]["count"] == 64 and m["near_duplicates"]["distinct_patients"] == 1
    assert m["near_duplicates"]["p_value"] > 0.2
    found = _grade_memo(m)
    dup = [f for f in found if "near-duplicates" in f["reason"]][0]
    assert dup["level"] == "Amber" and "too few patients" in dup["reason"]
    assert not any(f["level"] in ("Red", "Critical") for f in found)


def test_fresh_samples_from_the_same_population_are_not_significant() -> None:
    ps = []
    for seed in range(4):
        tr, gtr, ho, gho, g = _site(10 + seed)
        fresh, _ = _patients(20, g)
        m = _memo(tr, gtr, ho, gho, fresh, seed=seed)
        ps.append(m["dcr"]["p_value"])
        assert abs(m["dcr"]["excess"]) < 0.25
    assert min(ps) > 0.01


def test_p_values_are_seeded_multiples_of_one_over_permutations_plus_one() -> None:
    tr, gtr, ho, gho, g = _site()
    syn = tr[g.choice(len(tr), 40)] + g.normal(scale=0.3, size=(40, DIM))
    a, b = _memo(tr, gtr, ho, gho, syn), _memo(tr, gtr, ho, gho, syn)
    c = _memo(tr, gtr, ho, gho, syn, seed=7)
    for key in ("dcr", "near_duplicates"):
        assert a[key]["p_value"] == b[key]["p_value"]
        k = a[key]["p_value"] * (CFG.permutations + 1)
        assert k == pytest.approx(round(k)) and 1 <= round(k) <= CFG.permutations + 1
    assert a["data_copying"]["p_value"] == b["data_copying"]["p_value"]
    assert a["dcr"]["expected_fraction"] != c["dcr"]["expected_fraction"]  # another stream, other draws


def test_patient_labels_keep_train_and_holdout_patients_apart() -> None:
    rec, n_tr, n = patient_labels(np.array([5, 5, 9]), 3, np.array([5, 0, 0, 5]), 4)
    assert (n_tr, n) == (2, 4)
    assert rec.tolist() == [0, 0, 1, 3, 2, 2, 3]
    rec, n_tr, n = patient_labels(None, 2, None, 3)
    assert rec.tolist() == [0, 1, 2, 3, 4] and (n_tr, n) == (2, 5)
    with pytest.raises(DataError, match="patient index has shape"):
        patient_labels(np.zeros(2, int), 3, None, 1)


def test_rubric_v1_still_grades_the_old_binomial_reading_as_it_did() -> None:
    """Reports written before the permutation tests carry binomial p-values and no patient counts."""
    old = {"n_synthetic": 64,
           "dcr": {"fraction_closer_to_train": 1.0, "expected_fraction": 0.62, "p_value": 7e-14},
           "near_duplicates": {"fraction": 0.0, "count": 0, "expected_fraction": 0.01, "p_value": 1.0},
           "data_copying": {"c_t": 6.0, "cells": []}}
    v1 = _grade_memo(old, "rubric-v1.toml")
    dcr = [f for f in v1 if "closer to training" in f["reason"]][0]
    assert dcr["level"] == "Red"
    assert dcr["reason"] == "100% of synthetic images are closer to training than to held-out images (62% expected)"

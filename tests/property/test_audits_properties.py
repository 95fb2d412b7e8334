"""Properties of the audit statistics and the nearest-neighbour search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scipy import stats as st_

from audits.memorisation import _row_percentile
from audits.neighbours import brute_force_nearest, nearest, nearest_per_group
from audits.stats import clopper_pearson, epsilon_lower_bound, mann_whitney_z


@st.composite
def _kn(draw):
    n = draw(st.integers(1, 5000))
    return draw(st.integers(0, n)), n


@given(_kn(), st.floats(0.5, 0.999))
@settings(max_examples=200, deadline=None)
def test_clopper_pearson_contains_estimate_within_unit_interval(kn, conf) -> None:
    k, n = kn
    lo, hi = clopper_pearson(k, n, confidence=conf)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


@given(_kn(), _kn(), st.floats(0.0, 0.1))
@settings(max_examples=200, deadline=None)
def test_epsilon_bound_is_nonnegative_and_finite(pos, neg, delta) -> None:
    b = epsilon_lower_bound(tp=pos[0], n_pos=pos[1], fp=neg[0], n_neg=neg[1], delta=delta)
    assert 0.0 <= b.epsilon_lb < 50


@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 12), st.integers(1, 9), st.integers(0, 2**31 - 1))
@settings(max_examples=60, deadline=None)
def test_chunked_nearest_equals_brute_force(nq, nr, dim, chunk, seed) -> None:
    g = np.random.default_rng(seed)
    q = g.normal(size=(nq, dim))
    r = g.normal(size=(nr, dim))
    k = min(2, nr)
    d, i = nearest(q, r, k=k, chunk=chunk, dtype=torch.float64)
    bd, bi = brute_force_nearest(q, r, k=k)
    np.testing.assert_allclose(d, bd, rtol=1e-9, atol=1e-9)
    # indices may differ only between tied references: the chosen ones must be just as near
    full = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(np.take_along_axis(full, i, 1), bd, rtol=1e-9, atol=1e-9)


def _mw_z_by_ranks(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook rank form of the tie-corrected Mann-Whitney Z (the reference for the sorted-search one)."""
    m, n = len(x), len(y)
    u = st_.rankdata(np.r_[x, y])[:m].sum() - m * (m + 1) / 2
    _, c = np.unique(np.r_[x, y], return_counts=True)
    N = m + n
    var = m * n / 12 * ((N + 1) - ((c**3 - c).sum() / (N * (N - 1)) if N > 1 else 0.0))
    return 0.0 if var <= 0 else (u - m * n / 2) / np.sqrt(var)


@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.lists(st.integers(0, 6), min_size=1, max_size=40),
       st.floats(0.0, 1.0))
@settings(max_examples=200, deadline=None)
def test_mann_whitney_z_matches_the_rank_form_with_ties(xs, ys, scale) -> None:
    x, y = np.asarray(xs, float) * scale, np.asarray(ys, float)
    assert mann_whitney_z(x, y) == pytest.approx(_mw_z_by_ranks(x, y), abs=1e-9)


@given(st.integers(1, 20), st.integers(1, 25), st.integers(1, 6), st.integers(1, 7), st.integers(0, 2**31 - 1))
@settings(max_examples=60, deadline=None)
def test_nearest_per_group_is_the_minimum_over_each_group(nq, nr, groups, chunk, seed) -> None:
    g = np.random.default_rng(seed)
    q, r = g.normal(size=(nq, 5)), g.normal(size=(nr, 5))
    lab = np.r_[np.arange(min(groups, nr)), g.integers(0, min(groups, nr), nr)][:nr]
    got = nearest_per_group(q, r, lab, chunk=chunk)
    full = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    want = np.stack([full[:, lab == k].min(1) for k in range(lab.max() + 1)], 1)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@given(st.lists(st.lists(st.floats(0, 100), min_size=6, max_size=6), min_size=1, max_size=8),
       st.integers(0, 2**31 - 1), st.floats(0.0, 100.0))
@settings(max_examples=100, deadline=None)
def test_row_percentile_matches_numpy_on_the_valid_entries(rows, seed, q) -> None:
    x = np.asarray(rows)
    valid = np.random.default_rng(seed).random(x.shape) < 0.6
    valid[:, 0] = True
    masked = np.where(valid, x, np.inf)
    got = _row_percentile(masked, valid.sum(1), q)
    want = [np.percentile(x[i][valid[i]], q) for i in range(len(x))]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

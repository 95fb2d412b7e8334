"""Properties of the audit statistics and the nearest-neighbour search."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audits.neighbours import brute_force_nearest, nearest
from audits.stats import clopper_pearson, epsilon_lower_bound


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

from __future__ import annotations

import numpy as np
import pytest
import torch

from audits.neighbours import brute_force_nearest, nearest
from secgan.core.errors import DataError


def test_chunked_search_matches_brute_force_in_float64() -> None:
    g = np.random.default_rng(1)
    q, r = g.normal(size=(37, 4, 3, 3)), g.normal(size=(53, 4, 3, 3))
    d, i = nearest(q, r, k=3, chunk=8, dtype=torch.float64)
    bd, bi = brute_force_nearest(q, r, k=3)
    np.testing.assert_allclose(d, bd, rtol=1e-10, atol=1e-10)
    assert (i == bi).all()


def test_exact_copies_have_zero_distance_in_float32() -> None:
    g = np.random.default_rng(2)
    r = g.uniform(-1, 1, size=(20, 4, 16, 16)).astype(np.float32) + 50.0  # large norms
    d, i = nearest(r[[3, 7]], r)
    assert i[:, 0].tolist() == [3, 7]
    assert d.max() < 1e-9


def test_group_exclusion_skips_the_query_group() -> None:
    r = np.array([[0.0], [1.0], [10.0]])
    groups = np.array([0, 0, 1])
    d, i = nearest(np.array([[0.0], [0.0]]), r, ref_groups=groups, exclude_group=np.array([0, 1]))
    assert i[:, 0].tolist() == [2, 0]
    assert d[:, 0].tolist() == [10.0, 0.0]
    with pytest.raises(DataError, match="not enough references"):
        nearest(np.array([[0.0]]), r[:2], ref_groups=groups[:2], exclude_group=np.array([0]))


def test_bad_shapes_are_named() -> None:
    with pytest.raises(DataError, match="features"):
        nearest(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(DataError, match="non-empty"):
        nearest(np.zeros((0, 3)), np.zeros((2, 3)))
    with pytest.raises(DataError, match="k=3"):
        nearest(np.zeros((2, 3)), np.zeros((2, 3)), k=3)

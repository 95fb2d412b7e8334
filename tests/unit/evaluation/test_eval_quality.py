"""Histogram distance and k-NN precision/recall on constructed sets; the local embedding."""

from __future__ import annotations

import numpy as np
import pytest

from secgan.evaluation.quality import Embedding, image_quality, intensity_distances, precision_recall


def _slices(n: int, value: float, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    x = np.full((n, 4, 16, 16), -1.0, np.float32)
    x[:, :, 4:12, 4:12] = value + 0.01 * g.standard_normal((n, 4, 8, 8))
    return x


def test_w1_known_shift():
    g = np.random.default_rng(0)
    a = _slices(10, 0.0, 1)
    b = a.copy()
    b[:, 2][b[:, 2] > -1] += 0.5  # t2 shifted by 0.5 inside the brain
    d = intensity_distances(a, b, generator=g)
    assert d["t2"] == pytest.approx(0.5, abs=1e-5)
    assert d["t1"] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        intensity_distances(a, np.full_like(a, -1.0), generator=g)


def test_precision_recall_known_cases():
    g = np.random.default_rng(0)
    real = g.standard_normal((200, 3))
    assert precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    # fakes collapsed onto a small part of the real cloud: precise, poor coverage
    collapsed = real[real[:, 0] > 1.0]
    p, r = precision_recall(real, collapsed, k=3)
    assert p == 1.0 and r < 0.5
    with pytest.raises(ValueError):
        precision_recall(real[:3], real, k=3)
    with pytest.raises(ValueError):
        precision_recall(real, real[:, :2], k=3)


def test_embedding_and_quality_report():
    real = _slices(40, 0.0, 2)
    conds = np.zeros((40, 4, 16, 16), np.float32)
    conds[:, 0, 4:12, 4:12] = 1
    emb = Embedding.train(real, conds, seed=0, epochs=1, width=8)
    f = emb(real)
    assert f.shape == (40, 32) and np.isfinite(f).all()
    q = image_quality((real, conds), _slices(20, 0.0, 3), _slices(20, 0.8, 4), seed=0)
    assert set(q) >= {"w1_t1", "w1_flair", "w1_mean", "precision", "recall"}
    assert q["w1_mean"] == pytest.approx(0.8, abs=0.02)

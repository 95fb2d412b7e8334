"""The TSTR classifier: learns a separable toy, is deterministic in its seed, scores with the TSTR metrics."""

from __future__ import annotations

import numpy as np
import pytest

from secgan.evaluation.classifier import ClassifierConfig, build_classifier, predict_proba, train_classifier, tstr_scores

CFG = ClassifierConfig(channels=(8, 16), epochs=6, batch_size=16, lr=5e-3)


def _toy(n: int, seed: int):
    """Three classes told apart by which colour channel is bright; strongly imbalanced (70/20/10 %)."""
    g = np.random.default_rng(seed)
    labels = g.choice(3, size=n, p=[0.7, 0.2, 0.1])
    images = g.uniform(0.0, 0.4, size=(n, 3, 16, 16)).astype(np.float32)
    images[np.arange(n), labels] += 0.5
    return images, labels


def test_learns_a_separable_imbalanced_toy_and_reports_tstr_scores() -> None:
    x, y = _toy(160, 0)
    xt, yt = _toy(60, 1)
    s = tstr_scores(x, y, xt, yt, classes=3, config=CFG, seed=0)
    assert s.balanced_accuracy > 0.9 and s.macro_auc > 0.95
    assert len(s.per_class_recall) == 3 and s.n == 60


def test_deterministic_in_the_seed_and_the_global_rng_untouched() -> None:
    import torch

    x, y = _toy(48, 2)
    state = torch.random.get_rng_state()
    p1 = predict_proba(train_classifier(x, y, classes=3, config=CFG, seed=4, steps=5), x)
    p2 = predict_proba(train_classifier(x, y, classes=3, config=CFG, seed=4, steps=5), x)
    assert torch.equal(state, torch.random.get_rng_state())
    np.testing.assert_array_equal(p1, p2)
    p3 = predict_proba(train_classifier(x, y, classes=3, config=CFG, seed=5, steps=5), x)
    assert not np.array_equal(p1, p3)
    assert p1.shape == (48, 3) and np.allclose(p1.sum(1), 1.0)


def test_bad_input_and_config() -> None:
    x, y = _toy(8, 0)
    with pytest.raises(ValueError):
        train_classifier(x, y + 3, classes=3, config=CFG, seed=0)
    with pytest.raises(ValueError):
        train_classifier(x[:, 0], y, classes=3, config=CFG, seed=0)
    with pytest.raises(ValueError):
        ClassifierConfig(channels=())
    assert build_classifier(CFG, in_channels=1, classes=7, seed=0)(__import__("torch").zeros(2, 1, 16, 16)).shape == (2, 7)

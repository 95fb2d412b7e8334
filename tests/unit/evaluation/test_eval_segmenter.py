"""The downstream U-Net: deterministic from its seed, no global-RNG side effects, and it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from secgan.evaluation.segmenter import (
    SegmenterConfig,
    HeldOutPatient,
    build_unet,
    evaluate_segmenter,
    predict_regions,
    train_segmenter,
)

TINY = SegmenterConfig(channels=(8, 16, 32), num_res_units=0, epochs=1, batch_size=16)


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright squares on a dark disc: the square is the tumour (label 4 core inside label 2)."""
    g = np.random.default_rng(seed)
    images = np.full((n, 4, 32, 32), -1.0, np.float32)
    segs = np.zeros((n, 32, 32), np.int16)
    yy, xx = np.mgrid[:32, :32]
    disc = (yy - 16) ** 2 + (xx - 16) ** 2 < 14**2
    for i in range(n):
        images[i][:, disc] = -0.2 + 0.05 * g.standard_normal((4, disc.sum()))
        y, x = g.integers(8, 20, size=2)
        segs[i, y : y + 6, x : x + 6] = 2
        segs[i, y + 2 : y + 4, x + 2 : x + 4] = 4
        images[i][:, segs[i] == 2] = 0.6
        images[i][:, segs[i] == 4] = 0.95
    return images, segs


def test_build_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = build_unet(TINY, seed=3)
    b = build_unet(TINY, seed=3)
    c = build_unet(TINY, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def test_training_is_reproducible():
    images, segs = _toy(24, 0)
    m1 = train_segmenter(images, segs, config=TINY, seed=7)
    m2 = train_segmenter(images, segs, config=TINY, seed=7)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_trained_beats_untrained():
    images, segs = _toy(96, 1)
    test_im, test_seg = _toy(8, 2)
    patients = [HeldOutPatient(images=test_im[:4], segs=test_seg[:4]), HeldOutPatient(images=test_im[4:], segs=test_seg[4:])]
    cfg = SegmenterConfig(channels=(8, 16, 32), num_res_units=0, epochs=6, batch_size=16, lr=5e-3)
    trained = train_segmenter(images, segs, config=cfg, seed=0)
    untrained = build_unet(cfg, seed=0).eval()
    s_trained = evaluate_segmenter(trained, patients)
    s_untrained = evaluate_segmenter(untrained, patients)
    assert s_trained["wt"]["dice"] > 0.5
    assert s_trained["mean"]["dice"] > s_untrained["mean"]["dice"] + 0.2


def test_predict_shapes():
    images, _ = _toy(5, 3)
    out = predict_regions(build_unet(TINY, seed=0).eval(), images, batch_size=2)
    assert out.shape == (5, 3, 32, 32) and out.dtype == bool


def test_bad_inputs_are_refused():
    images, segs = _toy(4, 0)
    with pytest.raises(ValueError):
        train_segmenter(images[:, :3], segs, config=TINY, seed=0)
    with pytest.raises(ValueError):
        train_segmenter(images[:, :, :30, :30], segs[:, :30, :30], config=TINY, seed=0)
    with pytest.raises(ValueError):
        SegmenterConfig(channels=(8,))


def test_step_budget_matches_epochs():
    from secgan.evaluation.segmenter import step_budget

    images, segs = _toy(40, 4)
    cfg = SegmenterConfig(channels=(8, 16, 32), num_res_units=0, epochs=2, batch_size=16)
    assert step_budget(cfg, 40) == 6
    by_epochs = train_segmenter(images, segs, config=cfg, seed=1)
    by_steps = train_segmenter(images, segs, config=cfg, seed=1, steps=6)
    fewer = train_segmenter(images, segs, config=cfg, seed=1, steps=5)
    untouched = train_segmenter(images, segs, config=cfg, seed=1, steps=0)
    init = build_unet(cfg, seed=1)
    flat = [torch.cat([p.flatten() for p in m.parameters()]) for m in (by_epochs, by_steps, fewer, untouched, init)]
    assert torch.equal(flat[0], flat[1])
    assert not torch.equal(flat[1], flat[2])
    assert torch.equal(flat[3], flat[4])

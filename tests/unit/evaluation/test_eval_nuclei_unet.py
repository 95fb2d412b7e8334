"""The nuclei U-Net reuses the project's segmenter (RGB in, nucleus/interior/boundary out) and is scored
by Dice, F1 and AJI on instance maps."""

from __future__ import annotations

import numpy as np

from secgan.data.nuclei import BACKGROUND, BOUNDARY, INTERIOR, instances_to_classes, synthesize_tile
from secgan.evaluation.nuclei_segmenter import (masks_to_classes, nuclei_masks, predict_instances, score_nuclei_unet,
                                                train_nuclei_unet)
from secgan.evaluation.segmenter import SegmenterConfig, build_unet

CFG = SegmenterConfig(channels=(8, 16, 32), num_res_units=0, batch_size=8, lr=1e-2, epochs=1)


def _tiles(site: int, n: int, first: int = 1):
    pairs = [synthesize_tile(0, site, 1 + t % 4, t, size=32) for t in range(first, first + n)]
    images = np.stack([np.moveaxis(rgb, -1, 0).astype(np.float32) / 255 for rgb, _ in pairs])
    return images, np.stack([inst for _, inst in pairs])


def test_masks_and_classes_are_inverse_on_consistent_masks() -> None:
    _, inst = synthesize_tile(0, 1, 1, 1, size=32)
    cls = instances_to_classes(inst)[None]
    masks = nuclei_masks(cls)
    assert masks.shape == (3, 1, 32, 32)
    np.testing.assert_array_equal(masks_to_classes(np.moveaxis(masks, 0, 1)), cls)
    assert set(np.unique(cls).tolist()) == {BACKGROUND, INTERIOR, BOUNDARY}


def test_segmenter_builds_for_rgb_and_three_outputs_and_keeps_its_brain_default() -> None:
    import torch

    assert build_unet(CFG, seed=0, in_channels=3, out_channels=3)(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert build_unet(CFG, seed=0)(torch.zeros(1, 4, 32, 32)).shape == (1, 3, 32, 32)


def test_a_short_training_beats_an_untrained_unet() -> None:
    x, inst = _tiles(1, 24)
    xt, it = _tiles(1, 6, first=50)
    untrained = train_nuclei_unet(x, inst, config=CFG, seed=0, steps=0)
    trained = train_nuclei_unet(x, inst, config=CFG, seed=0, steps=60)
    before = score_nuclei_unet(untrained, xt, it)
    after = score_nuclei_unet(trained, xt, it)
    assert after.tiles == 6
    assert after.dice > 0.6 and after.dice > before.dice + 0.2
    assert 0.0 <= after.aji <= 1.0 and 0.0 <= after.f1 <= 1.0
    pred = predict_instances(trained, xt)
    assert pred.shape == it.shape and pred.dtype == np.int32

"""The downstream nuclei U-Net: the project's segmenter (:mod:`secgan.evaluation.segmenter`) with RGB
in and three sigmoid outputs, scored by Dice, object F1 and AJI (:mod:`secgan.evaluation.nuclei_metrics`).

Targets come from instance maps through the 3-class map of :func:`secgan.data.nuclei.instances_to_classes`:
output 0 is the nucleus (interior or boundary), 1 the interior, 2 the boundary. A pixel is predicted
background when output 0 is off, interior when 0 and 1 are on and 2 is off, boundary otherwise;
:func:`secgan.data.nuclei.classes_to_instances` then separates the nuclei for F1 and AJI.

Images are taken as the readers return them, ``float32 [N, 3, H, W]`` in [0, 1], and fed to the
U-Net in [-1, 1] (the generator's range).
"""

from __future__ import annotations

import numpy as np

from secgan.data.nuclei import BACKGROUND, BOUNDARY, INTERIOR, classes_to_instances, instances_to_classes
from secgan.evaluation.nuclei_metrics import NucleiScores, score_tiles
from secgan.evaluation.segmenter import SegmenterConfig, predict_regions, train_segmenter


def nuclei_masks(classes: np.ndarray) -> np.ndarray:
    """3-class maps ``[N, H, W]`` -> target masks ``[3, N, H, W]`` (nucleus, interior, boundary)."""
    classes = np.asarray(classes)
    return np.stack([classes != BACKGROUND, classes == INTERIOR, classes == BOUNDARY])


def masks_to_classes(masks: np.ndarray) -> np.ndarray:
    """Predicted masks ``[N, 3, H, W]`` (bool) -> 3-class maps ``[N, H, W]`` uint8 (module docstring)."""
    fg, interior, boundary = (np.asarray(masks, dtype=bool)[:, k] for k in range(3))
    out = np.where(fg, np.uint8(BOUNDARY), np.uint8(BACKGROUND))
    out[fg & interior & ~boundary] = INTERIOR
    return out.astype(np.uint8)


def _unit_to_signed(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W] RGB in [0, 1], got {images.shape}")
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError("images must be in [0, 1]")
    return images * 2.0 - 1.0


def train_nuclei_unet(images: np.ndarray, instances: np.ndarray, *, config: SegmenterConfig, seed: int,
                      steps: int | None = None):
    """Train the segmenter on tiles ``images [N,3,H,W]`` in [0, 1] with instance maps ``[N,H,W]``."""
    classes = np.stack([instances_to_classes(m) for m in np.asarray(instances)])
    return train_segmenter(_unit_to_signed(images), classes, config=config, seed=seed, steps=steps, masks=nuclei_masks,
                           in_channels=3)


def predict_instances(model, images: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """Instance maps ``int32 [N, H, W]`` predicted for tiles ``images [N, 3, H, W]`` in [0, 1]."""
    classes = masks_to_classes(predict_regions(model, _unit_to_signed(images), device=device))
    return np.stack([classes_to_instances(c) for c in classes]) if len(classes) else np.zeros(classes.shape, np.int32)


def score_nuclei_unet(model, images: np.ndarray, instances: np.ndarray, *, device: str = "cpu") -> NucleiScores:
    """Mean per-tile Dice, F1 and AJI of the model on held-out tiles."""
    return score_tiles(list(predict_instances(model, images, device=device)), list(np.asarray(instances)))

"""Shared conventions for images and conditions. Everything that crosses a module boundary uses these.

- An image is float32 ``[4, H, W]`` (batched ``[B, 4, H, W]``), channels ``IMAGE_CHANNELS``,
  intensities normalised per volume to roughly ``[-1, 1]`` (background exactly -1).
- A condition is a float32 one-hot-ish label map ``[4, H, W]``, channels ``COND_CHANNELS``:
  ``brain`` (1 inside the head, tumour included), ``ncr`` (BraTS label 1, necrotic core),
  ``ed`` (label 2, oedema), ``et`` (label 4, enhancing tumour). Tumour channels are disjoint.
- A segmentation is an int label map ``[H, W]`` with BraTS values ``{0, 1, 2, 4}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from secgan.core.config import rng

IMAGE_CHANNELS: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
COND_CHANNELS: tuple[str, ...] = ("brain", "ncr", "ed", "et")
BRATS_LABELS: tuple[int, ...] = (0, 1, 2, 4)
# Tumour regions scored downstream, as sets of BraTS labels.
REGIONS: dict[str, tuple[int, ...]] = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}


@dataclass(frozen=True)
class ImageSpec:
    """Size of the 2-D slices the federation trains on."""

    # in-plane size of the training slices, a multiple of 16
    size: int = field(default=64, metadata=rng(min=16, max=512))
    # fixed: t1, t1ce, t2, flair
    image_channels: int = 4
    # fixed: brain, ncr, ed, et
    cond_channels: int = 4

    def __post_init__(self) -> None:
        if self.size % 16:
            raise ValueError(f"size must be a multiple of 16, got {self.size}")
        if self.image_channels != len(IMAGE_CHANNELS) or self.cond_channels != len(COND_CHANNELS):
            raise ValueError("image_channels and cond_channels are fixed at 4")


def encode_condition(seg: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """BraTS label map + brain mask (both ``[H, W]``) -> condition ``[4, H, W]`` float32."""
    if seg.shape != brain.shape or seg.ndim != 2:
        raise ValueError(f"seg {seg.shape} and brain {brain.shape} must be equal 2-D shapes")
    out = np.zeros((4,) + seg.shape, dtype=np.float32)
    out[0] = (brain.astype(bool) | (seg > 0)).astype(np.float32)
    out[1] = seg == 1
    out[2] = seg == 2
    out[3] = seg == 4
    return out


def decode_condition(cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Condition ``[4, H, W]`` -> (BraTS label map ``[H, W]`` int16, brain mask bool)."""
    if cond.ndim != 3 or cond.shape[0] != 4:
        raise ValueError(f"condition must be [4, H, W], got {cond.shape}")
    seg = np.zeros(cond.shape[1:], dtype=np.int16)
    seg[cond[2] > 0.5] = 2
    seg[cond[1] > 0.5] = 1
    seg[cond[3] > 0.5] = 4
    return seg, cond[0] > 0.5

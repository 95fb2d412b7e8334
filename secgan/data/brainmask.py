"""Where the brain is, without assuming that the background is zero.

Per modality, the background is read off the in-plane border of the volume (the four side faces):

- if one value fills at least half of the border, the background is that constant (0 in
  skull-stripped BraTS files and the phantom, some other value once a volume is z-scored or
  offset) and every voxel of another value is brain;
- otherwise the background is noise (a volume that was not skull-stripped or masked): its median
  plus ``NOISE_SIGMAS`` robust standard deviations is the threshold; if (almost) nothing rises above
  it, the border is not background at all and the whole frame counts as foreground.

The brain is the union over the loaded modalities. If it covers almost the whole frame
(:data:`FULL_FRAME_FRACTION` of some slice), the data is most likely not skull-stripped; the caller
warns.
"""

from __future__ import annotations

import numpy as np

CONSTANT_BORDER_FRACTION = 0.5
NOISE_SIGMAS = 5.0
FULL_FRAME_FRACTION = 0.9
EMPTY_FRACTION = 0.01


def _border(v: np.ndarray) -> np.ndarray:
    return np.concatenate([v[0].ravel(), v[-1].ravel(), v[:, 0].ravel(), v[:, -1].ravel()])


def volume_mask(v: np.ndarray) -> np.ndarray:
    """Foreground of one volume ``[X, Y, Z]``."""
    border = _border(v)
    values, counts = np.unique(border, return_counts=True)
    k = int(np.argmax(counts))
    if counts[k] >= CONSTANT_BORDER_FRACTION * border.size:
        return v != values[k]
    bg = float(np.median(border))
    sigma = 1.4826 * float(np.median(np.abs(border - bg)))
    spread = float(np.max(v) - np.min(v))
    mask = v > bg + max(NOISE_SIGMAS * sigma, 1e-6 * spread)
    if mask.mean() < EMPTY_FRACTION:  # the border is tissue: no separable background
        return np.ones(v.shape, dtype=bool)
    return mask


def brain_mask(volumes) -> np.ndarray:
    """Union of :func:`volume_mask` over ``volumes`` (an iterable of equal-shape arrays)."""
    mask = None
    for v in volumes:
        m = volume_mask(v)
        mask = m if mask is None else mask | m
    if mask is None:
        raise ValueError("no volume given")
    return mask


def frame_coverage(mask: np.ndarray) -> float:
    """Largest fraction of an axial slice (last axis) that the mask covers."""
    if mask.size == 0:
        return 0.0
    return float(mask.mean(axis=(0, 1)).max())

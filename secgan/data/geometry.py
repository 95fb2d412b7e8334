"""Geometry between a canonical case and its slices: a common voxel size, then a crop to the brain.

1. ``resample_case``: where a case's voxel sizes differ from the target (``data.voxel_mm``, 1 mm by
   default, what BraTS and MSD ship) by more than 1 %, intensities are resampled trilinearly and the
   label map with nearest neighbour onto the target grid, so a millimetre means the same number of
   pixels at every site. The affine is updated to the new grid.
2. ``brain_box``: the in-plane bounding box of the brain over the whole case, plus a margin,
   grown to a square and kept inside the frame. Every slice of a case gets the same box, and the
   label map and brain mask get the same crop as the images, before resizing to ``image.size``.
"""

from __future__ import annotations

import numpy as np

SPACING_RTOL = 0.01
# Margin around the brain's bounding box before resizing, in mm.
DEFAULT_CROP_MARGIN_MM = 8.0


def needs_resampling(zooms, target_mm: float) -> bool:
    return any(abs(float(z) - target_mm) > SPACING_RTOL * target_mm for z in zooms)


def resample_case(case, target_mm: float):
    """``case`` on a ``target_mm`` isotropic grid (the same object if it is already on one)."""
    import dataclasses

    import torch
    import torch.nn.functional as F

    if not needs_resampling(case.zooms, target_mm):
        return case
    shape = np.asarray(case.shape, dtype=float)
    new_shape = tuple(max(1, int(round(n * z / target_mm))) for n, z in zip(shape, case.zooms))
    names = list(case.volumes)
    with torch.no_grad():
        if names:
            t = torch.from_numpy(np.stack([case.volumes[m] for m in names]))[None]
            r = F.interpolate(t, size=new_shape, mode="trilinear", align_corners=False)[0].numpy()
            volumes = {m: np.ascontiguousarray(r[i], dtype=np.float32) for i, m in enumerate(names)}
        else:
            volumes = {}
        s = torch.from_numpy(case.seg.astype(np.float32))[None, None]
        seg = F.interpolate(s, size=new_shape, mode="nearest-exact")[0, 0].numpy().round().astype(np.int16)
    affine = np.array(case.affine, dtype=np.float64)
    scale = np.asarray(case.shape, dtype=float) / np.asarray(new_shape, dtype=float)
    # Voxel centres of the new grid (align_corners=False): i_old = (i_new + 0.5) * scale - 0.5.
    affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ (0.5 * scale - 0.5)
    affine[:3, :3] = affine[:3, :3] * scale[None, :]
    return dataclasses.replace(case, volumes=volumes, seg=seg, affine=affine,
                               zooms=(float(target_mm),) * 3)


def brain_box(mask: np.ndarray, margin_vox: int) -> tuple[slice, slice]:
    """In-plane (x, y) slices of the square box around the brain of ``mask`` [X, Y, Z], plus margin.

    The box stays inside the frame; where the square is larger than the frame along an axis, that
    axis keeps its full extent (the slices are padded to a square afterwards).
    """
    x_any = np.flatnonzero(mask.any(axis=(1, 2)))
    y_any = np.flatnonzero(mask.any(axis=(0, 2)))
    nx, ny = mask.shape[:2]
    if x_any.size == 0:
        return slice(0, nx), slice(0, ny)
    x0, x1 = int(x_any[0]) - margin_vox, int(x_any[-1]) + 1 + margin_vox
    y0, y1 = int(y_any[0]) - margin_vox, int(y_any[-1]) + 1 + margin_vox
    side = max(x1 - x0, y1 - y0)
    return _fit(x0, x1, side, nx), _fit(y0, y1, side, ny)


def _fit(lo: int, hi: int, side: int, n: int) -> slice:
    if side >= n:
        return slice(0, n)
    start = (lo + hi - side) // 2
    start = min(max(start, 0), n - side)
    return slice(start, start + side)

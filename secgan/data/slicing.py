"""One canonical, resampled case -> the 2-D training slices of a site: each volume normalised on its
own inside the brain, cropped to the brain (optionally), padded square, resized to ``image_size``
(labels nearest), tumour-bearing slices kept, label maps encoded as conditions."""

from __future__ import annotations

import numpy as np

from secgan.data import brainmask, geometry
from secgan.data.brats import Case
from secgan.core.spec import IMAGE_CHANNELS, REGIONS, encode_condition

# the intensity percentiles inside the brain that map to -1 and +1
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


def normalise_volume(vol: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Robust per-volume scaling: percentiles 0.5/99.5 inside ``mask`` -> [-1, 1]; outside exactly -1."""
    out = np.full(vol.shape, -1.0, dtype=np.float32)
    inside = vol[mask]
    if inside.size == 0:
        return out
    lo, hi = np.percentile(inside, [LOW_PERCENTILE, HIGH_PERCENTILE])
    scale = float(hi - lo)
    if not scale > 0:
        out[mask] = 0.0  # constant inside the brain: a flat mid-grey, still distinct from background
        return out
    out[mask] = np.clip((inside - lo) * (2.0 / scale) - 1.0, -1.0, 1.0)
    return out


def _to_square(a: np.ndarray, fill: float) -> np.ndarray:
    """Centre-pad the last two axes of ``a`` to a square."""
    x, y = a.shape[-2:]
    if x == y:
        return a
    side = max(x, y)
    px, py = side - x, side - y
    pad = [(0, 0)] * (a.ndim - 2) + [(px // 2, px - px // 2), (py // 2, py - py // 2)]
    return np.pad(a, pad, mode="constant", constant_values=fill)


def _resize_stack(a: np.ndarray, size: int, *, mode: str) -> np.ndarray:
    """Resize ``[N, C, h, w]`` to ``[N, C, size, size]`` with torch (area / bilinear / nearest)."""
    import torch
    import torch.nn.functional as F

    if a.shape[-1] == size and a.shape[-2] == size:
        return a
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if mode == "nearest":
        r = F.interpolate(t, size=(size, size), mode="nearest-exact")
    elif a.shape[-1] > size:
        r = F.interpolate(t, size=(size, size), mode="area")
    else:
        r = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return r.numpy()


def case_to_slices(
    case: Case,
    *,
    image_size: int,
    modalities: tuple[str, ...],
    min_tumour_pixels: int,
    crop_margin_vox: int | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A case -> (images ``[S,4,H,W]``, conds ``[S,4,H,W]``, segs ``[S,H,W]``) of its kept slices.

    ``crop_margin_vox``: crop in-plane to the brain's bounding box plus this margin first (None: no
    crop). ``mask``: the case's brain mask if already computed. Raises :class:`CaseError` if the case
    has no brain voxels; returns S = 0 if no slice qualifies.
    """
    if mask is None:
        mask = brainmask.brain_mask(case.volumes[m] for m in modalities)
    if not mask.any():
        raise CaseError(Path(case.case_id), "no brain voxels (every loaded modality is background)")
    vols = np.full((len(IMAGE_CHANNELS),) + case.shape, -1.0, dtype=np.float32)
    for m in modalities:
        vols[IMAGE_CHANNELS.index(m)] = normalise_volume(case.volumes[m], mask)
    seg = case.seg
    if crop_margin_vox is not None:
        bx, by = geometry.brain_box(mask | (seg > 0), crop_margin_vox)
        vols, seg, mask = vols[:, bx, by], seg[bx, by], mask[bx, by]
    # Axial slices along the last axis -> [Z, C, X, Y].
    imgs = np.moveaxis(vols, 3, 0)
    segs = np.moveaxis(seg, 2, 0)[:, None]
    masks = np.moveaxis(mask, 2, 0)[:, None].astype(np.float32)
    imgs, segs, masks = _to_square(imgs, -1.0), _to_square(segs, 0), _to_square(masks, 0.0)
    segs_r = np.rint(_resize_stack(segs.astype(np.float32), image_size, mode="nearest"))[:, 0].astype(np.int16)
    masks_r = _resize_stack(masks, image_size, mode="nearest")[:, 0] > 0.5
    tumour = np.isin(segs_r, REGIONS["wt"]).sum(axis=(1, 2))  # the resection cavity is not tumour
    if min_tumour_pixels > 0:
        keep = np.flatnonzero(tumour >= min_tumour_pixels)
    else:
        keep = np.flatnonzero(masks_r.any(axis=(1, 2)))
    if keep.size == 0:
        s = image_size
        return np.zeros((0, 4, s, s), np.float32), np.zeros((0, 4, s, s), np.float32), np.zeros((0, s, s), np.int16)
    imgs_r = _resize_stack(imgs[keep], image_size, mode="smooth").astype(np.float32)
    segs_k, masks_k = segs_r[keep], masks_r[keep] | (segs_r[keep] > 0)
    imgs_r = np.clip(imgs_r, -1.0, 1.0)
    imgs_r[np.broadcast_to(~masks_k[:, None], imgs_r.shape)] = -1.0
    conds = np.stack([encode_condition(s, b) for s, b in zip(segs_k, masks_k)])
    return imgs_r, conds, segs_k

"""In-memory phantom patients for audit tests (same pixels load_site would give, no NIfTI round trip)."""

from __future__ import annotations

import numpy as np

from secgan.data.brats import Case
from secgan.data.dataset import case_to_slices
from secgan.data.phantom import synthesize_case
from secgan.core.spec import IMAGE_CHANNELS


def phantom_slices(
    patients: range | list[int], *, seed: int = 7, site: int = 1, size: int = 16, slices: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [N,4,H,W], conds [N,4,H,W], patient index [N]) for the listed phantom patients."""
    ims, cos, grp = [], [], []
    for k, p in enumerate(patients):
        vols, seg, aff = synthesize_case(seed, site, p, size=size, slices=slices)
        case = Case(f"P{p}", {m: v.astype(np.float32) for m, v in vols.items()}, seg.astype(np.int16), aff)
        im, co, _ = case_to_slices(case, image_size=size, modalities=IMAGE_CHANNELS, min_tumour_pixels=1)
        ims.append(im)
        cos.append(co)
        grp.append(np.full(len(im), k, dtype=np.int64))
    return np.concatenate(ims), np.concatenate(cos), np.concatenate(grp)


def copies_of(images: np.ndarray, n: int, *, rng: np.random.Generator) -> np.ndarray:
    """A 'generator' that memorised: exact copies, lightly noised, flipped and shifted training slices."""
    idx = rng.choice(len(images), size=n, replace=n > len(images))
    out = images[idx].copy()
    kind = np.arange(n) % 4
    out[kind == 1] += rng.normal(0, 0.02, size=out[kind == 1].shape).astype(np.float32)
    out[kind == 2] = out[kind == 2][..., ::-1]
    out[kind == 3] = np.roll(out[kind == 3], shift=2, axis=-1)
    return np.clip(out, -1, 1).astype(np.float32)

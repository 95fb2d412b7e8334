"""In-memory phantom patients for audit tests (same pixels load_site would give, no NIfTI round trip)."""

from __future__ import annotations

import numpy as np

from secgan.data.phantom import phantom_slices as slice_phantom


def phantom_slices(
    patients: range | list[int], *, seed: int = 7, site: int = 1, size: int = 16, slices: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [N,4,H,W], conds [N,4,H,W], patient index [N]) for the listed phantom patients."""
    return slice_phantom(patients, seed=seed, site=site, size=size, slices=slices, min_tumour_pixels=1)


def copies_of(images: np.ndarray, n: int, *, rng: np.random.Generator) -> np.ndarray:
    """A 'generator' that memorised: exact copies, lightly noised, flipped and shifted training slices."""
    idx = rng.choice(len(images), size=n, replace=n > len(images))
    out = images[idx].copy()
    kind = np.arange(n) % 4
    out[kind == 1] += rng.normal(0, 0.02, size=out[kind == 1].shape).astype(np.float32)
    out[kind == 2] = out[kind == 2][..., ::-1]
    out[kind == 3] = np.roll(out[kind == 3], shift=2, axis=-1)
    return np.clip(out, -1, 1).astype(np.float32)


def warped_copies(images: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """A generator that memorised and disguised: every slice under a small random affine map (rotation
    up to 5 degrees, scale 5%, shift 1.5 px), a smooth elastic displacement (0.5 px), intensity gain
    (10%) and gamma (20%), and noise (0.03 of the half-range)."""
    import torch
    from torch.nn import functional as F

    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    n, size = len(x), x.shape[-1]
    a = np.radians(rng.uniform(-5, 5, n))
    s = rng.uniform(0.95, 1.05, n)
    t = rng.uniform(-1.5, 1.5, (n, 2)) * 2 / size
    theta = torch.tensor(np.stack([np.stack([s * np.cos(a), -s * np.sin(a), t[:, 0]], 1),
                                   np.stack([s * np.sin(a), s * np.cos(a), t[:, 1]], 1)], 1), dtype=torch.float32)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    disp = torch.as_tensor(rng.normal(0, 1, (n, 2, 4, 4)), dtype=torch.float32)
    disp = F.interpolate(disp, size=x.shape[-2:], mode="bicubic", align_corners=False).permute(0, 2, 3, 1) * (1.0 / size)
    y = F.grid_sample(x, grid + disp, padding_mode="border", align_corners=False).numpy()
    gain, gamma = rng.uniform(0.9, 1.1, (n, 1, 1, 1)), rng.uniform(0.8, 1.2, (n, 1, 1, 1))
    y = (np.clip((y + 1) / 2, 0, 1) ** gamma) * gain * 2 - 1 + rng.normal(0, 0.03, y.shape)
    return np.clip(y, -1, 1).astype(np.float32)

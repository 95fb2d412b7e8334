"""Missing-modality completion: a site without one modality gets it from the generator.

For each slice, G is asked for ``draws`` images of the slice's label map (different z); the draw
whose *present* channels are closest to the slice's real ones (mean squared error inside the
brain) supplies the missing channel. So the completed channel is the generator's rendering of that
anatomy and tumour, matched in contrast to what the site did measure.

The label map must be available without the ground truth at test time: the caller passes label
maps from a segmenter that works without the channel (:func:`conds_from_regions`), never the test
patients' reference labels, which would leak the answer into the input.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from secgan.evaluation.metrics import regions_to_labels
from secgan.evaluation.quality import brain_mask
from secgan.core.spec import IMAGE_CHANNELS, encode_condition


def conds_from_regions(regions: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Predicted region masks ``[N,3,H,W]`` + the slices -> condition maps ``[N,4,H,W]``.

    The brain channel is the union of the present channels' tissue (any value above background).
    """
    brains = brain_mask(images)
    return np.stack(
        [encode_condition(regions_to_labels(r), b) for r, b in zip(np.asarray(regions), brains)]
    ).astype(np.float32)


def complete_modality(
    G,
    images: np.ndarray,
    conds: np.ndarray,
    *,
    missing: Sequence[str],
    draws: int = 4,
    seed: int,
    batch_size: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """A copy of ``images`` whose ``missing`` channels are filled by the best of ``draws`` G samples."""
    import torch

    if draws < 1:
        raise ValueError("draws must be >= 1")
    miss = [IMAGE_CHANNELS.index(m) for m in missing]
    present = [c for c in range(len(IMAGE_CHANNELS)) if c not in miss]
    if not miss or not present:
        raise ValueError("need at least one missing and one present modality")
    images = np.asarray(images, np.float32)
    out = images.copy()
    gen = torch.Generator().manual_seed(seed)
    noise_dim = int(G.noise_dim)
    G = G.to(device).eval()
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.array(images[s : s + batch_size], dtype=np.float32)).to(device)
            c = torch.from_numpy(np.array(conds[s : s + batch_size], dtype=np.float32)).to(device)
            brain = (c[:, :1] > 0.5).float()
            best = None
            best_err = None
            for _ in range(draws):
                z = torch.randn(len(x), noise_dim, generator=gen).to(device)
                fake = G(c, z)
                err = (((fake[:, present] - x[:, present]) ** 2) * brain).sum(dim=(1, 2, 3))
                if best is None:
                    best, best_err = fake, err
                else:
                    better = err < best_err
                    best = torch.where(better[:, None, None, None], fake, best)
                    best_err = torch.minimum(err, best_err)
            filled = torch.where(brain > 0, best, torch.full_like(best, -1.0))  # background stays -1
            out[s : s + batch_size][:, miss] = filled[:, miss].cpu().numpy()
    return out

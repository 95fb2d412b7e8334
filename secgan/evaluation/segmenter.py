"""The downstream task: a 2-D MONAI U-Net that segments the three tumour regions of a slice.

It predicts one sigmoid channel per region of :data:`secgan.core.spec.REGIONS` (whole tumour, tumour
core, enhancing tumour), the BraTS region-based formulation, trained with Dice + BCE. The same
recipe is used for every training source so that only the data differs between settings.

Determinism: weights are initialised inside ``torch.random.fork_rng`` after seeding it there (MONAI
builds its layers from the global RNG), so the caller's global RNG state is untouched; batch
order and flips come from a ``torch.Generator`` seeded from the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from secgan.core.config import choices, rng
from secgan.evaluation.metrics import region_masks, score_patients
from secgan.core.spec import REGIONS


@dataclass(frozen=True)
class SegmenterConfig:
    """U-Net shape and optimisation of the downstream segmenter."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = field(default=1, metadata=rng(min=0, max=4))
    epochs: int = field(default=10, metadata=rng(min=0, max=10_000))
    batch_size: int = field(default=32, metadata=rng(min=1, max=4096))
    lr: float = field(default=2e-3, metadata=rng(min=0.0, max=1.0, min_exclusive=True))
    # random left-right flips of training slices (drawn from the seeded generator)
    flip: bool = True
    # count epochs over Real-All's train slices, so every source gets the same number of optimiser
    # steps (a small source is not under-trained, a large one not favoured by more updates)
    equal_steps: bool = True
    device: str = field(default="cpu", metadata=choices("cpu", "cuda"))

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise ValueError("channels needs at least two positive widths")

    @property
    def strides(self) -> tuple[int, ...]:
        return (2,) * (len(self.channels) - 1)

    def check_fits(self, image_size: int) -> None:
        down = 1 << len(self.strides)
        if image_size % down:
            raise ValueError(f"image size {image_size} is not divisible by {down} (U-Net depth {len(self.channels)})")


def build_unet(config: SegmenterConfig, *, seed: int, in_channels: int = 4, out_channels: int = len(REGIONS)):
    """A fresh U-Net, initialised deterministically from ``seed`` without touching the global RNG.

    ``in_channels`` / ``out_channels``: 4 modalities and 3 tumour regions unless a caller says
    otherwise (the nuclei U-Net: RGB in, foreground / interior / boundary out)."""
    import torch
    from monai.networks.nets import UNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # hygiene-ok: inside fork_rng, restored on exit (MONAI inits from the global RNG)
        return UNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(config.channels),
            strides=config.strides,
            num_res_units=config.num_res_units,
            norm="INSTANCE",
        )


def _brain_slices(images: np.ndarray) -> np.ndarray:
    """Indices of slices with any tissue (any channel above the -1 background)."""
    return np.flatnonzero((images > -0.99).reshape(len(images), -1).any(axis=1))


def train_segmenter(
    images: np.ndarray,
    segs: np.ndarray,
    *,
    config: SegmenterConfig,
    seed: int,
    steps: int | None = None,
    progress: Callable[[int, float], None] | None = None,
    masks: Callable[[np.ndarray], np.ndarray] = region_masks,
    in_channels: int = 4,
):
    """Train a U-Net on slices ``images [N,4,H,W]`` (in [-1, 1]) with BraTS label maps ``segs [N,H,W]``.

    ``masks`` turns label maps ``[N,H,W]`` into the target masks ``[R,N,H,W]`` of the R sigmoid outputs
    (default: the tumour regions); ``images`` must have ``in_channels`` channels (default: the 4 modalities).

    ``config.epochs`` passes over the data, or exactly ``steps`` optimiser steps when given (passes
    in fresh random orders until done). Slices with no tissue at all are dropped (they teach nothing
    and cost time). Returns the model in eval mode on ``config.device``.
    """
    import torch
    from monai.losses import DiceLoss

    images = np.asarray(images, dtype=np.float32)
    segs = np.asarray(segs)
    if images.ndim != 4 or images.shape[1] != in_channels or segs.shape != (images.shape[0],) + images.shape[2:]:
        raise ValueError(f"images must be [N,{in_channels},H,W] and segs [N,H,W]; got {images.shape} and {segs.shape}")
    config.check_fits(images.shape[-1])
    keep = _brain_slices(images)
    x_all = torch.from_numpy(np.ascontiguousarray(images[keep]))
    y_all = torch.from_numpy(np.ascontiguousarray(np.moveaxis(masks(segs[keep]), 0, 1)).astype(np.float32))
    model = build_unet(config, seed=seed, in_channels=images.shape[1], out_channels=y_all.shape[1]).to(config.device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    dice = DiceLoss(sigmoid=True, batch=True)
    bce = torch.nn.BCEWithLogitsLoss()
    n = len(keep)
    if n == 0:
        raise ValueError("no training slice contains any tissue")
    per_epoch = -(-n // config.batch_size)
    budget = config.epochs * per_epoch if steps is None else int(steps)
    done = 0
    epoch = 0
    model.train()
    while done < budget:
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, config.batch_size):
            if done >= budget:
                break
            done += 1
            idx = order[start : start + config.batch_size]
            x, y = x_all[idx], y_all[idx]
            if config.flip:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                y = torch.where(flip[:, None, None, None], y.flip(-1), y)
            x, y = x.to(config.device), y.to(config.device)
            logits = model(x)
            loss = dice(logits, y) + bce(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if progress is not None:
            progress(epoch, total / max(n, 1))
        epoch += 1
    model.eval()
    return model


def step_budget(config: SegmenterConfig, reference_slices: int) -> int:
    """Optimiser steps of ``config.epochs`` passes over ``reference_slices`` slices."""
    return config.epochs * -(-max(1, reference_slices) // config.batch_size)


def predict_regions(model, images: np.ndarray, *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Region masks ``[N, R, H, W]`` (bool, R outputs: 3 regions) predicted for slices ``images [N, C, H, W]``."""
    import torch

    images = np.asarray(images, dtype=np.float32)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.array(images[start : start + batch_size], dtype=np.float32)).to(device)
            parts.append((model(x) > 0).cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, len(REGIONS)) + images.shape[2:], dtype=bool)


@dataclass(frozen=True)
class HeldOutPatient:
    """One held-out patient: its slices and label maps. Identified by position only (no case id)."""

    images: np.ndarray  # [S, 4, H, W]
    segs: np.ndarray  # [S, H, W]


def evaluate_segmenter(model, patients: Sequence[HeldOutPatient], *, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Per-region mean Dice and HD95 over ``patients``, each scored on its whole slice stack."""
    preds, truths = [], []
    for p in patients:
        pred = predict_regions(model, p.images, device=device)  # [S, 3, H, W]
        preds.append(np.moveaxis(pred, 1, 0))
        truths.append(region_masks(p.segs))
    return score_patients(preds, truths)

"""A small CNN classifier for train-on-synthetic / test-on-real (TSTR) scores.

A few 3x3 conv blocks (conv, group norm, ReLU, 2x2 max pool), global average pooling and a linear
head, trained with Adam on class-weighted cross entropy (weights inversely proportional to the
training class counts, because the dermatology classes are strongly imbalanced). Everything random
comes from ``seed`` (initialisation, order, flips), never the global RNG. Scored by
:mod:`secgan.evaluation.classify_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from secgan.core.config import choices, rng
from secgan.evaluation.classify_metrics import ClassifyScores, classify_scores


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape and optimisation of the TSTR classifier."""

    channels: tuple[int, ...] = (16, 32, 64)
    epochs: int = field(default=15, metadata=rng(min=0, max=10_000))
    batch_size: int = field(default=32, metadata=rng(min=1, max=4096))
    lr: float = field(default=2e-3, metadata=rng(min=0.0, max=1.0, min_exclusive=True))
    # random horizontal and vertical flips of training images (a lesion has no up or left)
    flip: bool = True
    # cross entropy weighted by inverse training class frequency
    class_weighted: bool = True
    device: str = field(default="cpu", metadata=choices("cpu", "cuda"))

    def __post_init__(self) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError("channels needs at least one positive width")


def build_classifier(config: ClassifierConfig, *, in_channels: int, classes: int, seed: int):
    """A fresh classifier, initialised from ``seed`` without touching the global RNG."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # hygiene-ok: inside fork_rng, restored on exit (torch inits from the global RNG)
        layers: list[nn.Module] = []
        width = in_channels
        for c in config.channels:
            layers += [nn.Conv2d(width, c, 3, padding=1), nn.GroupNorm(min(8, c), c), nn.ReLU(), nn.MaxPool2d(2)]
            width = c
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


def train_classifier(images: np.ndarray, labels: np.ndarray, *, classes: int, config: ClassifierConfig, seed: int,
                     steps: int | None = None):
    """Train on ``images [N, C, H, W]`` (float32) with ``labels [N]`` in 0..classes-1; eval-mode model."""
    import torch

    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if images.ndim != 4 or labels.shape != (len(images),) or not len(images):
        raise ValueError(f"images must be [N, C, H, W] and labels [N] (N >= 1); got {images.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must be integers in 0..{classes - 1}")
    x_all = torch.from_numpy(np.ascontiguousarray(images))
    y_all = torch.from_numpy(labels.astype(np.int64))
    model = build_classifier(config, in_channels=images.shape[1], classes=classes, seed=seed).to(config.device)
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weight = np.where(counts > 0, counts.sum() / (classes * np.maximum(counts, 1)), 0.0) if config.class_weighted else np.ones(classes)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight, dtype=torch.float32, device=config.device))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(images)
    budget = config.epochs * -(-n // config.batch_size) if steps is None else int(steps)
    done = 0
    model.train()
    while done < budget:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.batch_size):
            if done >= budget:
                break
            done += 1
            idx = order[start : start + config.batch_size]
            x, y = x_all[idx], y_all[idx]
            if config.flip:
                for axis in (-1, -2):
                    flip = torch.rand(len(idx), generator=gen) < 0.5
                    x = torch.where(flip[:, None, None, None], x.flip(axis), x)
            x, y = x.to(config.device), y.to(config.device)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model


def predict_proba(model, images: np.ndarray, *, batch_size: int = 128, device: str = "cpu") -> np.ndarray:
    """Class probabilities ``[N, K]`` (softmax) for ``images [N, C, H, W]``."""
    import torch

    images = np.asarray(images, dtype=np.float32)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            parts.append(torch.softmax(model(x), dim=1).cpu().numpy().astype(np.float64))
    if not parts:
        raise ValueError("no image to classify")
    return np.concatenate(parts)


def tstr_scores(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                *, classes: int, config: ClassifierConfig, seed: int, steps: int | None = None) -> ClassifyScores:
    """Train on (synthetic) ``train_*``, score on (real) ``test_*``: balanced accuracy, macro AUC, recalls."""
    model = train_classifier(train_images, train_labels, classes=classes, config=config, seed=seed, steps=steps)
    return classify_scores(predict_proba(model, test_images, device=config.device), np.asarray(test_labels))

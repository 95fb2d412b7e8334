"""Image quality besides Dice: intensity histograms and feature-space precision/recall.

- Per-modality intensity distance: Wasserstein-1 between the intensities inside the brain of real
  and synthetic slices (the images live in [-1, 1], so the distance is in those units; 0 is equal
  distributions, 2 the largest possible).
- Precision/recall in a feature space (Kynkaenniemi et al. 2019): each set's manifold is the union
  of balls around its points with radius the distance to the k-th nearest neighbour in the same
  set; precision is the fraction of synthetic points inside the real manifold (fidelity), recall the
  fraction of real points inside the synthetic manifold (coverage).
- The feature space is a small CNN trained here on the real training slices (no downloaded
  weights): it regresses the area fractions of brain, necrosis, oedema and enhancing tumour, so
  its pooled features describe anatomy and tumour appearance. Features are standardised with the
  real set's statistics before distances are taken.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import wasserstein_distance

from secgan.core.spec import IMAGE_CHANNELS


def brain_mask(images: np.ndarray) -> np.ndarray:
    """``[N,4,H,W]`` -> ``[N,H,W]``: any channel above the -1 background."""
    return (np.asarray(images) > -0.99).any(axis=1)


def intensity_distances(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    generator: np.random.Generator,
    max_values: int = 200_000,
    modalities: Sequence[str] = IMAGE_CHANNELS,
) -> dict[str, float]:
    """Wasserstein-1 per modality between brain intensities of ``real`` and ``fake`` ``[N,4,H,W]``.

    At most ``max_values`` intensities per side are used (subsampled with ``generator``).
    """
    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    mr, mf = brain_mask(real), brain_mask(fake)
    out = {}
    for m in modalities:
        c = IMAGE_CHANNELS.index(m)
        a, b = real[:, c][mr], fake[:, c][mf]
        if a.size == 0 or b.size == 0:
            raise ValueError(f"no brain voxels to compare for {m}")
        if a.size > max_values:
            a = generator.choice(a, size=max_values, replace=False)
        if b.size > max_values:
            b = generator.choice(b, size=max_values, replace=False)
        out[m] = float(wasserstein_distance(a, b))
    return out


def _kth_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row."""
    d = _pairwise(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Fraction of ``points`` within radius of at least one centre."""
    d = _pairwise(points, centres)
    return float((d <= radii[None, :]).any(axis=1).mean())


def precision_recall(real_features: np.ndarray, fake_features: np.ndarray, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) of ``fake`` against ``real``."""
    r = np.asarray(real_features, np.float64)
    f = np.asarray(fake_features, np.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"features must be [N, D] with equal D; got {r.shape} and {f.shape}")
    if min(len(r), len(f)) <= k:
        raise ValueError(f"need more than k={k} points on each side, got {len(r)} real and {len(f)} fake")
    precision = _coverage(f, r, _kth_radii(r, k))
    recall = _coverage(r, f, _kth_radii(f, k))
    return precision, recall


def _embedding_net(width: int):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(4, width, 3, stride=2, padding=1),
        nn.GroupNorm(4, width),
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.GroupNorm(4, 2 * width),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
        nn.GroupNorm(4, 4 * width),
        nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class Embedding:
    """A feature extractor trained on real slices only (see module docstring)."""

    def __init__(self, net, mean: np.ndarray, std: np.ndarray) -> None:
        self._net = net
        self._mean = mean
        self._std = std

    @classmethod
    def train(
        cls,
        images: np.ndarray,
        conds: np.ndarray,
        *,
        seed: int,
        epochs: int = 5,
        width: int = 16,
        batch_size: int = 32,
    ) -> "Embedding":
        import torch
        from torch import nn

        x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        y_all = torch.from_numpy(np.asarray(conds, np.float32).mean(axis=(2, 3)) * 10.0)  # area fractions, scaled
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # hygiene-ok: inside fork_rng, restored on exit
            body = _embedding_net(width)
            head = nn.Linear(4 * width, 4)
        model = nn.Sequential(body, head)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        for _ in range(epochs):
            order = torch.randperm(len(x_all), generator=gen)
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                loss = nn.functional.mse_loss(model(x_all[idx]), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        body.eval()
        raw = cls._raw(body, images)
        mean, std = raw.mean(0), raw.std(0) + 1e-6
        return cls(body, mean, std)

    @staticmethod
    def _raw(net, images: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for s in range(0, len(images), 256):
                out.append(net(torch.from_numpy(np.ascontiguousarray(images[s : s + 256], dtype=np.float32))).numpy())
        return np.concatenate(out).astype(np.float64)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return (self._raw(self._net, images) - self._mean) / self._std


def image_quality(
    real_train: tuple[np.ndarray, np.ndarray],
    real_test: np.ndarray,
    fake: np.ndarray,
    *,
    seed: int,
    k: int = 3,
    max_points: int = 2000,
) -> dict[str, float]:
    """Quality of synthetic slices ``fake`` against real held-out slices ``real_test``.

    ``real_train`` = (images, conds) trains the embedding. Returns ``w1_<modality>``, ``w1_mean``,
    ``precision`` and ``recall``; at most ``max_points`` slices a side enter precision/recall.
    """
    g = np.random.default_rng(seed)
    w1 = intensity_distances(real_test, fake, generator=g)
    emb = Embedding.train(real_train[0], real_train[1], seed=seed)
    rt = real_test[g.permutation(len(real_test))[:max_points]]
    ft = fake[g.permutation(len(fake))[:max_points]]
    precision, recall = precision_recall(emb(rt), emb(ft), k=k)
    out = {f"w1_{m}": v for m, v in w1.items()}
    out["w1_mean"] = float(np.mean(list(w1.values())))
    out["precision"] = precision
    out["recall"] = recall
    return out

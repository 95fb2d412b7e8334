"""Fidelity and diversity of synthetic images: improved precision and recall (Kynkäänniemi et al.,
NeurIPS 2019, "Improved precision and recall metric for assessing generative models").

Both sets are feature vectors (any embedding: the caller chooses, e.g. the audits' learned
embedding or raw pixels). Each set's manifold is the union of balls around its points, the radius of
a point being the distance to its k-th nearest neighbour in its own set (the point itself excluded).

- precision: the share of synthetic points inside the real manifold (fidelity);
- recall: the share of real points inside the synthetic manifold (diversity).

A point is inside when its distance to some centre is <= that centre's radius (the paper's closed
ball). Euclidean distances, computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_K = 3


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(d2, 0.0, None))


def knn_radii(points: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest other point of the same set."""
    d = _distances(points, points)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _coverage(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    d = _distances(queries, centres)
    # exact duplicates come out of the Gram expansion as tiny positives: compare with a relative tolerance
    tol = 1e-9 * (1.0 + radii[None, :])
    return float((d <= radii[None, :] + tol).any(axis=1).mean())


def precision_recall(real, fake, *, k: int = DEFAULT_K) -> PrecisionRecall:
    """Improved precision and recall of ``fake`` [M, D] against ``real`` [N, D] (module docstring)."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real {real.shape} and fake {fake.shape} must be [N, D] feature arrays of one D")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"each set needs more than k={k} points, got {len(real)} real and {len(fake)} fake")
    if not (np.isfinite(real).all() and np.isfinite(fake).all()):
        raise ValueError("features must be finite")
    precision = _coverage(fake, real, knn_radii(real, k))
    recall = _coverage(real, fake, knn_radii(fake, k))
    return PrecisionRecall(precision=precision, recall=recall, k=k, n_real=len(real), n_fake=len(fake))

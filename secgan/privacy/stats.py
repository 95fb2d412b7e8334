"""Pure math of the one-shot DP summary statistics a site may release (``policy.release_stats``).

Per training patient, per pixel class (``STATS_CLASSES``: the semantic D's classes without the
background) and per modality (the 4 image channels), the patient's mean intensity and mean squared
intensity over its slices, plus an indicator that the patient has that class at all. One patient is
one vector (``patient_vector``), clipped to L2 norm C (``clip_rows``), so adding or removing a patient
moves the sum by at most C: the Gaussian mechanism with std sigma * C on that sum is one
(sigma, q = 1, 1 step) entry of the ledger's history. ``debias`` turns the noised sum into
per-class, per-modality means and standard deviations (post-processing, free).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from secgan.core.errors import PrivacyError
from secgan.gan.models import SEMANTIC_CLASSES, semantic_labels

# the semantic D's pixel classes without "background" (index 0 there): class c is label c + 1
STATS_CLASSES = SEMANTIC_CLASSES[1:]
MODALITIES = 4
# per class: [indicator, mean of each modality, mean square of each modality]
PER_CLASS = 1 + 2 * MODALITIES
DIM = len(STATS_CLASSES) * PER_CLASS


def patient_vector(images: np.ndarray, conds: np.ndarray) -> np.ndarray:
    """One patient's unclipped statistics vector (length ``DIM``) from its slices.

    ``images``: [S, 4, H, W] intensities; ``conds``: [S, 4, H, W] one-hot label maps. A class the
    patient lacks contributes zeros (its indicator is 0)."""
    img = np.asarray(images, dtype=np.float64)
    if img.ndim != 4 or img.shape[1] != MODALITIES or np.shape(conds)[:1] + np.shape(conds)[2:] != img.shape[:1] + img.shape[2:]:
        raise PrivacyError(f"patient_vector: images [S, 4, H, W] and conds of the same shape, got {img.shape}, {np.shape(conds)}")
    lab = semantic_labels(torch.as_tensor(np.array(conds, dtype=np.float32))).numpy()
    out = np.zeros(DIM)
    for c in range(len(STATS_CLASSES)):
        mask = lab == c + 1
        n = int(mask.sum())
        if n == 0:
            continue
        px = img.transpose(1, 0, 2, 3)[:, mask]  # [4, n]
        base = c * PER_CLASS
        out[base] = 1.0
        out[base + 1: base + 1 + MODALITIES] = px.mean(axis=1)
        out[base + 1 + MODALITIES: base + PER_CLASS] = (px ** 2).mean(axis=1)
    return out


def clip_rows(vectors: np.ndarray, clip_norm: float) -> np.ndarray:
    """Each row scaled to L2 norm at most ``clip_norm`` (rows already within it unchanged)."""
    if not (isinstance(clip_norm, (int, float)) and math.isfinite(clip_norm) and clip_norm > 0):
        raise PrivacyError(f"stats_clip_norm must be a finite number > 0, got {clip_norm!r}")
    v = np.asarray(vectors, dtype=np.float64).reshape(-1, DIM)
    if not np.all(np.isfinite(v)):
        raise PrivacyError("patient statistics are not finite")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v * np.minimum(1.0, clip_norm / np.maximum(norms, 1e-300))


def clipped_sum(vectors: np.ndarray, clip_norm: float) -> np.ndarray:
    """The pre-noise sum: one patient moves it by at most ``clip_norm`` (L2)."""
    return clip_rows(vectors, clip_norm).sum(axis=0)


def noised_sum(vectors: np.ndarray, *, clip_norm: float, noise_multiplier: float, generator: np.random.Generator) -> np.ndarray:
    """Clipped sum plus N(0, (noise_multiplier * clip_norm)^2) per coordinate, from ``generator``."""
    if not isinstance(generator, np.random.Generator):
        raise PrivacyError("noised_sum needs an explicit numpy Generator (never the global RNG)")
    if not (isinstance(noise_multiplier, (int, float)) and math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise PrivacyError(f"stats noise_multiplier must be a finite number > 0, got {noise_multiplier!r}")
    s = clipped_sum(vectors, clip_norm)
    return s + generator.normal(0.0, noise_multiplier * clip_norm, size=s.shape)


def stats_noise_multiplier(*, stats_epsilon: float, delta: float, accountant: str) -> float:
    """sigma of the one-shot Gaussian release (q = 1, one step) that spends ``stats_epsilon``."""
    from secgan.privacy.accounting import calibrate_noise

    return calibrate_noise(target_epsilon=stats_epsilon, delta=delta, sample_rate=1.0, steps=1, accountant=accountant)


def debias(noised: np.ndarray, *, min_count: float = 1.0) -> dict[str, np.ndarray]:
    """Per-class, per-modality mean and std from a noised sum (post-processing).

    mean = sum(mean) / sum(indicator); var = sum(square) / sum(indicator) - mean^2, floored at 0;
    the noisy count is floored at ``min_count``. Means are clamped to [-1, 1] (the image range).
    Returns ``mean`` and ``std`` of shape [classes, 4] and ``count`` [classes]."""
    v = np.asarray(noised, dtype=np.float64).reshape(len(STATS_CLASSES), PER_CLASS)
    count = np.maximum(v[:, 0], min_count)
    mean = np.clip(v[:, 1:1 + MODALITIES] / count[:, None], -1.0, 1.0)
    second = v[:, 1 + MODALITIES:] / count[:, None]
    var = np.maximum(second - mean ** 2, 0.0)
    return {"mean": mean, "std": np.sqrt(var), "count": v[:, 0]}

"""Latent projection distances as an authenticity check (the decentralised dermatology study's use).

Each real image is projected into the frozen generator under its own condition
(:func:`secgan.gan.inversion.invert`: Adam on z from a few random starts) and its distance to the
best reconstruction is measured:

- ``pixels``: the mean squared error over the image's value range, MSE / (high - low)^2, so 0 is
  an exact reconstruction and the figure does not depend on the range ([0, 1] RGB, [-1, 1] MRI);
- ``features``: the Euclidean distance between ``features(x)`` and ``features(G(c, z*))`` for a
  caller's embedding (e.g. the audits' contrastive encoder, ``Embedding.transform``). The projection
  itself always minimises pixel error; only the distance reported is measured in that space.

A generator that memorised its training images reconstructs them more closely than held-out images
of the same distribution. :func:`check_distances` compares the two sets the way the audits speak of
membership (member = training = positive, score = minus the distance): AUC = P(held-out distance >
training distance), ties counting half. 0.5 is no evidence; 1 is every training image closer than
every held-out one. The interval is DeLong's (rank-based, normal approximation), the p-value the
one-sided Mann-Whitney test of "held-out farther". Verdicts: ``memorisation`` (interval above 0.5
and p below 1 - confidence), ``no evidence``, or ``inconclusive`` first when the sets are too small
for any separation to be significant. With patient ids, each patient counts once (its closest
image), as the audits pool per patient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import stats as _st

from secgan.core.errors import DataError
from secgan.core.spec import ImageSpec
from secgan.gan.inversion import DEFAULT_BATCH, DEFAULT_LR, DEFAULT_RESTARTS, DEFAULT_STEPS, frozen, invert

DISTANCES = ("pixels", "features")
VERDICTS = ("memorisation", "no evidence", "inconclusive")
# slack on the spec's value range for images read from files (rounding of 8-bit values and the like)
RANGE_SLACK = 1e-3


@dataclass(frozen=True)
class Projection:
    """The projection of N images: the distance of each in ``space`` and the z found."""

    distances: np.ndarray  # [N] float64
    z: np.ndarray  # [N, noise_dim] float32
    space: str


@dataclass(frozen=True)
class ProjectionCheck:
    """Training against held-out projection distances (module doc)."""

    space: str
    unit: str  # "image" or "patient" (closest image per patient)
    n_train: int
    n_heldout: int
    train_mean: float
    train_median: float
    heldout_mean: float
    heldout_median: float
    gap: float  # heldout_mean - train_mean: > 0 when held-out images are reconstructed worse
    auc: float  # P(held-out distance > training distance), ties half
    auc_ci: tuple[float, float]
    p_value: float  # one-sided Mann-Whitney, held-out farther
    confidence: float
    verdict: str

    def summary(self) -> str:
        lo, hi = self.auc_ci
        note = {"memorisation": "training images are reconstructed closer than held-out ones",
                "no evidence": "no evidence of memorisation",
                "inconclusive": "too few to resolve: no separation could be significant"}[self.verdict]
        if self.verdict == "no evidence" and hi < 0.5:
            note += " (held-out closer than training: check the split)"
        return (f"projection ({self.space}, per {self.unit}): {self.verdict}: AUC {self.auc:.3f} "
                f"[{lo:.3f}, {hi:.3f}] at {self.confidence:.0%}, p = {self.p_value:.3g}; median distance "
                f"train {self.train_median:.4g} vs held-out {self.heldout_median:.4g} "
                f"(n = {self.n_train} vs {self.n_heldout}): {note}")


# ---------------------------------------------------------------------------------------------
# projection


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _floats(name: str, data: object) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    a = np.asarray(data)
    if not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"{name}: dtype {a.dtype} is not floating point (scale images into the spec's value range)")
    return a.astype(np.float32, copy=False)


def check_inputs(images, conds, image: ImageSpec, *, name: str = "images") -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, *image.image_shape]`` in the spec's value range and conditions
    ``[N, *image.cond_shape]`` as the spec has them, as float32; DataError naming what is wrong."""
    if not isinstance(image, ImageSpec):
        raise ValueError(f"image must be an ImageSpec, got {type(image).__name__}")
    x = _floats(name, images)
    c = _floats(f"{name} conditions", conds)
    if x.ndim != 4 or x.shape[1:] != image.image_shape:
        raise DataError(f"{name}: shape {x.shape}, expected [N, {', '.join(map(str, image.image_shape))}] "
                        f"for the image spec")
    if len(x) == 0:
        raise DataError(f"{name}: no images")
    if c.shape != (len(x),) + image.cond_shape:
        raise DataError(f"{name} conditions: shape {c.shape}, expected {(len(x),) + image.cond_shape} "
                        f"(one {image.condition!r} condition per image)")
    if not np.isfinite(x).all():
        raise DataError(f"{name}: NaN or infinite values")
    lo, hi = (float(v) for v in image.value_range)
    slack = RANGE_SLACK * (hi - lo)
    if float(x.min()) < lo - slack or float(x.max()) > hi + slack:
        raise DataError(f"{name}: values span [{float(x.min()):.4g}, {float(x.max()):.4g}], outside the spec's "
                        f"value range [{lo:g}, {hi:g}]")
    if c.size and (not np.isfinite(c).all() or float(c.min()) < 0.0 or float(c.max()) > 1.0):
        raise DataError(f"{name} conditions: values must be finite and in [0, 1]")
    if image.condition == "class" and not (np.isin(c, (0.0, 1.0)).all() and (c.sum(axis=(1, 2, 3)) == 1).all()):
        raise DataError(f"{name} conditions: a class condition must be one-hot (one 1 per row)")
    return x, c


def project(
    G: torch.nn.Module,
    images,
    conds,
    *,
    image: ImageSpec,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    restarts: int = DEFAULT_RESTARTS,
    seed: int = 0,
    distance: str = "pixels",
    features: Callable[[np.ndarray], np.ndarray] | None = None,
    noise_dim: int | None = None,
    batch: int = DEFAULT_BATCH,
) -> Projection:
    """Project ``images`` into ``G`` under their own ``conds`` (module doc); deterministic given
    ``seed`` (its own ``torch.Generator``), whatever ``batch``. ``noise_dim``: G's (default
    ``G.noise_dim``)."""
    steps, restarts, batch = (_positive_int(k, v) for k, v in (("steps", steps), ("restarts", restarts),
                                                                ("batch", batch)))
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in 0..2**63-1, got {seed!r}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    if distance == "features" and not callable(features):
        raise ValueError("distance 'features' needs a features function (images [N, C, H, W] -> [N, D])")
    if not isinstance(G, torch.nn.Module):
        raise ValueError(f"G must be a torch module, got {type(G).__name__}")
    noise_dim = getattr(G, "noise_dim", None) if noise_dim is None else noise_dim
    if isinstance(noise_dim, bool) or not isinstance(noise_dim, int) or noise_dim < 1:
        raise ValueError(f"G's noise dimension is unknown or invalid ({noise_dim!r}): pass noise_dim")
    x, c = check_inputs(images, conds, image)
    _check_output(G, c, noise_dim, image)
    mse, z = invert(G, x, c, noise_dim=noise_dim, generator=torch.Generator().manual_seed(seed),
                    restarts=restarts, steps=steps, lr=lr, batch=batch)
    lo, hi = (float(v) for v in image.value_range)
    if distance == "pixels":
        return Projection(distances=mse / (hi - lo) ** 2, z=z, space="pixels")
    recon = _reconstruct(G, c, z, batch)
    fx, fr = np.asarray(features(x), dtype=np.float64), np.asarray(features(recon), dtype=np.float64)
    if fx.ndim != 2 or fx.shape != fr.shape or len(fx) != len(x) or not (np.isfinite(fx).all() and np.isfinite(fr).all()):
        raise DataError(f"features must map [N, C, H, W] images to finite [N, D] vectors, got {fx.shape}")
    return Projection(distances=np.linalg.norm(fx - fr, axis=1), z=z, space="features")


def _check_output(G: torch.nn.Module, c: np.ndarray, noise_dim: int, image: ImageSpec) -> None:
    with frozen(G), torch.no_grad():
        try:
            out = G(torch.from_numpy(c[:1]), torch.zeros(1, noise_dim))
        except (RuntimeError, ValueError) as exc:
            raise DataError(f"G cannot take these conditions with noise_dim {noise_dim} "
                            f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if tuple(out.shape) != (1,) + image.image_shape:
        raise DataError(f"G produces {tuple(out.shape[1:])} images, the spec has {image.image_shape}")


def _reconstruct(G: torch.nn.Module, c: np.ndarray, z: np.ndarray, batch: int) -> np.ndarray:
    with frozen(G), torch.no_grad():
        return np.concatenate([G(torch.from_numpy(c[i : i + batch]), torch.from_numpy(z[i : i + batch])).numpy()
                               for i in range(0, len(c), batch)])


# ---------------------------------------------------------------------------------------------
# the check


def membership_auc(train: np.ndarray, heldout: np.ndarray, *, confidence: float = 0.95
                   ) -> tuple[float, tuple[float, float], float]:
    """(AUC = P(held-out > training) with ties half, DeLong's interval, one-sided Mann-Whitney p)."""
    t, h = np.asarray(train, dtype=np.float64), np.asarray(heldout, dtype=np.float64)
    m, n = len(t), len(h)
    rank_all = _st.rankdata(np.r_[h, t])  # midranks: ties count half
    v_h = (rank_all[:n] - _st.rankdata(h)) / m  # per held-out value: share of training values below it
    v_t = 1.0 - (rank_all[n:] - _st.rankdata(t)) / n  # per training value: share of held-out values above it
    auc = float(v_h.mean())
    se = math.sqrt(v_h.var(ddof=1) / n + v_t.var(ddof=1) / m)
    q = float(_st.norm.ppf(0.5 + confidence / 2.0))
    ci = (max(0.0, auc - q * se), min(1.0, auc + q * se))
    p = float(_st.mannwhitneyu(h, t, alternative="greater", method="auto").pvalue)
    return auc, ci, p


def _pool(d: np.ndarray, groups, name: str) -> np.ndarray:
    if groups is None:
        return d
    g = np.asarray(groups)
    if g.shape != d.shape or not np.issubdtype(g.dtype, np.integer):
        raise DataError(f"{name} patient ids: expected {len(d)} integers (one per image), got {g.dtype} {g.shape}")
    ids, inv = np.unique(g, return_inverse=True)
    out = np.full(len(ids), np.inf)
    np.minimum.at(out, inv, d)
    return out


def check_distances(train, heldout, *, space: str = "pixels", train_groups=None, heldout_groups=None,
                    confidence: float = 0.95) -> ProjectionCheck:
    """The check on distances already measured (module doc); the groups are patient ids."""
    if not (isinstance(confidence, float) and 0.5 <= confidence < 1.0):
        raise ValueError(f"confidence must be a float in [0.5, 1), got {confidence!r}")
    if (train_groups is None) != (heldout_groups is None):
        raise ValueError("give patient ids for both sets or for neither")
    sets = []
    for name, d, groups in (("training", train, train_groups), ("held-out", heldout, heldout_groups)):
        d = np.asarray(d, dtype=np.float64)
        if d.ndim != 1:
            raise DataError(f"{name} distances: expected a 1-D array, got shape {d.shape}")
        if not np.isfinite(d).all() or (d < 0).any():
            raise DataError(f"{name} distances must be finite and >= 0")
        d = _pool(d, groups, name)
        if len(d) < 2:
            raise DataError(f"{name}: need at least 2 {'patients' if groups is not None else 'images'}, got {len(d)}")
        sets.append(d)
    t, h = sets
    auc, ci, p = membership_auc(t, h, confidence=confidence)
    alpha = 1.0 - confidence
    if 1.0 / math.comb(len(t) + len(h), len(t)) > alpha:
        verdict = "inconclusive"
    elif ci[0] > 0.5 and p < alpha:
        verdict = "memorisation"
    else:
        verdict = "no evidence"
    return ProjectionCheck(
        space=space, unit="image" if train_groups is None else "patient", n_train=len(t), n_heldout=len(h),
        train_mean=float(t.mean()), train_median=float(np.median(t)),
        heldout_mean=float(h.mean()), heldout_median=float(np.median(h)), gap=float(h.mean() - t.mean()),
        auc=auc, auc_ci=ci, p_value=p, confidence=confidence, verdict=verdict,
    )


def projection_check(
    G: torch.nn.Module,
    train_images,
    train_conds,
    heldout_images,
    heldout_conds,
    *,
    image: ImageSpec,
    train_groups=None,
    heldout_groups=None,
    confidence: float = 0.95,
    **project_kw,
) -> ProjectionCheck:
    """Project both sets (one call, so both are treated alike) and compare them (module doc).
    ``project_kw``: :func:`project`'s steps, lr, restarts, seed, distance, features, noise_dim, batch."""
    tx, tc = check_inputs(train_images, train_conds, image, name="training images")
    hx, hc = check_inputs(heldout_images, heldout_conds, image, name="held-out images")
    proj = project(G, np.concatenate([tx, hx]), np.concatenate([tc, hc]), image=image, **project_kw)
    return check_distances(proj.distances[: len(tx)], proj.distances[len(tx):], space=proj.space,
                           train_groups=train_groups, heldout_groups=heldout_groups, confidence=confidence)

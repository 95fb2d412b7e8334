"""The three sets an audit compares: members, non-members (both real, one site) and synthetic.

Real slices carry the index of the patient they come from, because the unit of privacy (and of
every statistical test that needs independent samples) is the patient, not the slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from secgan.core.errors import DataError


@dataclass(frozen=True)
class Cohort:
    name: str
    images: np.ndarray  # [N, C, H, W] float32 (C from the run's image spec: 4 brain MRI, 3 RGB, ...)
    conds: np.ndarray  # [N, *cond_shape] float32 (a map [K, H, W], a one-hot class [K, 1, 1], none [0, 1, 1])
    groups: np.ndarray  # [N] int64 patient index (within this cohort)

    @property
    def n_patients(self) -> int:
        return int(len(np.unique(self.groups)))

    def __len__(self) -> int:
        return int(self.images.shape[0])


def make_cohort(name: str, images, conds=None, groups=None, *, min_patients: int = 1) -> Cohort:
    """Validate and wrap arrays. ``groups`` None means one patient per slice (synthetic data)."""
    if images is None:
        raise DataError(f"{name}: no images given")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1] == 0:
        raise DataError(f"{name}: images must be a non-empty [N, C, H, W] array, got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{name}: images must be floating point, got {images.dtype}")
    images = images.astype(np.float32, copy=False)
    if not np.all(np.isfinite(images)):
        raise DataError(f"{name}: images contain NaN or infinity")
    if conds is None:
        conds = np.zeros((images.shape[0], 0, 1, 1), dtype=np.float32)  # no condition
    conds = np.asarray(conds, dtype=np.float32)
    spatial = conds.ndim == 4 and conds.shape[2:] == images.shape[2:]
    pooled = conds.ndim == 4 and conds.shape[2:] == (1, 1)
    if conds.shape[:1] != images.shape[:1] or not (spatial or pooled):
        raise DataError(f"{name}: conditions {conds.shape} do not match images {images.shape} "
                        f"(a map [N, K, H, W] or a class/none condition [N, K, 1, 1])")
    if groups is None:
        groups = np.arange(images.shape[0], dtype=np.int64)
    groups = np.asarray(groups)
    if groups.shape != (images.shape[0],) or not np.issubdtype(groups.dtype, np.integer):
        raise DataError(f"{name}: patient index must be integers of shape [{images.shape[0]}], got {groups.shape} {groups.dtype}")
    cohort = Cohort(name, images, conds, groups.astype(np.int64))
    if cohort.n_patients < min_patients:
        raise DataError(f"{name}: need at least {min_patients} patients, got {cohort.n_patients}")
    return cohort


def check_compatible(*cohorts: Cohort) -> None:
    shapes = {c.name: tuple(c.images.shape[1:]) for c in cohorts}
    if len(set(shapes.values())) != 1:
        raise DataError("image shapes differ: " + ", ".join(f"{k} {list(v)}" for k, v in shapes.items()))

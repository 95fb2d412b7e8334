"""One canonical voxel orientation for every volume, before any slicing.

Volumes are brought to RAS+ (first axis towards the patient's Right, second Anterior, third
Superior) with nibabel's orientation tools: axis flips and permutations only, so voxel values are
moved, never interpolated. The public BraTS files are stored LPS (affine diag(-1, -1, 1)); a case
re-saved by ``nib.as_closest_canonical`` or a converter is RAS; an export may permute the axes. All
of them give the same array here, and axial slices are then the last axis. An affine whose axes are
tilted away from the scanner axes by more than a tolerance (oblique) is refused: flipping and
permuting cannot make it axial, and resampling it silently would change the anatomy's geometry.
"""

from __future__ import annotations

import numpy as np

CANONICAL = "RAS"
# Largest tilt of a voxel axis away from the nearest scanner axis that is accepted, in degrees.
DEFAULT_OBLIQUE_TOLERANCE_DEG = 1.0


def axcodes(affine: np.ndarray) -> str:
    """Orientation of ``affine`` as three letters, e.g. "LPS"."""
    import nibabel as nib

    return "".join(c or "?" for c in nib.aff2axcodes(affine))


def obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and its nearest scanner axis."""
    from nibabel.affines import obliquity

    return float(np.degrees(np.max(np.abs(obliquity(affine)))))


def check_oblique(affine: np.ndarray, tolerance_deg: float) -> str | None:
    """None if the affine is axis-aligned within ``tolerance_deg``, else the problem in words."""
    tilt = obliquity_deg(affine)
    if tilt > tolerance_deg:
        return (f"affine is oblique: a voxel axis is tilted {tilt:.2f} degrees from the scanner axes "
                f"(tolerance {tolerance_deg:g}, data oblique_tolerance_deg); resample the case to an "
                "axis-aligned grid before using it")
    return None


def to_canonical_plan(affine: np.ndarray, shape: tuple[int, ...]):
    """(orientation transform, canonical affine) for a volume of ``shape`` (first three axes)."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

    transform = ornt_transform(nib.io_orientation(affine), axcodes2ornt(tuple(CANONICAL)))
    new_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(transform, tuple(shape[:3]))
    return transform, new_affine


def apply_plan(data: np.ndarray, transform) -> np.ndarray:
    """``data`` ([X, Y, Z] or [X, Y, Z, C]) re-ordered to the canonical orientation (a copy)."""
    from nibabel.orientations import apply_orientation

    return np.ascontiguousarray(apply_orientation(data, transform))


def canonical_zooms(zooms: tuple[float, ...], transform) -> tuple[float, float, float]:
    """Voxel sizes in canonical axis order."""
    out = [0.0, 0.0, 0.0]
    for src, (dst, _flip) in enumerate(np.asarray(transform)[:3]):
        out[int(dst)] = float(zooms[src])
    return tuple(out)  # type: ignore[return-value]

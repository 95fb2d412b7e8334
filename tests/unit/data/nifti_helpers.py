"""Small helpers for writing test NIfTI files and cases (real files through nibabel)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

MODS = ("t1", "t1ce", "t2", "flair")


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


def write_case(case_dir: Path, *, shape=(16, 16, 8), seg: np.ndarray | None = None, seed: int = 0) -> Path:
    """A valid little case with a tumour in the middle slices."""
    case_dir.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    brain = (x / (shape[0] * 0.45)) ** 2 + (y / (shape[1] * 0.45)) ** 2 < 1
    if seg is None:
        seg = np.zeros(shape, np.uint8)
        r = x**2 + y**2 + (z * 2) ** 2
        seg[r < 12] = 2
        seg[r < 6] = 4
        seg[r < 2] = 1
    for m in MODS:
        vol = (g.uniform(100, 1000, size=shape) * brain).astype(np.float32)
        save(case_dir / f"{case_dir.name}_{m}.nii.gz", vol)
    save(case_dir / f"{case_dir.name}_seg.nii.gz", seg)
    return case_dir


def copy_case(src_site: Path, case_id: str, dst_site: Path) -> Path:
    dst = dst_site / case_id
    shutil.copytree(src_site / case_id, dst)
    return dst


def header_only_gz(path: Path, shape, dtype=np.int16, zooms=None) -> Path:
    """A .nii.gz whose header claims ``shape`` but carries (almost) no voxel data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    if zooms is not None:
        hdr["pixdim"][1 : 1 + len(zooms)] = zooms
    hdr.set_sform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    with gzip.open(path, "wb") as fh:
        fh.write(hdr.binaryblock + b"\0" * 4 + b"\0" * 64)
    return path

"""One small patient written the way each public release ships it (real nibabel files, int16, LPS).

The patient is defined once in canonical RAS voxel order; every writer stores it in its release's
file names, labels and orientation, so a reader that gets orientation and labels right returns the
same arrays from every copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from secgan.data.phantom import _save_nifti

SHAPE = (48, 48, 16)
MODS = ("t1", "t1ce", "t2", "flair")
GLI_TAGS = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
MSD_ORDER = ("flair", "t1", "t1ce", "t2")
# internal label -> release label
TO_GLI = {0: 0, 1: 1, 2: 2, 4: 3}
TO_MSD = {0: 0, 1: 2, 2: 1, 4: 3}


def lps_affine(shape=SHAPE) -> np.ndarray:
    """The affine of the public BraTS files: x towards Left, y towards Posterior (diag(-1, -1, 1))."""
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff[:3, 3] = [0.0, shape[1] - 1.0, 0.0]
    return aff


def patient(seed: int = 0, shape=SHAPE, *, cavity: bool = False):
    """(volumes name -> int16 [X,Y,Z] in RAS voxel order, internal seg int16) of one asymmetric patient."""
    g = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    # Off-centre, asymmetric brain and tumour, so any flip or permutation shows.
    brain = ((x - 3) / (shape[0] * 0.36)) ** 2 + ((y + 2) / (shape[1] * 0.42)) ** 2 + (z / (shape[2] * 0.7)) ** 2 < 1
    r = (x - 8) ** 2 + (y - 5) ** 2 / 2.0 + (z * 2) ** 2
    seg = np.zeros(shape, np.int16)
    seg[(r < 60) & brain] = 2
    seg[(r < 25) & brain] = 4
    seg[(r < 8) & brain] = 1
    if cavity:
        seg[((x + 9) ** 2 + (y + 6) ** 2 + (z * 2) ** 2 < 20) & brain] = 5
    base = {"t1": 500.0, "t1ce": 600.0, "t2": 800.0, "flair": 700.0}
    vols = {}
    for m in MODS:
        v = base[m] * (1.0 + 0.3 * np.sin(x / 3.0 + y / 5.0)) + g.normal(0, 40, shape) + 150.0 * (seg > 0) + 3.0 * x
        vols[m] = np.where(brain, np.clip(np.rint(v), 1, 32000), 0).astype(np.int16)
    return vols, seg


def ras_to_lps(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[::-1, ::-1])


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    _save_nifti(path, data, affine)  # the phantom's writer: a scanner-coded qform and sform, mm
    return path


def _relabel(seg: np.ndarray, table: dict[int, int]) -> np.ndarray:
    out = np.zeros(seg.shape, np.int16)
    for src, dst in table.items():
        out[seg == src] = dst
    return out


def write_split(site: Path, train: list[str], test: list[str] | None = None) -> None:
    (site / "split.json").write_text(json.dumps({"train": train, "test": test or []}))


def brats2021_case(site: Path, cid: str, vols, seg, *, affine=None, sub: str = "") -> Path:
    """``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``, stored LPS (``sub``: e.g. "HGG")."""
    d = site / sub / cid if sub else site / cid
    d.mkdir(parents=True, exist_ok=True)
    aff = lps_affine(seg.shape) if affine is None else affine
    for m in MODS:
        _save(d / f"{cid}_{m}.nii.gz", ras_to_lps(vols[m]), aff)
    _save(d / f"{cid}_seg.nii.gz", ras_to_lps(seg).astype(np.uint8), aff)
    return d


def gli_case(site: Path, cid: str, vols, seg) -> Path:
    """BraTS 2023/2024 GLI: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``, ET = 3, cavity = 4."""
    d = site / cid
    d.mkdir(parents=True, exist_ok=True)
    aff = lps_affine(seg.shape)
    for m in MODS:
        _save(d / f"{cid}-{GLI_TAGS[m]}.nii.gz", ras_to_lps(vols[m]), aff)
    _save(d / f"{cid}-seg.nii.gz", ras_to_lps(_relabel(seg, {**TO_GLI, 5: 4})).astype(np.uint8), aff)
    return d


def msd_case(site: Path, cid: str, vols, seg) -> None:
    """MSD Task01: ``imagesTr/<case>.nii.gz`` 4-D (FLAIR, T1w, t1gd, T2w), ``labelsTr/<case>.nii.gz``."""
    (site / "imagesTr").mkdir(parents=True, exist_ok=True)
    (site / "labelsTr").mkdir(parents=True, exist_ok=True)
    aff = lps_affine(seg.shape)
    stack = np.stack([ras_to_lps(vols[m]) for m in MSD_ORDER], axis=-1)
    _save(site / "imagesTr" / f"{cid}.nii.gz", stack, aff)
    _save(site / "labelsTr" / f"{cid}.nii.gz", ras_to_lps(_relabel(seg, TO_MSD)).astype(np.uint8), aff)


def reoriented_copy(src_case: Path, dst_case: Path, how: str) -> Path:
    """Re-save every file of a BraTS 2018-2021 case: ``how`` = "ras" (``nib.as_closest_canonical``)
    or "permuted" (axes stored in the order z, x, y, affine columns permuted to match)."""
    dst_case.mkdir(parents=True, exist_ok=True)
    for p in sorted(src_case.iterdir()):
        img = nib.load(str(p))
        if how == "ras":
            out = nib.as_closest_canonical(img)
            out = nib.Nifti1Image(np.asanyarray(out.dataobj), out.affine)
        elif how == "permuted":
            perm = (2, 0, 1)
            data = np.transpose(np.asanyarray(img.dataobj), perm)
            aff = img.affine.copy()
            aff[:, :3] = img.affine[:, list(perm)]
            out = nib.Nifti1Image(data, aff)
        else:
            raise ValueError(how)
        name = p.name.replace(src_case.name, dst_case.name)
        _save(dst_case / name, np.asanyarray(out.dataobj), out.affine)
    return dst_case

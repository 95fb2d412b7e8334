"""BraTS reader: valid cases read correctly; every kind of malformed input is a DataError naming
the file and the problem."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from secgan.data.brats import CaseError, ReaderLimits, read_case
from secgan.core.errors import DataError

from .nifti_helpers import MODS, copy_case, header_only_gz, save, write_case


@pytest.fixture()
def case(tmp_path: Path) -> Path:
    return write_case(tmp_path / "Case-A")


def _raises(case_dir: Path, bad_file: str, *fragments: str, **kw) -> CaseError:
    with pytest.raises(DataError) as info:
        read_case(case_dir, **kw)
    msg = str(info.value)
    assert bad_file in msg, msg
    for f in fragments:
        assert f in msg, msg
    assert isinstance(info.value, CaseError)
    # The problem text alone never names the file (file names carry patient ids).
    assert case_dir.name not in info.value.problem
    return info.value


def test_reads_valid_case(case: Path):
    c = read_case(case)
    assert c.case_id == "Case-A"
    assert set(c.volumes) == set(MODS)
    for v in c.volumes.values():
        assert v.dtype == np.float32 and v.shape == (16, 16, 8)
    assert c.seg.dtype == np.int16 and set(np.unique(c.seg)) <= {0, 1, 2, 4}
    assert np.allclose(c.affine, np.eye(4))


def test_reads_phantom_case(phantom_root: Path):
    site = phantom_root / "site-2"
    cid = sorted(p.name for p in site.iterdir() if p.is_dir())[0]
    c = read_case(site / cid)
    assert c.shape == (32, 32, 16)
    assert np.allclose(np.diag(c.affine)[:3], 1.0)


def test_modality_subset_reads_only_those(case: Path):
    c = read_case(case, modalities=("t2",))
    assert set(c.volumes) == {"t2"}


def test_truncated_gzip(case: Path):
    p = case / "Case-A_t2.nii.gz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 40])
    _raises(case, "Case-A_t2.nii.gz", "truncated or corrupt")


def test_truncated_inside_header(case: Path):
    p = case / "Case-A_t1.nii.gz"
    p.write_bytes(p.read_bytes()[:30])
    _raises(case, "Case-A_t1.nii.gz", "not a readable NIfTI")


def test_garbage_file(case: Path):
    (case / "Case-A_flair.nii.gz").write_bytes(np.random.default_rng(0).bytes(2000))
    _raises(case, "Case-A_flair.nii.gz", "not a readable NIfTI")


def test_gzip_of_garbage(case: Path):
    with gzip.open(case / "Case-A_t1ce.nii.gz", "wb") as fh:
        fh.write(b"this is not a nifti header" * 40)
    _raises(case, "Case-A_t1ce.nii.gz", "not a readable NIfTI")


def test_missing_modality(case: Path):
    (case / "Case-A_flair.nii.gz").unlink()
    _raises(case, "Case-A_flair.nii.gz", "modality 'flair' file is missing")


def test_missing_seg(case: Path):
    (case / "Case-A_seg.nii.gz").unlink()
    _raises(case, "Case-A_seg.nii.gz", "segmentation file is missing")


def test_missing_case_folder(tmp_path: Path):
    with pytest.raises(DataError, match="case folder is missing"):
        read_case(tmp_path / "nope")


def test_mismatched_shape(case: Path):
    save(case / "Case-A_t1ce.nii.gz", np.ones((16, 16, 9), np.float32))
    _raises(case, "Case-A_t1ce.nii.gz", "shape (16, 16, 9) differs")


def test_mismatched_affine(case: Path):
    aff = np.eye(4)
    aff[0, 3] = 5.0
    save(case / "Case-A_seg.nii.gz", np.zeros((16, 16, 8), np.uint8), aff)
    _raises(case, "Case-A_seg.nii.gz", "affine differs")


def test_nan_intensities(case: Path):
    vol = np.ones((16, 16, 8), np.float32)
    vol[3, 4, 5] = np.nan
    vol[1, 1, 1] = np.inf
    save(case / "Case-A_t2.nii.gz", vol)
    _raises(case, "Case-A_t2.nii.gz", "2 voxels are NaN or infinite")


def test_unknown_label(case: Path):
    seg = np.zeros((16, 16, 8), np.uint8)
    seg[2, 2, 2] = 3
    save(case / "Case-A_seg.nii.gz", seg)
    _raises(case, "Case-A_seg.nii.gz", "labels outside {0, 1, 2, 4}: 3")


def test_fractional_label(case: Path):
    seg = np.zeros((16, 16, 8), np.float32)
    seg[2, 2, 2] = 1.5
    save(case / "Case-A_seg.nii.gz", seg)
    _raises(case, "Case-A_seg.nii.gz", "non-integer labels")


def test_absurd_dimensions_refused_before_reading(case: Path):
    # The header claims 30000^3 int16 voxels (54 TB); the file holds a few bytes. It must be refused
    # from the header alone, without attempting to decompress anything.
    header_only_gz(case / "Case-A_t1.nii.gz", (30000, 30000, 30000))
    _raises(case, "Case-A_t1.nii.gz", "dimensions (30000, 30000, 30000) outside the allowed range")


def test_too_many_voxels(case: Path):
    _raises(case, "Case-A_t1.nii.gz", "voxels exceed the limit", limits=ReaderLimits(max_voxels=1000))


def test_too_small_dimension(tmp_path: Path):
    case = write_case(tmp_path / "Case-A", shape=(16, 16, 4))
    _raises(case, "Case-A_t1.nii.gz", "dimensions (16, 16, 4) outside")


def test_four_d_volume(case: Path):
    save(case / "Case-A_t1.nii.gz", np.ones((16, 16, 8, 2), np.float32))
    _raises(case, "Case-A_t1.nii.gz", "expected a 3-D volume, got 4-D")


def test_disallowed_dtype(case: Path):
    save(case / "Case-A_t2.nii.gz", np.ones((16, 16, 8), np.complex64))
    _raises(case, "Case-A_t2.nii.gz", "dtype complex64 not allowed")


def test_bad_voxel_size(case: Path):
    header_only_gz(case / "Case-A_t1.nii.gz", (16, 16, 8), np.float32, zooms=(1.0, 0.0, 1.0))
    _raises(case, "Case-A_t1.nii.gz", "voxel sizes")


def test_unknown_modality_name_is_a_programming_error(case: Path):
    with pytest.raises(ValueError):
        read_case(case, modalities=("t1", "dwi"))


def test_phantom_copy_with_corruption(phantom_root: Path, tmp_path: Path):
    site = phantom_root / "site-1"
    cid = sorted(p.name for p in site.iterdir() if p.is_dir())[0]
    dst = copy_case(site, cid, tmp_path)
    img = nib.load(str(dst / f"{cid}_seg.nii.gz"))
    seg = np.asarray(img.dataobj).copy()
    seg[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(seg, img.affine), str(dst / f"{cid}_seg.nii.gz"))
    _raises(dst, f"{cid}_seg.nii.gz", "labels outside")

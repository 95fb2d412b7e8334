"""Messages a site can act on: 4-D files name the layout that takes them, affine mismatches give the
difference and the (settable) tolerance, near-integer float labels are rounded with a warning, empty
files are called empty, skip_bad warnings name the file the way errors do (without the case id)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from secgan.core.errors import DataError
from secgan.data.brats import CaseError, ReaderLimits, read_case
from secgan.data.dataset import load_site

from . import layout_fixtures as fx

CID = "BraTS2021_00000"


@pytest.fixture()
def case(tmp_path: Path) -> Path:
    vols, seg = fx.patient(0)
    d = fx.brats2021_case(tmp_path, CID, vols, seg)
    fx.write_split(tmp_path, [CID, "BraTS2021_00001"])
    vols1, seg1 = fx.patient(1)
    fx.brats2021_case(tmp_path, "BraTS2021_00001", vols1, seg1)
    return d


def test_four_d_file_names_the_msd_layout(case: Path):
    stack = np.zeros(fx.SHAPE + (4,), np.int16)
    nib.save(nib.Nifti1Image(stack, fx.lps_affine()), str(case / f"{CID}_t1.nii.gz"))
    with pytest.raises(CaseError) as info:
        read_case(case)
    assert f"{CID}_t1.nii.gz" in str(info.value)
    assert "Decathlon" in info.value.problem and 'layout = "msd"' in info.value.problem


def test_affine_mismatch_gives_difference_and_tolerance(case: Path):
    img = nib.load(str(case / f"{CID}_t2.nii.gz"))
    aff = img.affine.copy()
    aff[0, 3] += 0.25
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), aff), str(case / f"{CID}_t2.nii.gz"))
    with pytest.raises(CaseError) as info:
        read_case(case)
    assert "by up to 0.25 mm" in info.value.problem and "tolerance 0.001" in info.value.problem
    assert "affine_tolerance" in info.value.problem
    assert read_case(case, limits=ReaderLimits(affine_atol=0.3)).shape == fx.SHAPE


def test_float_seg_near_integers_is_rounded_with_a_warning(case: Path, caplog):
    _, seg = fx.patient(0)
    g = np.random.default_rng(0)
    f = fx.ras_to_lps(seg).astype(np.float32) + g.uniform(-4e-4, 4e-4, fx.SHAPE).astype(np.float32)
    nib.save(nib.Nifti1Image(f, fx.lps_affine()), str(case / f"{CID}_seg.nii.gz"))
    with caplog.at_level(logging.WARNING, logger="secgan.data.brats"):
        c = read_case(case)
    assert np.array_equal(c.seg, seg)
    warned = [r for r in caplog.records if r.getMessage() == "seg_rounded"]
    assert warned and warned[0].secgan_fields["file"] == "<case>/<case>_seg.nii.gz"
    assert CID not in json.dumps(warned[0].secgan_fields)


def test_float_seg_beyond_the_tolerance_is_refused(case: Path):
    _, seg = fx.patient(0)
    f = fx.ras_to_lps(seg).astype(np.float32)
    f[f > 0] += 0.01
    nib.save(nib.Nifti1Image(f, fx.lps_affine()), str(case / f"{CID}_seg.nii.gz"))
    with pytest.raises(CaseError, match="non-integer labels .up to 0.01"):
        read_case(case)


def test_zero_byte_file_is_called_empty(case: Path):
    (case / f"{CID}_flair.nii.gz").write_bytes(b"")
    with pytest.raises(CaseError) as info:
        read_case(case)
    assert f"{CID}_flair.nii.gz" in str(info.value) and "empty" in info.value.problem


def test_skip_bad_warning_names_the_file_like_the_error(case: Path, caplog):
    site = case.parent
    (case / f"{CID}_t1ce.nii.gz").write_bytes(b"")
    with pytest.raises(DataError) as info:
        load_site(site, image_size=32)
    assert f"{CID}/{CID}_t1ce.nii.gz" in str(info.value)
    with caplog.at_level(logging.WARNING, logger="secgan.data.dataset"):
        ds = load_site(site, image_size=32, skip_bad=True)
    assert ds.n_patients == 1
    (w,) = [r for r in caplog.records if r.getMessage() == "case_skipped"]
    f = w.secgan_fields
    assert f["file"] == "<case>/<case>_t1ce.nii.gz" and f["index"] == 0 and "empty" in f["problem"]
    assert CID not in json.dumps(f)


def test_skip_bad_names_msd_files_by_their_folder(tmp_path: Path, caplog):
    for k in (1, 2):
        vols, seg = fx.patient(k)
        fx.msd_case(tmp_path, f"BRATS_00{k}", vols, seg)
    fx.write_split(tmp_path, ["BRATS_001", "BRATS_002"])
    (tmp_path / "labelsTr" / "BRATS_002.nii.gz").unlink()
    with caplog.at_level(logging.WARNING, logger="secgan.data.dataset"):
        ds = load_site(tmp_path, image_size=32, skip_bad=True)
    assert ds.n_patients == 1
    (w,) = [r for r in caplog.records if r.getMessage() == "case_skipped"]
    assert w.secgan_fields["file"] == "labelsTr/<case>.nii.gz" and "missing" in w.secgan_fields["problem"]

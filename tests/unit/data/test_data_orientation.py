"""Canonical orientation: oblique affines are refused past a tolerance; the orientation is part of
the data fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from secgan.data.brats import CaseError, ReaderLimits, read_case
from secgan.data.dataset import load_site
from secgan.data.orientation import axcodes, obliquity_deg

from . import layout_fixtures as fx


def _rotated(deg: float) -> np.ndarray:
    t = np.radians(deg)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return rot @ fx.lps_affine()


def test_oblique_affine_is_refused_with_the_angle_and_tolerance(tmp_path: Path):
    vols, seg = fx.patient(0)
    case = fx.brats2021_case(tmp_path, "BraTS2021_00000", vols, seg, affine=_rotated(12.0))
    with pytest.raises(CaseError) as info:
        read_case(case)
    assert "oblique" in info.value.problem and "12.00 degrees" in info.value.problem
    assert "tolerance 1" in info.value.problem
    # A site can widen the tolerance (then the nearest axes are used).
    c = read_case(case, limits=ReaderLimits(oblique_tolerance_deg=15.0))
    assert c.shape == fx.SHAPE


def test_slightly_tilted_affine_within_tolerance_loads(tmp_path: Path):
    vols, seg = fx.patient(0)
    case = fx.brats2021_case(tmp_path, "BraTS2021_00000", vols, seg, affine=_rotated(0.4))
    assert obliquity_deg(_rotated(0.4)) == pytest.approx(0.4, abs=1e-6)
    c = read_case(case)
    assert np.array_equal(c.seg, seg)


def test_axcodes():
    assert axcodes(fx.lps_affine()) == "LPS"
    assert axcodes(np.eye(4)) == "RAS"


def test_fingerprint_covers_the_geometry(tmp_path: Path):
    vols, seg = fx.patient(0)
    fx.brats2021_case(tmp_path, "BraTS2021_00000", vols, seg)
    fx.write_split(tmp_path, ["BraTS2021_00000"])
    a = load_site(tmp_path, image_size=32, crop="none")
    b = load_site(tmp_path, image_size=32, crop="none")
    assert "RAS" in a.geometry and a.fingerprint() == b.fingerprint()
    from secgan.data.dataset import PatientSlices

    im, co, sg = a.images(0), a.conds(0), a.segs(0)
    other = PatientSlices(case_ids=["x"], images=[im], conds=[co], segs=[sg], image_size=32, geometry="LPS;voxel_mm=1")
    same = PatientSlices(case_ids=["x"], images=[im], conds=[co], segs=[sg], image_size=32, geometry=a.geometry)
    assert same.fingerprint() == a.fingerprint() and other.fingerprint() != a.fingerprint()

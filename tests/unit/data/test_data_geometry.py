"""Geometry and intensity: a common voxel size, a crop to the brain (same on labels), the brain found
without a zero background, and a warning when it fills the frame."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from secgan.data.brainmask import brain_mask, frame_coverage
from secgan.data.brats import read_case
from secgan.data.dataset import PHANTOM_MARKER, load_site
from secgan.data.phantom import write_phantom

from . import layout_fixtures as fx

CID = "BraTS2021_00000"


def _site(root: Path, vols, seg, *, affine=None) -> Path:
    fx.brats2021_case(root, CID, vols, seg, affine=affine)
    fx.write_split(root, [CID])
    return root


def test_coarse_spacing_is_resampled_to_one_millimetre(tmp_path: Path):
    vols, seg = fx.patient(0)
    fine = _site(tmp_path / "fine", vols, seg)
    coarse_vols = {m: v[:, :, ::2] for m, v in vols.items()}  # 2 mm slices
    aff = fx.lps_affine()
    aff[2, 2] = 2.0
    coarse = _site(tmp_path / "coarse", coarse_vols, seg[:, :, ::2].copy(), affine=aff)
    c = read_case(coarse / CID)
    assert c.zooms == (1.0, 1.0, 2.0)
    a = load_site(fine, image_size=32, min_tumour_pixels=1, crop="none")
    b = load_site(coarse, image_size=32, min_tumour_pixels=1, crop="none")
    assert "voxel_mm=1" in b.geometry
    # Same number of 1 mm slices with tumour (within one at each end) and the same labels present.
    assert abs(a.n_slices(0) - b.n_slices(0)) <= 2
    assert set(np.unique(b.segs(0)).tolist()) == set(np.unique(a.segs(0)).tolist())


def test_resampling_keeps_labels_nearest_and_updates_the_affine(tmp_path: Path):
    from secgan.data.geometry import resample_case

    vols, seg = fx.patient(0)
    aff = fx.lps_affine()
    aff[0, 0] = -2.0
    site = _site(tmp_path, {m: v[::2] for m, v in vols.items()}, seg[::2].copy(), affine=aff)
    case = read_case(site / CID)
    r = resample_case(case, 1.0)
    assert r.shape == (48, 48, 16) and r.zooms == (1.0, 1.0, 1.0)
    assert set(np.unique(r.seg).tolist()) <= {0, 1, 2, 4}  # nearest: no in-between labels
    assert np.allclose(np.abs(np.diag(r.affine)[:3]), 1.0)
    # The world position of the volume's centre does not move.
    centre_old = case.affine @ np.r_[(np.asarray(case.shape) - 1) / 2.0, 1.0]
    centre_new = r.affine @ np.r_[(np.asarray(r.shape) - 1) / 2.0, 1.0]
    assert np.allclose(centre_old, centre_new)


def test_crop_to_the_brain_fills_more_of_the_frame_and_moves_labels_with_it(tmp_path: Path):
    vols, seg = fx.patient(0)
    pad = ((40, 24), (30, 34), (0, 0))  # the brain in a 112 x 112 frame, off centre
    vols = {m: np.pad(v, pad) for m, v in vols.items()}
    site = _site(tmp_path, vols, np.pad(seg, pad))
    full = load_site(site, image_size=32, min_tumour_pixels=1, crop="none")
    crop = load_site(site, image_size=32, min_tumour_pixels=1)  # auto: a real layout is cropped
    assert "crop=brain+8" in crop.geometry and "crop=none" in full.geometry
    for ds in (full, crop):
        im, co, sg, _ = ds.all_slices()
        assert np.array_equal(co[:, 3] > 0, sg == 4) and np.array_equal(co[:, 2] > 0, sg == 2)
        assert np.all(im[:, 0][co[:, 0] == 0] == -1.0)  # background stays exactly -1
    frac_full = (full.conds(0)[:, 0] > 0).mean()
    frac_crop = (crop.conds(0)[:, 0] > 0).mean()
    assert frac_crop > 2.0 * frac_full
    assert (crop.segs(0) > 0).sum() > 2.0 * (full.segs(0) > 0).sum()  # more pixels per mm of tumour


def test_phantom_is_not_cropped_under_auto(tmp_path: Path):
    site = write_phantom(tmp_path, sites=1, patients=2, seed=1, size=96, slices=12)[0]
    assert (site / PHANTOM_MARKER).is_file()
    auto = load_site(site, split="all", image_size=32)
    none = load_site(site, split="all", image_size=32, crop="none")
    assert auto.fingerprint() == none.fingerprint()
    brain = load_site(site, split="all", image_size=32, crop="brain")
    assert brain.fingerprint() != none.fingerprint()


@pytest.mark.parametrize("how", ["brain", "volume"])
def test_z_scored_case_gives_the_same_slices(tmp_path: Path, how: str):
    vols, seg = fx.patient(0)
    raw = _site(tmp_path / "raw", vols, seg)
    z = {}
    for m, v in vols.items():
        f = v.astype(np.float32)
        if how == "brain":  # z-scored over the brain, background left at 0: half the brain is negative
            inside = f[v > 0]
            z[m] = np.where(v > 0, (f - inside.mean()) / inside.std(), 0.0).astype(np.float32)
        else:  # z-scored over the whole volume: the background becomes a negative constant
            z[m] = ((f - f.mean()) / f.std()).astype(np.float32)
    zs = _site(tmp_path / "z", z, seg)
    a = load_site(raw, image_size=32, min_tumour_pixels=1)
    b = load_site(zs, image_size=32, min_tumour_pixels=1)
    assert np.array_equal(a.conds(0), b.conds(0))
    assert np.allclose(a.images(0), b.images(0), atol=1e-4)


def test_noisy_background_is_not_brain():
    vols, _ = fx.patient(0)
    truth = vols["t1"] > 0
    g = np.random.default_rng(1)
    noisy = np.where(truth, vols["t1"], np.abs(g.normal(30.0, 8.0, truth.shape))).astype(np.float32)
    m = brain_mask([noisy])
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou > 0.97


def test_brain_filling_the_frame_is_warned(tmp_path: Path, caplog):
    g = np.random.default_rng(0)
    _, seg = fx.patient(0)
    vols = {m: g.integers(200, 1000, size=fx.SHAPE).astype(np.int16) for m in fx.MODS}  # no background at all
    site = _site(tmp_path, vols, seg)
    with caplog.at_level(logging.WARNING, logger="secgan.data.dataset"):
        load_site(site, image_size=32, min_tumour_pixels=1)
    warned = [r for r in caplog.records if r.getMessage() == "brain_covers_frame"]
    assert warned and warned[0].secgan_fields["coverage"] > 0.9 and "skull-stripped" in warned[0].secgan_fields["hint"]
    assert frame_coverage(np.ones((4, 4, 2), bool)) == 1.0


@pytest.mark.parametrize("crop", ["sideways"])
def test_unknown_crop_mode(tmp_path: Path, crop):
    vols, seg = fx.patient(0)
    with pytest.raises(ValueError, match="crop"):
        load_site(_site(tmp_path, vols, seg), image_size=32, crop=crop)

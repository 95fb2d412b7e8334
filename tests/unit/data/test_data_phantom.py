"""Phantom generator: layout, labels, affine, split, tissue contrasts, site differences, determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from secgan.data import phantom as ph
from secgan.data.phantom import site_scanner, synthesize_case, write_phantom

MODS = ("t1", "t1ce", "t2", "flair")


def _cases(site: Path) -> list[str]:
    return sorted(p.name for p in site.iterdir() if p.is_dir())


def test_layout_and_split(phantom_root: Path):
    sites = sorted(p.name for p in phantom_root.iterdir())
    assert sites == ["site-1", "site-2", "site-3"]
    for k, name in enumerate(sites, start=1):
        site = phantom_root / name
        cases = _cases(site)
        assert len(cases) == 6
        for cid in cases:
            assert re.fullmatch(rf"Site{k}-P\d{{3}}", cid)
            files = sorted(p.name for p in (site / cid).iterdir())
            assert files == sorted(f"{cid}_{m}.nii.gz" for m in MODS + ("seg",))
        split = json.loads((site / "split.json").read_text())
        assert set(split) == {"train", "test"}
        assert split["train"] and split["test"]
        assert not set(split["train"]) & set(split["test"])
        assert sorted(split["train"] + split["test"]) == cases


def test_labels_affine_and_dtypes(phantom_root: Path):
    dtypes = set()
    for site in sorted(phantom_root.iterdir()):
        for cid in _cases(site):
            seg_img = nib.load(str(site / cid / f"{cid}_seg.nii.gz"))
            seg = np.asarray(seg_img.dataobj)
            assert seg.dtype == np.uint8 and seg.shape == (32, 32, 16)
            assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4}
            assert {2, 4} <= set(np.unique(seg).tolist())
            # Tumour is 3-D: it spans several axial slices.
            assert (seg > 0).any(axis=(0, 1)).sum() >= 3
            aff = seg_img.affine
            assert np.allclose(aff[:3, :3], np.eye(3))  # RAS, 1 mm
            assert np.allclose(seg_img.header.get_zooms(), 1.0)
            assert int(seg_img.header["sform_code"]) == 1 and int(seg_img.header["qform_code"]) == 1
            centre = aff @ np.array([15.5, 15.5, 7.5, 1.0])
            assert np.all(np.abs(centre[:3]) < 10)  # origin near the volume centre
            for m in MODS:
                img = nib.load(str(site / cid / f"{cid}_{m}.nii.gz"))
                assert np.allclose(img.affine, aff)
                dtypes.add(img.get_data_dtype().name)
                data = np.asarray(img.dataobj)
                assert data.min() == 0 and data.max() > 50  # masked background, scanner-like units
                assert np.all(data[seg > 0] > 0)
    assert dtypes == {"int16", "float32"}  # sites differ in on-disk dtype like real scanners


def test_tumour_sub_regions_are_nested():
    _, seg, _, tissue = synthesize_case(7, 1, 3, size=48, slices=24, with_tissue=True)
    # Necrosis is surrounded by enhancing tumour; oedema surrounds the enhancing tumour:
    # every necrotic voxel's 6-neighbours are tumour.
    core = seg == 1
    if core.any():
        idx = np.argwhere(core)
        for axis in range(3):
            for step in (-1, 1):
                nb = idx.copy()
                nb[:, axis] += step
                assert np.all(seg[tuple(nb.T)] > 0)
    # Tumour sits inside the brain tissue (never on the scalp ring or background).
    tumour = seg > 0
    assert not np.any(tumour & np.isin(tissue, [ph.BG, ph.SCALP, ph.SKULL]))


def _mean(vol: np.ndarray, tissue: np.ndarray, cls: int) -> float:
    sel = tissue == cls
    assert sel.sum() > 5
    return float(vol[sel].mean())


@pytest.mark.parametrize("site,patient", [(1, 1), (2, 4), (3, 2)])
def test_modality_contrasts(site: int, patient: int):
    vols, seg, _, tissue = synthesize_case(1234, site, patient, size=48, slices=24, with_tissue=True)
    v = {k: a.astype(np.float64) for k, a in vols.items()}
    t1 = [_mean(v["t1"], tissue, c) for c in (ph.WM, ph.GM, ph.CSF)]
    assert t1[0] > t1[1] > t1[2]  # T1: WM bright > GM > CSF dark
    assert _mean(v["t2"], tissue, ph.CSF) > _mean(v["t2"], tissue, ph.GM) > _mean(v["t2"], tissue, ph.WM)
    assert _mean(v["flair"], tissue, ph.CSF) < _mean(v["flair"], tissue, ph.WM)  # CSF suppressed
    assert _mean(v["flair"], tissue, ph.ED) > _mean(v["flair"], tissue, ph.WM)  # oedema bright
    et = _mean(v["t1ce"], tissue, ph.ET)
    assert et > _mean(v["t1ce"], tissue, ph.WM) and et > _mean(v["t1ce"], tissue, ph.ED)  # rim enhances


def test_sites_differ_like_scanners():
    scanners = [site_scanner(1234, s) for s in (1, 2, 3)]
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        assert not np.allclose(scanners[a].gain, scanners[b].gain)
        assert scanners[a].noise != scanners[b].noise
        assert scanners[a].bias_strength != scanners[b].bias_strength
        assert scanners[a].tumour_scale != scanners[b].tumour_scale
    # Measured on images: white-matter level and tumour volume differ between sites.
    wm, tum = {}, {}
    for s in (1, 2, 3):
        levels, sizes = [], []
        for p in range(1, 5):
            vols, seg, _, tissue = synthesize_case(1234, s, p, size=32, slices=16, with_tissue=True)
            levels.append(np.median(vols["t1"][tissue == ph.WM]))
            sizes.append((seg > 0).sum())
        wm[s], tum[s] = np.median(levels), np.mean(sizes)
    assert max(wm.values()) / min(wm.values()) > 1.05
    assert max(tum.values()) / min(tum.values()) > 1.2


def test_same_seed_same_data_different_seed_different(tmp_path: Path):
    a = write_phantom(tmp_path / "a", sites=1, patients=2, seed=5, size=16, slices=8)
    b = write_phantom(tmp_path / "b", sites=1, patients=2, seed=5, size=16, slices=8)
    c = write_phantom(tmp_path / "c", sites=1, patients=2, seed=6, size=16, slices=8)
    same = diff = True
    for cid in _cases(a[0]):
        for m in MODS + ("seg",):
            fa, fb, fc = (np.asarray(nib.load(str(d / cid / f"{cid}_{m}.nii.gz")).dataobj) for d in (a[0], b[0], c[0]))
            same &= np.array_equal(fa, fb)
            diff &= np.array_equal(fa, fc)
    assert same and not diff
    assert (a[0] / "split.json").read_text() == (b[0] / "split.json").read_text()


def test_patient_independent_of_federation_size():
    # A patient's data depends on (seed, site, patient) only, not on how many are generated.
    v1, s1, _ = synthesize_case(9, 2, 3, size=16, slices=8)
    v2, s2, _ = synthesize_case(9, 2, 3, size=16, slices=8)
    v3, _, _ = synthesize_case(9, 2, 4, size=16, slices=8)
    assert np.array_equal(s1, s2) and all(np.array_equal(v1[m], v2[m]) for m in MODS)
    assert not np.array_equal(v1["t1"], v3["t1"])


@pytest.mark.parametrize(
    "kw",
    [dict(patients=1), dict(sites=0), dict(size=8), dict(slices=4), dict(test_fraction=1.0), dict(test_fraction=0.0)],
)
def test_rejects_impossible_arguments(tmp_path: Path, kw):
    args = dict(sites=1, patients=2, seed=0, size=16, slices=8) | kw
    with pytest.raises(ValueError):
        write_phantom(tmp_path, **args)


def test_split_fractions():
    ids = [f"x{i}" for i in range(20)]
    s = ph.patient_split(0, 1, ids, 0.25)
    assert len(s["test"]) == 5 and len(s["train"]) == 15
    s = ph.patient_split(0, 1, ids[:2], 0.9)
    assert len(s["test"]) == 1 and len(s["train"]) == 1

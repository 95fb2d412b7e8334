"""load_site / PatientSlices: normalisation, slices, sampling, fingerprint, splits, skip_bad."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from secgan.data.brats import Case
from secgan.data.dataset import load_site, read_split
from secgan.data.slicing import case_to_slices, normalise_volume
from secgan.core.errors import DataError
from secgan.core.spec import decode_condition


@pytest.fixture()
def site(phantom_root: Path, tmp_path: Path) -> Path:
    """A private, mutable copy of phantom site 1."""
    dst = tmp_path / "site"
    shutil.copytree(phantom_root / "site-1", dst)
    return dst


@pytest.fixture(scope="module")
def train1(phantom_root: Path):
    return load_site(phantom_root / "site-1", split="train", image_size=32)


def test_normalisation_range_and_background(train1):
    imgs, conds, segs, pidx = train1.all_slices()
    assert imgs.dtype == np.float32 and imgs.shape[1:] == (4, 32, 32)
    assert imgs.min() == -1.0 and imgs.max() == 1.0
    brain = conds[:, 0] > 0.5
    assert np.all(imgs.transpose(1, 0, 2, 3)[:, ~brain] == -1.0)  # background exactly -1
    inside = imgs.transpose(1, 0, 2, 3)[:, brain]
    assert np.all(inside.max(axis=1) > 0.5)  # every channel uses the range inside the brain
    assert pidx.dtype == np.int64 and len(pidx) == len(imgs)
    assert sorted(set(pidx.tolist())) == list(range(train1.n_patients))


def test_conditions_match_segs_and_slices_have_tumour(train1):
    for i in range(train1.n_patients):
        im, co, sg = train1.images(i), train1.conds(i), train1.segs(i)
        assert im.shape[0] == co.shape[0] == sg.shape[0] >= 1
        assert sg.dtype == np.int16 and co.dtype == np.float32
        assert np.all((sg > 0).sum(axis=(1, 2)) >= 10)
        for k in range(sg.shape[0]):
            seg, brain = decode_condition(co[k])
            assert np.array_equal(seg, sg[k])
            assert np.all(brain[sg[k] > 0])
        with pytest.raises(ValueError):
            im[0, 0, 0, 0] = 0.0  # read-only


def test_normalise_volume_known_answer():
    vol = np.zeros((10, 10, 10), np.float32)
    mask = np.zeros_like(vol, dtype=bool)
    mask[2:8, 2:8, 2:8] = True
    vol[mask] = np.linspace(0.0, 1000.0, mask.sum())
    out = normalise_volume(vol, mask)
    assert np.all(out[~mask] == -1.0)
    lo, hi = np.percentile(vol[mask], [0.5, 99.5])
    mid = vol[mask][mask.sum() // 2]
    assert out[mask][mask.sum() // 2] == pytest.approx(2 * (mid - lo) / (hi - lo) - 1, abs=1e-5)
    assert out[mask].min() == -1.0 and out[mask].max() == 1.0
    # Outliers are clipped, not allowed to squash the range.
    vol2 = vol.copy()
    vol2[4, 4, 4] = 1e9
    assert np.allclose(normalise_volume(vol2, mask)[mask].mean(), out[mask].mean(), atol=0.01)
    const = normalise_volume(np.where(mask, 5.0, 0.0).astype(np.float32), mask)
    assert np.all(const[mask] == 0.0) and np.all(const[~mask] == -1.0)


def test_sample_slices_shapes_and_determinism(train1):
    idx = list(range(train1.n_patients))
    a = train1.sample_slices(idx, generator=np.random.default_rng(3))
    b = train1.sample_slices(idx, generator=np.random.default_rng(3))
    assert a[0].shape == (len(idx), 4, 32, 32) and a[1].shape == (len(idx), 4, 32, 32)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # Row r comes from patient idx[r]; over several draws, different slices are picked.
    for r, p in enumerate(idx):
        assert any(np.array_equal(a[0][r], s) for s in train1.images(p))
    g = np.random.default_rng(4)
    draws = {train1.sample_slices([0], generator=g)[0].tobytes() for _ in range(30)}
    assert len(draws) == min(train1.n_slices(0), 30) or len(draws) > 1
    empty = train1.sample_slices([], generator=np.random.default_rng(0))
    assert empty[0].shape == (0, 4, 32, 32)
    with pytest.raises(IndexError):
        train1.sample_slices([train1.n_patients], generator=np.random.default_rng(0))
    with pytest.raises(TypeError):
        train1.sample_slices([0], generator=np.random.RandomState(0))  # type: ignore[arg-type]


def test_subset(train1):
    sub = train1.subset([1, 0])
    assert sub.n_patients == 2 and sub.case_ids == (train1.case_ids[1], train1.case_ids[0])
    assert np.array_equal(sub.images(0), train1.images(1))
    assert sub.fingerprint() != train1.fingerprint()
    with pytest.raises(ValueError):
        train1.subset([0, 0])


def test_fingerprint_changes_with_one_voxel_and_salt(site: Path):
    a = load_site(site, image_size=32)
    assert a.fingerprint() == load_site(site, image_size=32).fingerprint()
    assert a.fingerprint(salt=b"x") != a.fingerprint()
    assert len(a.fingerprint()) == 64
    cid = a.case_ids[0]
    path = site / cid / f"{cid}_flair.nii.gz"
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    seg = np.asarray(nib.load(str(site / cid / f"{cid}_seg.nii.gz")).dataobj)
    x, y, z = np.argwhere(seg > 0)[0]
    data[x, y, z] = data[x, y, z] + (7 if data.dtype.kind == "i" else 7.5)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    assert load_site(site, image_size=32).fingerprint() != a.fingerprint()


def test_splits(phantom_root: Path):
    s = phantom_root / "site-2"
    split = json.loads((s / "split.json").read_text())
    tr, te, al = (load_site(s, split=x, image_size=32) for x in ("train", "test", "all"))
    assert set(tr.case_ids) <= set(split["train"]) and set(te.case_ids) <= set(split["test"])
    assert set(al.case_ids) == set(tr.case_ids) | set(te.case_ids)
    with pytest.raises(ValueError):
        load_site(s, split="val")


def test_missing_modalities_filled(phantom_root: Path):
    ds = load_site(phantom_root / "site-3", image_size=32, modalities=("t1", "flair"))
    assert ds.missing == ("t1ce", "t2")
    imgs, *_ = ds.all_slices()
    assert np.all(imgs[:, 1] == -1.0) and np.all(imgs[:, 2] == -1.0)
    assert imgs[:, 0].max() == 1.0 and imgs[:, 3].max() == 1.0


def test_resizing(phantom_root: Path):
    for size in (16, 64):
        ds = load_site(phantom_root / "site-3", image_size=size, min_tumour_pixels=4)
        imgs, conds, segs, _ = ds.all_slices()
        assert imgs.shape[1:] == (4, size, size) and segs.shape[1:] == (size, size)
        assert np.all(imgs.transpose(1, 0, 2, 3)[:, conds[:, 0] < 0.5] == -1.0)
        assert set(np.unique(conds).tolist()) <= {0.0, 1.0}
        assert imgs.min() >= -1.0 and imgs.max() <= 1.0


def test_non_square_volume_is_padded():
    shape = (24, 16, 6)
    seg = np.zeros(shape, np.int16)
    seg[10:14, 6:10, 2:4] = 2
    vols = {m: np.where(np.ones(shape, bool), 100.0, 0.0).astype(np.float32) for m in ("t1", "t1ce", "t2", "flair")}
    for v in vols.values():
        v[:2] = 0.0
    case = Case(case_id="c", volumes=vols, seg=seg, affine=np.eye(4))
    im, co, sg = case_to_slices(case, image_size=16, modalities=("t1", "t1ce", "t2", "flair"), min_tumour_pixels=1)
    assert im.shape == (2, 4, 16, 16) and sg.shape == (2, 16, 16)
    # Width 16 was padded to 24 with background, so the first and last columns are background.
    assert np.all(im[:, :, :, 0] == -1.0) and np.all(co[:, 0, :, 0] == 0.0)
    all_slices = case_to_slices(case, image_size=16, modalities=("t1",), min_tumour_pixels=0)
    assert all_slices[0].shape[0] == 6


def test_no_slices_left_is_an_error(phantom_root: Path):
    with pytest.raises(DataError, match="no usable patient"):
        load_site(phantom_root / "site-1", image_size=32, min_tumour_pixels=10_000)


def _corrupt(site: Path, cid: str) -> None:
    p = site / cid / f"{cid}_t1.nii.gz"
    p.write_bytes(p.read_bytes()[:-50])


def test_bad_case_raises_by_default_naming_the_file(site: Path):
    split = json.loads((site / "split.json").read_text())
    _corrupt(site, split["train"][1])
    with pytest.raises(DataError) as info:
        load_site(site, image_size=32)
    assert f"{split['train'][1]}_t1.nii.gz" in str(info.value)


def test_skip_bad_warns_without_case_id(site: Path, caplog: pytest.LogCaptureFixture):
    split = json.loads((site / "split.json").read_text())
    bad = split["train"][1]
    _corrupt(site, bad)
    with caplog.at_level(logging.WARNING, logger="secgan.data.dataset"):
        ds = load_site(site, image_size=32, skip_bad=True)
    assert bad not in ds.case_ids and ds.n_patients == len(split["train"]) - 1
    warnings = [r for r in caplog.records if r.getMessage() == "case_skipped"]
    assert len(warnings) == 1
    fields = warnings[0].secgan_fields
    assert fields["index"] == 1 and "truncated" in fields["problem"]
    text = json.dumps(fields) + warnings[0].getMessage()
    assert bad not in text and "P00" not in text


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("not json", "not valid JSON"),
        ('{"train": []}', "exactly the keys"),
        ('{"train": "a", "test": []}', "list of strings"),
        ('{"train": ["../x"], "test": []}', "plain folder name"),
        ('{"train": ["a", "a"], "test": []}', "more than once"),
        ('{"train": ["a"], "test": ["a"]}', "both 'train' and 'test'"),
        ('{"train": ["ghost"], "test": []}', "does not exist"),
    ],
)
def test_bad_split_file(tmp_path: Path, content: str, fragment: str):
    (tmp_path / "a").mkdir()
    (tmp_path / "split.json").write_text(content)
    with pytest.raises(DataError, match=fragment) as info:
        read_split(tmp_path)
    assert "split.json" in str(info.value)


def test_missing_split_file(tmp_path: Path):
    with pytest.raises(DataError, match="split file is missing"):
        load_site(tmp_path)

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from secgan.data.dataset import load_site
from secgan.core.errors import DataError
from secgan.core.spec import encode_condition
from secgan.gan.synthetic import read_synthetic, save_grid, write_synthetic


def _samples(n: int = 10, size: int = 16, seed: int = 0):
    r = np.random.default_rng(seed)
    images = r.uniform(-1, 1, (n, 4, size, size)).astype(np.float32)
    conds = []
    for _ in range(n):
        seg = np.zeros((size, size), np.int16)
        seg[4:10, 4:10] = 2
        seg[6:8, 6:8] = 4
        seg[5, 5] = 1
        brain = np.zeros((size, size), bool)
        brain[2:14, 2:14] = True
        conds.append(encode_condition(seg, brain))
    return images, np.stack(conds)


def test_write_then_read_round_trips_and_writes_brats_layout(tmp_path: Path) -> None:
    images, conds = _samples(10)
    write_synthetic(tmp_path, images, conds, slices_per_case=4)
    got_i, got_c = read_synthetic(tmp_path)
    np.testing.assert_array_equal(got_i, images)
    np.testing.assert_array_equal(got_c, conds)
    cases = sorted(p.name for p in (tmp_path / "nifti").iterdir() if p.is_dir())
    assert cases == ["syn-0000", "syn-0001", "syn-0002"]
    for m in ("t1", "t1ce", "t2", "flair", "seg"):
        assert (tmp_path / "nifti" / "syn-0000" / f"syn-0000_{m}.nii.gz").is_file()
    assert (tmp_path / "previews" / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import nibabel as nib

    seg = np.asarray(nib.load(str(tmp_path / "nifti" / "syn-0000" / "syn-0000_seg.nii.gz")).dataobj)
    assert seg.shape == (16, 16, 8)  # 4 slices padded to the reader's minimum of 8
    assert set(np.unique(seg[:, :, :4]).tolist()) == {0, 1, 2, 4}
    assert not seg[:, :, 4:].any()
    t1 = np.asarray(nib.load(str(tmp_path / "nifti" / "syn-0000" / "syn-0000_t1.nii.gz")).dataobj)
    np.testing.assert_allclose(t1[:, :, 1], images[1, 0])
    # the data module reads it back like any site folder
    ps = load_site(tmp_path / "nifti", split="train", image_size=16)
    assert ps.n_patients == 3


def _write_raw(path: Path, tensors: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "synthetic.safetensors"))
    return path


@pytest.mark.parametrize(
    "tensors,needle",
    [
        ({"images": torch.zeros(2, 4, 16, 16)}, "expected tensors"),
        ({"images": torch.zeros(2, 4, 16, 16), "conds": torch.zeros(2, 4, 16, 16), "x": torch.zeros(1)}, "expected tensors"),
        ({"images": torch.zeros(2, 4, 16, 16, dtype=torch.float64), "conds": torch.zeros(2, 4, 16, 16)}, "dtype"),
        # (3 channels are a valid image spec now, e.g. RGB with an instance map; a non-square image is not)
        ({"images": torch.zeros(2, 3, 16, 8), "conds": torch.zeros(2, 3, 16, 8)}, "shape"),
        ({"images": torch.zeros(2, 3, 16, 16), "conds": torch.zeros(2, 3, 8, 8)}, "differ"),
        ({"images": torch.zeros(2, 4, 16, 16), "conds": torch.zeros(3, 4, 16, 16)}, "differ"),
        ({"images": torch.full((2, 4, 16, 16), float("nan")), "conds": torch.zeros(2, 4, 16, 16)}, "NaN"),
        ({"images": torch.full((2, 4, 16, 16), 3.0), "conds": torch.zeros(2, 4, 16, 16)}, "outside"),
        ({"images": torch.zeros(2, 4, 16, 16), "conds": torch.full((2, 4, 16, 16), -1.0)}, "outside"),
    ],
)
def test_malformed_synthetic_files_name_the_file(tmp_path: Path, tensors: dict, needle: str) -> None:
    folder = _write_raw(tmp_path / "syn", tensors)
    with pytest.raises(DataError, match=needle) as ei:
        read_synthetic(folder)
    assert "synthetic.safetensors" in str(ei.value)


def test_truncated_or_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_synthetic(tmp_path)
    images, conds = _samples(2)
    write_synthetic(tmp_path, images, conds, previews=False, nifti=False)
    f = tmp_path / "synthetic.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match="synthetic.safetensors"):
        read_synthetic(tmp_path)


def test_write_refuses_bad_arrays(tmp_path: Path) -> None:
    images, conds = _samples(2)
    with pytest.raises(DataError):
        write_synthetic(tmp_path, images[:, :, :, :5], conds)  # (3 channels alone are a valid RGB spec now)
    with pytest.raises(DataError):
        write_synthetic(tmp_path, images, conds[:1])
    bad = images.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError):
        write_synthetic(tmp_path, bad, conds)


def test_save_grid_writes_a_png_with_real_rows(tmp_path: Path) -> None:
    images, conds = _samples(3)
    p = save_grid(tmp_path / "g.png", images, images[::-1], conds)
    assert p.read_bytes()[:4] == b"\x89PNG"


def test_synthetic_nifti_state_their_geometry_honestly(tmp_path):
    """RAS+ axes with xform code 2 (aligned, not scanner coordinates), the pixel size given or said to
    be unknown, and the reader reads back exactly the slices that were written."""
    import nibabel as nib

    from secgan.gan.synthetic import SYNTHETIC_XFORM_CODE
    from tests.unit.audits.phantoms import phantom_slices

    images, conds, _ = phantom_slices([1, 2], size=32, slices=8)
    for pixel, unit in ((None, "unknown"), (1.5, "mm")):
        out = write_synthetic(tmp_path / f"p{pixel}", images, conds, previews=False, pixel_mm=pixel)
        case = sorted((out / "nifti").glob("syn-*"))[0]
        img = nib.load(str(case / f"{case.name}_t1.nii.gz"))
        h = img.header
        assert int(h["qform_code"]) == int(h["sform_code"]) == SYNTHETIC_XFORM_CODE
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert h.get_xyzt_units()[0] == unit
        text = h["descrip"].tobytes().decode("ascii")
        assert "independent 2-D slices" in text and (("1.5 mm" in text) if pixel else ("unknown" in text))
        if pixel:
            assert np.allclose(h.get_zooms()[:2], (1.5, 1.5))
        back = load_site(out / "nifti", split="train", image_size=32, crop="none")
        got = np.concatenate([back.images(i) for i in range(back.n_patients)])
        assert got.shape[0] > 0 and got.shape[1:] == images.shape[1:]
    with pytest.raises(ValueError, match="pixel_mm"):
        write_synthetic(tmp_path / "bad", images, conds, previews=False, pixel_mm=0.0)

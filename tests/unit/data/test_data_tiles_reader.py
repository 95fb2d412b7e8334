"""The tile reader (secgan.data.tiles) and the checked image files under it, on real files from Pillow:
one good folder read back exactly, and one negative test per check, each naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from secgan.core.errors import DataError
from secgan.data.imagefile import read_labels, read_rgb
from secgan.data.tiles import read_tiles
from tests.unit.data.tile_fixtures import instances, png_rgb16, rgb, tile_site, write_split

CASES = {"CaseA": 2, "CaseB": 1, "CaseC": 2}


def _site(tmp_path: Path) -> Path:
    return tile_site(tmp_path / "site", CASES)


def test_reads_tiles_grouped_by_case_in_unit_range_chw(tmp_path: Path) -> None:
    site = _site(tmp_path)
    ts = read_tiles(site, split="all")
    assert ts.case_ids == ("CaseA", "CaseB", "CaseC")
    assert ts.stems == ("CaseA_t01", "CaseA_t02", "CaseB_t01", "CaseC_t01", "CaseC_t02")
    assert ts.case_index.tolist() == [0, 0, 1, 2, 2]
    assert ts.images.shape == (5, 3, 16, 16) and ts.images.dtype == np.float32
    assert ts.instances.dtype == np.int32 and ts.instances.shape == (5, 16, 16)
    # HWC uint8 -> CHW / 255, exactly
    np.testing.assert_array_equal(ts.images[2], np.moveaxis(rgb(seed=10 * 1 + 1), -1, 0).astype(np.float32) / 255)
    np.testing.assert_array_equal(ts.instances[0], instances())
    assert not ts.images.flags.writeable
    assert read_tiles(site, split="train").case_ids == ("CaseA", "CaseB")
    assert read_tiles(site, split="test").case_ids == ("CaseC",)
    assert "Case" not in repr(ts)


def test_one_tile_per_case_names_without_tile_suffix(tmp_path: Path) -> None:
    site = tmp_path / "monuseg"
    (site / "images").mkdir(parents=True)
    (site / "masks").mkdir()
    for k, name in enumerate(["TCGA-A7-A13E-01Z-00-DX1", "TCGA-18-5592-01Z-00-DX1"]):
        Image.fromarray(rgb(seed=k)).save(site / "images" / f"{name}.tif")
        Image.fromarray(instances().astype(np.uint16)).save(site / "masks" / f"{name}.png")  # 16-bit PNG mask
    write_split(site, ["TCGA-18-5592-01Z-00-DX1"], ["TCGA-A7-A13E-01Z-00-DX1"])
    ts = read_tiles(site, split="all")
    assert ts.case_ids == ("TCGA-18-5592-01Z-00-DX1", "TCGA-A7-A13E-01Z-00-DX1")
    np.testing.assert_array_equal(ts.instances[1], instances())


def test_palette_and_opaque_rgba_are_converted(tmp_path: Path) -> None:
    px = rgb()
    Image.fromarray(px).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "p.png")
    pal = read_rgb(tmp_path / "p.png")
    np.testing.assert_array_equal(pal, np.asarray(Image.open(tmp_path / "p.png").convert("RGB")))
    Image.fromarray(np.dstack([px, np.full(px.shape[:2], 255, np.uint8)]), mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "a.png"), px)


def _broken(site: Path, what: str) -> Path:
    """Damage one file of a good site in the way ``what`` names; returns the file the error must name."""
    img, mask = site / "images" / "CaseA_t02.png", site / "masks" / "CaseA_t02.tif"
    if what == "grey":
        Image.fromarray(rgb()[..., 0], mode="L").save(img)
    elif what == "rgba_transparent":
        a = np.full((16, 16), 255, np.uint8)
        a[0, 0] = 0
        Image.fromarray(np.dstack([rgb(), a]), mode="RGBA").save(img)
    elif what == "cmyk":
        img.unlink()
        img = img.with_suffix(".tif")
        Image.fromarray(rgb()).convert("CMYK").save(img)
    elif what == "bit_depth":
        png_rgb16(img)
    elif what == "size_mismatch":
        Image.fromarray(instances(16, 12), mode="I").save(mask)
        return mask
    elif what == "truncated":
        data = img.read_bytes()
        img.write_bytes(data[: len(data) // 2])
    elif what == "corrupt":
        img.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    elif what == "missing_mask":
        mask.unlink()
    elif what == "unpaired_mask":
        img.unlink()
        return mask
    elif what == "duplicate_stem":
        Image.fromarray(rgb()).save(img.with_suffix(".tif"))
        return img.with_suffix(".tif")
    elif what == "tile_size":
        Image.fromarray(rgb(24, 24)).save(img)
        Image.fromarray(instances(24, 24), mode="I").save(mask)
    elif what == "float_mask":
        Image.fromarray(instances().astype(np.float32), mode="F").save(mask)
        return mask
    elif what == "colour_mask":
        Image.fromarray(rgb()).save(mask)
        return mask
    elif what == "bad_name":
        img.rename(img.with_name("Case A_t02.png"))
        return img.with_name("Case A_t02.png")
    return img


@pytest.mark.parametrize(("what", "message"), [
    ("grey", "colour mode 'L' refused"),
    ("rgba_transparent", "transparent pixels refused"),
    ("cmyk", "colour mode 'CMYK' refused"),
    ("bit_depth", "16 bits per channel refused"),
    ("size_mismatch", "mask is 12x16, its image 16x16"),
    ("truncated", "truncated or corrupt"),
    ("corrupt", "unreadable image"),
    ("missing_mask", "image has no mask"),
    ("unpaired_mask", "mask has no image"),
    ("duplicate_stem", "a second file for tile 'CaseA_t02'"),
    ("tile_size", "one tile size per site"),
    ("float_mask", "label map mode 'F' refused"),
    ("colour_mask", "label map mode 'RGB' refused"),
    ("bad_name", "file name is not"),
])
def test_each_malformed_file_is_a_clear_error_naming_it(tmp_path: Path, what: str, message: str) -> None:
    site = _site(tmp_path)
    culprit = _broken(site, what)
    with pytest.raises(DataError) as err:
        read_tiles(site, split="all")
    assert message in str(err.value)
    assert str(culprit) in str(err.value)


def test_bit_depth_check_is_needed_pillow_alone_narrows_silently(tmp_path: Path) -> None:
    png_rgb16(tmp_path / "x.png")
    im = Image.open(tmp_path / "x.png")
    assert im.mode == "RGB"  # what the header check exists for
    with pytest.raises(DataError, match="16 bits per channel"):
        read_rgb(tmp_path / "x.png")


def test_split_naming_a_case_without_tiles_is_refused(tmp_path: Path) -> None:
    site = _site(tmp_path)
    write_split(site, ["CaseA", "Ghost"], ["CaseC"])
    with pytest.raises(DataError, match="split.json"):
        read_tiles(site)


def test_missing_folders_and_negative_ids(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="images: folder is missing"):
        read_tiles(tmp_path)
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(tmp_path / "m.png")
    assert read_labels(tmp_path / "m.png").max() == 40000
    Image.fromarray(np.full((16, 16), -3, np.int32), mode="I").save(tmp_path / "neg.tif")
    with pytest.raises(DataError, match="negative ids"):
        read_labels(tmp_path / "neg.tif")


def test_oversized_image_is_refused_from_its_header(tmp_path: Path) -> None:
    from secgan.data.imagefile import ImageLimits

    Image.fromarray(rgb(64, 64)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match="outside 8..32 pixels"):
        read_rgb(tmp_path / "big.png", ImageLimits(max_side=32))

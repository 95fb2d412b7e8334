"""The ISIC-style reader (secgan.data.isic) on real folders written through Pillow: both CSV styles,
patient grouping, resizing, and one negative test per check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from secgan.core.errors import DataError
from secgan.data.derm import DERM_CLASSES
from secgan.data.isic import read_isic
from tests.unit.data.tile_fixtures import isic_site, rgb, write_split

ROWS = [("IMG_3", "PB", "NV"), ("IMG_1", "PA", "MEL"), ("IMG_2", "PA", "nv"), ("IMG_4", "PC", " bcc ")]


def test_reads_images_labels_and_patients(tmp_path: Path) -> None:
    site = isic_site(tmp_path / "s", ROWS)
    ls = read_isic(site, split="all", image_size=16)
    assert ls.patient_ids == ("PA", "PB", "PC")
    assert ls.image_ids == ("IMG_1", "IMG_2", "IMG_3", "IMG_4")
    assert ls.patient_index.tolist() == [0, 0, 1, 2]  # a patient with two images keeps both under one index
    assert [DERM_CLASSES[k] for k in ls.labels] == ["MEL", "NV", "NV", "BCC"]
    assert ls.images.shape == (4, 3, 16, 16) and ls.images.dtype == np.float32
    assert 0.0 <= ls.images.min() and ls.images.max() <= 1.0
    # 20x16 -> centre crop 16x16 (2 columns off each side), no resize at 16: exact values
    np.testing.assert_array_equal(ls.images[0], np.moveaxis(rgb(16, 20, seed=1)[:, 2:18], -1, 0).astype(np.float32) / 255)
    assert read_isic(site, split="train", image_size=16).patient_ids == ("PA", "PB")
    assert read_isic(site, split="test", image_size=32).images.shape == (1, 3, 32, 32)
    assert "PA" not in repr(ls)


def test_one_hot_isic_2019_columns(tmp_path: Path) -> None:
    site = isic_site(tmp_path / "s", ROWS)
    header = "image,patient_id," + ",".join(DERM_CLASSES) + ",UNK"
    lines = [header]
    for image_id, pid, diag in ROWS:
        hot = ["1.0" if c.lower() == diag.strip().lower() else "0.0" for c in DERM_CLASSES]
        lines.append(",".join([image_id, pid, *hot, "0.0"]))
    (site / "labels.csv").write_text("\n".join(lines) + "\n")
    ls = read_isic(site, split="all", image_size=16)
    assert [DERM_CLASSES[k] for k in ls.labels] == ["MEL", "NV", "NV", "BCC"]


def _csv(site: Path) -> Path:
    return site / "labels.csv"


def _break(site: Path, what: str) -> None:
    text = _csv(site).read_text()
    if what == "unknown_class":
        _csv(site).write_text(text.replace("IMG_4,PC, bcc ", "IMG_4,PC,psoriasis"))
    elif what == "unknown_one_hot":
        lines = ["image,patient_id," + ",".join(DERM_CLASSES) + ",UNK"]
        for image_id, pid, _ in ROWS:
            lines.append(",".join([image_id, pid] + ["0.0"] * len(DERM_CLASSES) + ["1.0"]))
        _csv(site).write_text("\n".join(lines) + "\n")
    elif what == "two_hot":
        lines = ["image,patient_id," + ",".join(DERM_CLASSES)]
        for image_id, pid, _ in ROWS:
            lines.append(",".join([image_id, pid, "1.0", "1.0"] + ["0.0"] * (len(DERM_CLASSES) - 2)))
        _csv(site).write_text("\n".join(lines) + "\n")
    elif what == "duplicate_id":
        _csv(site).write_text(text + "IMG_1,PC,NV\n")
    elif what == "listed_missing":
        (site / "images" / "IMG_2.png").unlink()
    elif what == "present_unlisted":
        Image.fromarray(rgb()).save(site / "images" / "IMG_9.png")
    elif what == "patient_empty":
        _csv(site).write_text(text.replace("IMG_3,PB,", "IMG_3,,"))
    elif what == "patient_column":
        _csv(site).write_text(text.replace("patient_id", "lesion_id"))
    elif what == "no_label_column":
        _csv(site).write_text(text.replace("diagnosis", "target"))
    elif what == "two_csvs":
        (site / "metadata.csv").write_text("image,age\n")
    elif what == "ragged":
        _csv(site).write_text(text + "IMG_5,PC\n")
    elif what == "grey_image":
        Image.fromarray(rgb()[..., 1], mode="L").save(site / "images" / "IMG_3.png")
    elif what == "truncated_image":
        p = site / "images" / "IMG_3.png"
        p.write_bytes(p.read_bytes()[:-60])
    elif what == "not_utf8":
        _csv(site).write_bytes(b"image_name,patient_id,diagnosis\nIMG_1,P\xff,NV\n")


@pytest.mark.parametrize(("what", "message"), [
    ("unknown_class", "line 5: unknown class 'psoriasis'"),
    ("unknown_one_hot", "line 2: unknown class 'UNK'"),
    ("two_hot", "line 2: one-hot row has 2 classes set"),
    ("duplicate_id", "line 6: duplicate image id (first on line 3)"),
    ("listed_missing", "line 4: image listed but missing"),
    ("present_unlisted", "IMG_9.png: image present but not listed"),
    ("patient_empty", "line 2: patient id missing"),
    ("patient_column", "patient id missing: no 'patient_id' column"),
    ("no_label_column", "no 'diagnosis' column and no one-hot column"),
    ("two_csvs", "expected exactly one label CSV, found 2"),
    ("ragged", "line 6 has 2 fields"),
    ("grey_image", "IMG_3.png: colour mode 'L' refused"),
    ("truncated_image", "IMG_3.png: truncated or corrupt"),
    ("not_utf8", "not UTF-8"),
])
def test_each_malformed_input_is_a_clear_error_naming_the_file(tmp_path: Path, what: str, message: str) -> None:
    site = isic_site(tmp_path / "s", ROWS)
    _break(site, what)
    with pytest.raises(DataError) as err:
        read_isic(site, split="all", image_size=16)
    assert message in str(err.value)
    assert str(site) in str(err.value)


def test_split_must_name_known_patients(tmp_path: Path) -> None:
    site = isic_site(tmp_path / "s", ROWS)
    write_split(site, ["PA", "PZ"], ["PC"])
    with pytest.raises(DataError, match="split.json"):
        read_isic(site, image_size=16)


def test_csv_can_be_named_and_jpeg_is_read(tmp_path: Path) -> None:
    site = isic_site(tmp_path / "s", ROWS)
    (site / "labels.csv").rename(site / "ISIC_GroundTruth.csv")
    (site / "other.csv").write_text("x\n")
    p = site / "images" / "IMG_4.png"
    Image.open(p).convert("RGB").save(site / "images" / "IMG_4.jpg", quality=95)
    p.unlink()
    ls = read_isic(site, split="all", image_size=16, csv_name="ISIC_GroundTruth.csv")
    assert len(ls.image_ids) == 4

"""The dermoscopy phantom: ISIC-style layout read back by the ISIC reader, class imbalance, and the
three institutions' differences in class mix and acquisition (colour cast, vignetting, hair)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from secgan.data import derm as dm
from secgan.data.isic import read_isic


def test_layout_round_trips_through_the_isic_reader(tmp_path: Path) -> None:
    dirs = dm.write_derm_phantom(tmp_path, sites=3, patients=6, seed=2, size=32)
    assert [d.name for d in dirs] == ["site-1", "site-2", "site-3"]
    site = dirs[0]
    rows = list(csv.DictReader((site / "labels.csv").open()))
    assert list(rows[0]) == ["image_name", "patient_id", "diagnosis"]
    assert {r["diagnosis"] for r in rows} <= set(dm.DERM_CLASSES)
    assert sorted(p.stem for p in (site / "images").iterdir()) == sorted(r["image_name"] for r in rows)
    split = json.loads((site / "split.json").read_text())
    assert sorted(split["train"] + split["test"]) == [dm.patient_id(1, p) for p in range(1, 7)]
    assert json.loads((site / "phantom.json").read_text())["domain"] == "derm"
    ls = read_isic(site, split="all", image_size=32)
    assert len(ls.image_ids) == len(rows)
    first = rows[0]
    k = ls.image_ids.index(first["image_name"])
    assert ls.patient_ids[ls.patient_index[k]] == first["patient_id"]
    assert dm.DERM_CLASSES[ls.labels[k]] == first["diagnosis"]
    want = dm.synthesize_image(2, 1, 1, 1, dm.patient_images(2, 1, 1)[0], size=32)
    np.testing.assert_array_equal(ls.images[k], np.moveaxis(want, -1, 0).astype(np.float32) / 255)


def test_classes_are_strongly_imbalanced_and_patients_have_several_images() -> None:
    labels, per_patient = [], []
    for p in range(1, 301):
        imgs = dm.patient_images(0, 1, p)
        labels += imgs
        per_patient.append(len(imgs))
    share = np.bincount(labels, minlength=len(dm.DERM_CLASSES)) / len(labels)
    assert share[dm.DERM_CLASSES.index("NV")] > 0.5
    assert share.min() < 0.03  # a rare class
    assert 3 <= len(dm.DERM_CLASSES) <= 7
    assert max(per_patient) > 1 and min(per_patient) == 1


def test_institutions_differ_in_class_mix() -> None:
    mel, bcc = dm.DERM_CLASSES.index("MEL"), dm.DERM_CLASSES.index("BCC")
    mixes = [dm.site_acquisition(0, s).mix for s in (1, 2, 3)]
    assert mixes[1][mel] > 2 * mixes[0][mel]  # the referral centre sees melanoma
    assert mixes[2][bcc] > 2 * mixes[0][bcc]  # the skin-cancer clinic sees carcinoma
    for m in mixes:
        assert abs(m.sum() - 1) < 1e-9


def _images(site: int, n: int = 8) -> np.ndarray:
    nv = dm.DERM_CLASSES.index("NV")
    return np.stack([dm.synthesize_image(0, site, p, 1, nv, size=64) for p in range(1, n + 1)]).astype(np.float64)


def test_institutions_differ_in_acquisition() -> None:
    ims = {s: _images(s) for s in (1, 2, 3)}
    # colour cast: red/blue balance of the whole image
    rb = {s: ims[s][..., 0].mean() / ims[s][..., 2].mean() for s in ims}
    assert rb[1] > rb[2] + 0.1
    # site 2's round dermoscope field: black corners; the others not
    corner = {s: ims[s][:, :3, :3].mean() for s in ims}
    assert corner[2] < 15 and corner[1] > 60 and corner[3] > 40
    # vignetting: site 3 darkens towards the edge more than site 1 (edge ring vs centre ring of skin)
    yy, xx = np.mgrid[0:64, 0:64]
    r = np.hypot(yy - 31.5, xx - 31.5) / 32
    ring = (r > 0.8) & (r < 0.95)
    inner = (r > 0.55) & (r < 0.65)
    fall = {s: ims[s][:, ring].mean() / ims[s][:, inner].mean() for s in ims}
    assert fall[3] < fall[1] - 0.05
    # hair: thin dark strokes are far more frequent at site 3 than at site 1
    assert dm.site_acquisition(0, 3).hairs > 3 * dm.site_acquisition(0, 1).hairs
    dark = {s: (ims[s][:, ~(r < 0.5)].mean(axis=-1) < 60).mean() for s in (1, 3)}
    assert dark[3] > 2 * dark[1]


def test_deterministic_per_image() -> None:
    a = dm.synthesize_image(4, 2, 3, 1, 0, size=32)
    assert np.array_equal(a, dm.synthesize_image(4, 2, 3, 1, 0, size=32))
    assert not np.array_equal(a, dm.synthesize_image(4, 2, 3, 2, 0, size=32))


@pytest.mark.parametrize("kwargs", [dict(sites=0), dict(patients=1), dict(size=8), dict(test_fraction=0.0)])
def test_impossible_arguments(tmp_path: Path, kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):  # the error names the argument
        dm.write_derm_phantom(tmp_path, **(dict(sites=1, patients=2, seed=0, size=32) | kwargs))

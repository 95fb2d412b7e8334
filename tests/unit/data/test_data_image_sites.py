"""A site folder of 2-D RGB images read by ``load_site`` into slices of the run's image spec
(``secgan.data.image_sites``): what a site, its audit, a pretraining and an in-process run load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from secgan.core.errors import DataError
from secgan.core.spec import ImageSpec, rgb_spec
from secgan.data.dataset import load_site
from secgan.data.derm import DERM_CLASSES, write_derm_phantom
from secgan.data.isic import read_isic
from secgan.data.nuclei import instances_to_classes, write_nuclei_phantom
from secgan.data.tiles import read_tiles

NUCLEI = rgb_spec(16, condition="instances")
DERM = rgb_spec(32, condition="class", cond_names=DERM_CLASSES)


@pytest.fixture(scope="module")
def tiles_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (site,) = write_nuclei_phantom(tmp_path_factory.mktemp("nuclei"), sites=1, cases=5, tiles=2, seed=3, size=32)
    return site


@pytest.fixture(scope="module")
def isic_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (site,) = write_derm_phantom(tmp_path_factory.mktemp("derm"), sites=1, patients=8, seed=3, size=32)
    return site


def test_tiles_become_patches_of_the_spec_with_their_case(tiles_site: Path) -> None:
    ds = load_site(tiles_site, split="train", image_size=16, image=NUCLEI)
    tiles = read_tiles(tiles_site, split="train")
    assert ds.spec == NUCLEI and ds.case_ids == tiles.case_ids
    images, conds, segs, owner = ds.all_slices()
    assert len(images) == 4 * len(tiles.stems)  # a 32 px tile is four 16 px patches
    for k in range(ds.n_patients):  # every patch stays with its case: the case's tiles, cut
        n_tiles = int((tiles.case_index == k).sum())
        assert ds.n_slices(k) == 4 * n_tiles
    first = np.flatnonzero(tiles.case_index == 0)[0]
    np.testing.assert_array_equal(ds.images(0)[0], tiles.images[first][:, :16, :16])
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.shape[1:] == (3, 16, 16)
    np.testing.assert_array_equal(conds.sum(axis=1), 1.0)  # one-hot background / nucleus / boundary
    for c, s in zip(conds, segs):
        np.testing.assert_array_equal(np.argmax(c, axis=0), instances_to_classes(s))
        assert set(np.unique(s)) == set(range(int(s.max()) + 1))  # nuclei renumbered 1..n per patch


def test_the_value_range_of_the_spec_is_what_the_slices_hold(tiles_site: Path) -> None:
    unit = load_site(tiles_site, split="all", image_size=32, image=rgb_spec(32, condition="instances"))
    signed = dataclasses.replace(rgb_spec(32, condition="instances"), value_range=(-1.0, 1.0))
    other = load_site(tiles_site, split="all", image_size=32, image=signed)
    np.testing.assert_allclose(other.all_slices()[0], unit.all_slices()[0] * 2 - 1, atol=1e-6)


def test_lesions_carry_their_class_and_patient(isic_site: Path) -> None:
    ds = load_site(isic_site, split="all", image_size=32, image=DERM)
    lesions = read_isic(isic_site, split="all", image_size=32)
    images, conds, _, owner = ds.all_slices()
    assert conds.shape == (len(lesions.labels), 7, 1, 1)
    np.testing.assert_array_equal(np.argmax(conds[:, :, 0, 0], axis=1), lesions.labels)
    np.testing.assert_array_equal(owner, lesions.patient_index)
    free = load_site(isic_site, split="all", image_size=32, image=rgb_spec(32, condition="none"))
    assert free.all_slices()[1].shape == (len(lesions.labels), 0, 1, 1)


def test_the_built_in_spec_when_none_is_given(tiles_site: Path, isic_site: Path) -> None:
    assert load_site(tiles_site, split="train", image_size=16).spec == NUCLEI
    assert load_site(isic_site, split="train", image_size=32).spec == DERM


@pytest.mark.parametrize("which, image, words", [
    ("tiles", rgb_spec(16, condition="class", cond_names=("a", "b")), "image.condition"),
    ("tiles", dataclasses.replace(ImageSpec(size=16), condition="instances"), "image.image_channels is 4"),
    ("tiles", rgb_spec(16, condition="instances", cond_names=("bg", "fg")), "image.cond_channels is 2"),
    ("isic", rgb_spec(32, condition="instances"), "image.condition"),
    ("tiles", rgb_spec(64, condition="instances"), "smaller than image.size = 64"),
])
def test_a_spec_the_folder_cannot_give_is_refused_naming_the_key(tiles_site, isic_site, which, image, words) -> None:
    site = tiles_site if which == "tiles" else isic_site
    with pytest.raises(DataError, match=words):
        load_site(site, split="train", image_size=image.size, image=image)


def test_a_volume_folder_refuses_an_rgb_spec(phantom_root: Path) -> None:
    with pytest.raises(DataError, match="volume .*3 channels and a 'instances' condition"):
        load_site(phantom_root / "site-1", split="train", image_size=32, image=rgb_spec(32, condition="instances"))
    assert load_site(phantom_root / "site-1", split="train", image_size=32, image=ImageSpec(size=32)).n_patients > 0


def test_unlisted_is_the_patients_split_json_does_not_list(tmp_path: Path) -> None:
    for write, kw, image in ((write_nuclei_phantom, dict(cases=5, tiles=1), NUCLEI),
                             (write_derm_phantom, dict(patients=6), DERM)):
        (site,) = write(tmp_path / write.__name__, sites=1, seed=4, size=32, **kw)
        split = json.loads((site / "split.json").read_text())
        dropped = split["train"].pop()
        (site / "split.json").write_text(json.dumps(split))
        un = load_site(site, split="unlisted", image_size=image.size, image=image)
        assert un.case_ids == (dropped,)
        assert dropped not in load_site(site, split="all", image_size=image.size, image=image).case_ids

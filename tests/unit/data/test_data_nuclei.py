"""The nuclei phantom: layout read back by the tile reader, determinism per component, organ
differences (stain, density, size), and the instance -> 3-class map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from secgan.data import nuclei as nu
from secgan.data.tiles import read_tiles


def test_layout_round_trips_through_the_tile_reader(tmp_path: Path) -> None:
    dirs = nu.write_nuclei_phantom(tmp_path, sites=2, cases=4, tiles=2, seed=3, size=32)
    assert [d.name for d in dirs] == ["site-1", "site-2"]
    site = dirs[1]
    names = sorted(p.name for p in (site / "images").iterdir())
    assert names[0] == "Site2-C001_t01.png" and len(names) == 8
    assert sorted(p.name for p in (site / "masks").iterdir())[0] == "Site2-C001_t01.tif"
    split = json.loads((site / "split.json").read_text())
    assert sorted(split["train"] + split["test"]) == [f"Site2-C00{k}" for k in range(1, 5)] and split["test"]
    marker = json.loads((site / "phantom.json").read_text())
    assert marker["domain"] == "nuclei" and marker["organ"] == "liver"
    ts = read_tiles(site, split="all")
    k = ts.stems.index("Site2-C003_t02")
    rgb, inst = nu.synthesize_tile(3, 2, 3, 2, size=32)
    np.testing.assert_array_equal(ts.instances[k], inst)
    np.testing.assert_array_equal(ts.images[k], np.moveaxis(rgb, -1, 0).astype(np.float32) / 255)
    assert ts.case_ids[ts.case_index[k]] == "Site2-C003"


def test_tiles_are_deterministic_and_independent_of_how_many_are_made(tmp_path: Path) -> None:
    a = nu.write_nuclei_phantom(tmp_path / "a", sites=1, cases=2, tiles=1, seed=5, size=32)[0]
    b = nu.write_nuclei_phantom(tmp_path / "b", sites=1, cases=3, tiles=2, seed=5, size=32)[0]
    for sub in ("images", "masks"):
        for name in ("Site1-C001_t01", "Site1-C002_t01"):
            suffix = ".png" if sub == "images" else ".tif"
            assert (a / sub / f"{name}{suffix}").read_bytes() == (b / sub / f"{name}{suffix}").read_bytes()
    r1, _ = nu.synthesize_tile(5, 1, 1, 1, size=32)
    r2, _ = nu.synthesize_tile(6, 1, 1, 1, size=32)
    assert not np.array_equal(r1, r2)


def _organ_stats(site: int, n: int = 12) -> dict[str, float]:
    counts, areas, nucleus_rgb, stroma_rgb = [], [], [], []
    for t in range(1, n + 1):
        rgb, inst = nu.synthesize_tile(0, site, 1 + t % 3, t, size=64)
        ids, sizes = np.unique(inst[inst > 0], return_counts=True)
        counts.append(len(ids))
        areas.extend(sizes.tolist())
        nucleus_rgb.append(rgb[inst > 0].mean(0))
        stroma_rgb.append(rgb[inst == 0].mean(0))
    return {"count": float(np.mean(counts)), "area": float(np.mean(areas)),
            "nucleus": np.mean(nucleus_rgb, 0), "stroma": np.mean(stroma_rgb, 0)}


def test_organs_differ_in_density_size_and_stain() -> None:
    stats = {nu.site_stain(0, s).organ: _organ_stats(s) for s in (1, 2, 3, 4)}
    assert set(stats) == set(nu.ORGANS)
    # prostate: dense small nuclei; liver: sparse large ones (ORGAN_LOOKS)
    assert stats["prostate"]["count"] > 2 * stats["liver"]["count"]
    assert stats["liver"]["area"] > 1.8 * stats["prostate"]["area"]
    for organ, s in stats.items():
        # haematoxylin makes nuclei dark blue-purple against pink stroma: red and green fall more than blue
        drop = s["stroma"] - s["nucleus"]
        assert drop[0] > 40 and drop[1] > 20, organ
    # stain colour differs between organs (mean stroma colour more than a few grey levels apart)
    colours = np.array([s["stroma"] for s in stats.values()])
    assert np.abs(colours[:, None] - colours[None]).max() > 8


def test_site_stain_is_per_site_and_cycles_through_the_organs() -> None:
    assert nu.site_stain(0, 5).organ == "breast"
    assert not np.allclose(nu.site_stain(0, 1).h_vec, nu.site_stain(0, 5).h_vec)
    assert nu.site_stain(0, 1).organ == nu.site_stain(7, 1).organ


def test_nuclei_do_not_overlap_and_ids_are_one_to_n() -> None:
    _, inst = nu.synthesize_tile(1, 4, 2, 1, size=64)
    ids = np.unique(inst)
    assert ids[0] == 0 and ids[1:].tolist() == list(range(1, len(ids)))


def test_instances_to_classes_known_answer() -> None:
    inst = np.array([
        [0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 2, 2],
        [0, 1, 1, 1, 2, 2],
        [0, 1, 1, 1, 2, 2],
        [0, 0, 0, 0, 0, 0],
    ])
    want = np.array([
        [0, 0, 0, 0, 0, 0],
        [0, 2, 2, 2, 2, 2],
        [0, 2, 1, 2, 2, 1],  # (2, 5): on the tile edge, all in-tile neighbours are 2 -> interior
        [0, 2, 2, 2, 2, 2],
        [0, 0, 0, 0, 0, 0],
    ])
    np.testing.assert_array_equal(nu.instances_to_classes(inst), want)
    back = nu.classes_to_instances(want)
    # instance 1 has an interior pixel and grows back over its boundary ring; instance 2 comes back too
    assert len(np.unique(back)) == 3 and (back > 0).sum() == (inst > 0).sum()


def test_classes_to_instances_keeps_nuclei_without_interior() -> None:
    cls = np.zeros((5, 5), np.uint8)
    cls[1:3, 1:3] = nu.BOUNDARY
    out = nu.classes_to_instances(cls)
    assert set(np.unique(out).tolist()) == {0, 1} and (out == 1).sum() == 4


@pytest.mark.parametrize("kwargs", [dict(sites=0), dict(cases=1), dict(tiles=0), dict(size=8), dict(test_fraction=1.0)])
def test_impossible_arguments(tmp_path: Path, kwargs) -> None:
    args = dict(sites=1, cases=2, tiles=1, seed=0, size=32) | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):  # the error names the argument
        nu.write_nuclei_phantom(tmp_path, **args)

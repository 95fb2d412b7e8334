"""Reader for a site's folder of image tiles with instance masks (MoNuSeg/Kumar-style), grouped by case.

Layout (what :func:`secgan.data.nuclei.write_nuclei_phantom` writes)::

    site/images/<stem>.{png,tif,tiff}   RGB, 8 bits per channel
    site/masks/<stem>.{png,tif,tiff}    instance map: one integer channel, 0 = background
    site/split.json                     {"train": [case ids], "test": [case ids]}

A stem is ``<case>_t<NN>`` (tile NN of slide case ``<case>``) or just ``<case>`` (one tile per case,
as MoNuSeg ships its TCGA images). The case is the patient, the unit of privacy: the split lists
cases, and every tile keeps the index of its case.

Checks, each a :class:`DataError` naming the file (colour, bit depth and damage in
:mod:`secgan.data.imagefile`): an image without a mask or a mask without an image, two files with
one stem, a stem that is not a plain name, an image and its mask of different sizes, tiles of
different sizes in one folder, a split that names a case with no tile.

Returned arrays: images ``float32 [N, 3, H, W]`` in [0, 1] (8-bit value / 255, HWC -> CHW),
instance maps ``int32 [N, H, W]``, case index ``int64 [N]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from secgan.core.errors import DataError
from secgan.data.imagefile import ImageLimits, files_by_stem, read_labels, read_rgb, to_chw_unit
from secgan.data.splits import IMAGE_SPLITS, split_ids

TILE_STEM = re.compile(r"^(?P<case>[A-Za-z0-9][A-Za-z0-9._-]*?)(?:_t(?P<tile>\d{1,4}))?$")


@dataclass(frozen=True)
class TileSet:
    """A site's tiles: arrays (read-only) plus the case of each tile. Never log ``case_ids``."""

    case_ids: tuple[str, ...]  # one per case, in index order
    stems: tuple[str, ...]  # one per tile
    images: np.ndarray  # [N, 3, H, W] float32 in [0, 1]
    instances: np.ndarray  # [N, H, W] int32, 0 = background
    case_index: np.ndarray  # [N] int64 into case_ids

    def __repr__(self) -> str:  # no case ids
        return f"TileSet(cases={len(self.case_ids)}, tiles={len(self.stems)}, shape={tuple(self.images.shape[1:])})"


def _by_stem(folder: Path) -> dict[str, Path]:
    found = files_by_stem(folder, "tile")
    for path in found.values():
        if not TILE_STEM.match(path.stem):
            raise DataError(f"{path}: file name is not <case>_t<NN> or <case> (letters, digits, '.', '_', '-')")
    return found


def list_tiles(site_dir: Path) -> dict[str, list[tuple[str, Path, Path]]]:
    """Case id -> its tiles as (stem, image path, mask path), sorted by stem; pairs checked."""
    site_dir = Path(site_dir)
    images, masks = _by_stem(site_dir / "images"), _by_stem(site_dir / "masks")
    for stem in sorted(set(images) - set(masks)):
        raise DataError(f"{images[stem]}: image has no mask in {site_dir / 'masks'}")
    for stem in sorted(set(masks) - set(images)):
        raise DataError(f"{masks[stem]}: mask has no image in {site_dir / 'images'}")
    cases: dict[str, list[tuple[str, Path, Path]]] = {}
    for stem in sorted(images):
        cases.setdefault(TILE_STEM.match(stem)["case"], []).append((stem, images[stem], masks[stem]))
    if not cases:
        raise DataError(f"{site_dir / 'images'}: no PNG or TIFF tile found")
    return cases


def read_tiles(site_dir: Path, *, split: str = "train", limits: ImageLimits = ImageLimits()) -> TileSet:
    """The tiles of the cases of ``split`` (:data:`secgan.data.splits.IMAGE_SPLITS`), checked (see the module docstring)."""
    from secgan.data.dataset import read_split

    if split not in IMAGE_SPLITS:
        raise ValueError(f"split must be one of {IMAGE_SPLITS}, got {split!r}")
    site_dir = Path(site_dir)
    cases = list_tiles(site_dir)
    parts = read_split(site_dir, known=set(cases))
    ids = split_ids(parts, split, cases)
    stems, images, masks, index = [], [], [], []
    shape = None
    for k, cid in enumerate(ids):
        for stem, image_path, mask_path in cases[cid]:
            rgb = read_rgb(image_path, limits)
            inst = read_labels(mask_path, limits)
            if inst.shape != rgb.shape[:2]:
                raise DataError(f"{mask_path}: mask is {inst.shape[1]}x{inst.shape[0]}, its image "
                                f"{rgb.shape[1]}x{rgb.shape[0]}")
            if shape is None:
                shape = rgb.shape
            elif rgb.shape != shape:
                raise DataError(f"{image_path}: tile is {rgb.shape[1]}x{rgb.shape[0]}, the site's first tile "
                                f"{shape[1]}x{shape[0]} (one tile size per site)")
            stems.append(stem)
            images.append(to_chw_unit(rgb))
            masks.append(inst)
            index.append(k)
    if not stems:
        raise DataError(f"{site_dir / 'split.json'}: '{split}' lists no case with a tile")
    out = TileSet(case_ids=tuple(ids), stems=tuple(stems), images=np.stack(images), instances=np.stack(masks),
                  case_index=np.asarray(index, dtype=np.int64))
    for a in (out.images, out.instances, out.case_index):
        a.setflags(write=False)
    return out

"""A site folder of 2-D RGB images (nuclei tiles, ISIC-style lesions) as :class:`PatientSlices`,
shaped by the run's :class:`~secgan.core.spec.ImageSpec`.

The folder is read by the domain's own reader, which does every file check; this module only maps
what it returns onto the spec, so a site, its audit, a pretraining and an in-process run all see
the same arrays (``secgan.data.dataset.load_site`` hands these layouts here).

Layouts (:data:`IMAGE_LAYOUTS`), detected by ``layout = "auto"`` from the folder:

- ``tiles`` (:mod:`secgan.data.tiles`): ``images/`` next to ``masks/``. The condition is
  ``instances`` (the 3-channel map ``background, nucleus, boundary`` of
  :func:`secgan.data.nuclei.instances_to_classes`, one-hot) or ``none``. A tile larger than
  ``image.size`` is cut into non-overlapping ``size x size`` patches (the remainder dropped, every
  patch keeps its case); a smaller one is refused. ``segs`` hold each patch's instance map
  (ids renumbered 1..n per patch), what the nuclei scores need.
- ``isic`` (:mod:`secgan.data.isic`): ``images/`` next to one label CSV. The condition is ``class``
  (``image.cond_names`` are the classes the CSV is matched against) or ``none``; the reader
  centre-crops and resizes to ``image.size``. ``segs`` are zero.

Images: ``image.image_channels`` must be 3; the readers' [0, 1] values are mapped linearly onto
``image.value_range``. The patient (a slide's case, a dermatology patient with several images) stays
the unit of privacy: every slice keeps its patient. A spec the folder cannot give is a
:class:`DataError` naming the key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from secgan.core.errors import DataError
from secgan.core.spec import INSTANCE_CHANNELS, RGB_CHANNELS, ImageSpec, one_hot_classes, rgb_spec

IMAGE_LAYOUTS: tuple[str, ...] = ("tiles", "isic")
# the condition kinds each layout can give
_KINDS = {"tiles": ("instances", "none"), "isic": ("class", "none")}
_MAX_INSTANCE_ID = np.iinfo(np.int16).max


def image_layout(site_dir: Path, layout: str = "auto") -> str | None:
    """The image layout of ``site_dir`` ("tiles" | "isic"), or None for a volume (BraTS/MSD) folder."""
    if layout in IMAGE_LAYOUTS:
        return layout
    if layout != "auto":
        return None
    site_dir = Path(site_dir)
    if not (site_dir / "images").is_dir():
        return None
    if (site_dir / "masks").is_dir():
        return "tiles"
    if any(p.is_file() for p in site_dir.glob("*.csv")):
        return "isic"
    return None


def default_spec(layout: str, size: int) -> ImageSpec:
    """The spec a layout's built-in phantom is trained with: RGB in [0, 1], instance maps (tiles) or
    the seven ISIC 2018 diagnoses drawn uniformly (isic)."""
    if layout == "tiles":
        return rgb_spec(size, condition="instances")
    if layout == "isic":
        from secgan.data.derm import DERM_CLASSES

        return rgb_spec(size, condition="class", cond_names=DERM_CLASSES)
    raise ValueError(f"layout must be one of {IMAGE_LAYOUTS}, got {layout!r}")


def check_spec(layout: str, image: ImageSpec, site_dir: Path) -> None:
    """DataError unless ``layout``'s folder can give images and conditions of ``image``."""
    what = {"tiles": "a folder of RGB tiles with instance masks", "isic": "an ISIC-style folder of RGB images"}[layout]
    if image.image_channels != 3:
        raise DataError(f"{site_dir}: {what} gives 3-channel images; image.image_channels is {image.image_channels}")
    if image.condition not in _KINDS[layout]:
        raise DataError(f"{site_dir}: {what} gives image.condition {' or '.join(repr(k) for k in _KINDS[layout])}; "
                        f"the spec says {image.condition!r}")
    if image.condition == "instances" and image.cond_channels != len(INSTANCE_CHANNELS):
        raise DataError(f"{site_dir}: an instance condition has {len(INSTANCE_CHANNELS)} channels "
                        f"({', '.join(INSTANCE_CHANNELS)}); image.cond_channels is {image.cond_channels}")


def load_image_site(site_dir: Path, *, layout: str, split: str, image: ImageSpec) -> "PatientSlices":
    """``split`` of the folder as :class:`PatientSlices` of ``image`` (module docstring)."""
    from secgan.data.dataset import PatientSlices

    site_dir = Path(site_dir)
    check_spec(layout, image, site_dir)
    if layout == "tiles":
        ids, images, conds, segs, owner = _tiles(site_dir, split, image)
    else:
        ids, images, conds, segs, owner = _lesions(site_dir, split, image)
    lo, hi = (float(v) for v in image.value_range)
    images = images * np.float32(hi - lo) + np.float32(lo) if (lo, hi) != (0.0, 1.0) else images
    keep = [k for k in range(len(ids)) if np.any(owner == k)]
    return PatientSlices(
        case_ids=[ids[k] for k in keep],
        images=[images[owner == k] for k in keep],
        conds=[conds[owner == k] for k in keep],
        segs=[segs[owner == k] for k in keep],
        image_size=image.size, image=image,
        modalities=tuple(image.channel_names) if image.channel_names else RGB_CHANNELS, missing=(),
        geometry=f"{layout}:{image.size}",
    )


def _tiles(site_dir: Path, split: str, image: ImageSpec):
    from secgan.data.nuclei import instances_to_classes
    from secgan.data.tiles import read_tiles

    tiles = read_tiles(site_dir, split=split)
    s = image.size
    h, w = tiles.images.shape[2:]
    if h < s or w < s:
        raise DataError(f"{site_dir}: tiles are {w}x{h}, smaller than image.size = {s} (cut larger tiles, or "
                        "choose a smaller image.size)")
    images, insts, owner = [], [], []
    for y in range(0, h - s + 1, s):
        for x in range(0, w - s + 1, s):
            images.append(tiles.images[:, :, y : y + s, x : x + s])
            insts.append(tiles.instances[:, y : y + s, x : x + s])
            owner.append(tiles.case_index)
    images_a = np.concatenate(images).astype(np.float32)
    segs = np.stack([_renumber(m, site_dir) for m in np.concatenate(insts)])
    owner_a = np.concatenate(owner)
    if image.condition == "instances":
        classes = np.stack([instances_to_classes(m) for m in segs])
        conds = (classes[:, None] == np.arange(len(INSTANCE_CHANNELS))[None, :, None, None]).astype(np.float32)
    else:
        conds = np.zeros((len(images_a), *image.cond_shape), np.float32)
    return tiles.case_ids, images_a, conds, segs, owner_a


def _renumber(inst: np.ndarray, site_dir: Path) -> np.ndarray:
    ids, inverse = np.unique(inst, return_inverse=True)
    out = inverse.reshape(inst.shape) + (0 if ids[0] == 0 else 1)  # background stays 0, nuclei 1..n
    if out.max(initial=0) > _MAX_INSTANCE_ID:
        raise DataError(f"{site_dir}: a patch holds more than {_MAX_INSTANCE_ID} nuclei")
    return out.astype(np.int16)


def _lesions(site_dir: Path, split: str, image: ImageSpec):
    from secgan.data.isic import read_isic

    classes = image.cond_names if image.condition == "class" else None
    kwargs = {"classes": classes} if classes else {}
    lesions = read_isic(site_dir, split=split, image_size=image.size, **kwargs)
    n = len(lesions.images)
    if image.condition == "class":
        conds = one_hot_classes(np.asarray(lesions.labels), image.cond_channels)
    else:
        conds = np.zeros((n, *image.cond_shape), np.float32)
    segs = np.zeros((n, image.size, image.size), np.int16)
    return lesions.patient_ids, np.asarray(lesions.images, np.float32), conds, segs, np.asarray(lesions.patient_index)

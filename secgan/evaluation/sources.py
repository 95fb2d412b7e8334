"""Training sources of the downstream segmenter and the shared held-out test set.

A source is named on the command line:

- ``real-all``: the train split of every site, pooled;
- ``real-subset-N``: the train split of site N alone (``site-N`` folder, 1-based);
- ``synthetic``: pairs sampled from a generator checkpoint (label maps from the procedural source
  or a bank, images from G);
- ``real-subset-N+synthetic`` (or ``real-all+synthetic``): the real slices plus synthetic pairs.

Training uses the tumour-bearing slices (the ones the GAN is trained and conditioned on), for every
source alike; testing scores each held-out patient of every site on all of its brain slices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from secgan.core.errors import ConfigError, DataError
from secgan.evaluation.segmenter import HeldOutPatient
from secgan.core.spec import IMAGE_CHANNELS, decode_condition

_SITE_DIR = re.compile(r"^site-([1-9][0-9]*)$")
_SOURCE = re.compile(r"^(?:(real-all)|real-subset-([1-9][0-9]*))?(\+?synthetic)?$")


@dataclass(frozen=True)
class SourceSpec:
    """What a segmenter is trained on. ``site`` is None for all sites pooled (when ``real``)."""

    real: bool
    site: int | None
    synthetic: bool

    @property
    def name(self) -> str:
        parts = []
        if self.real:
            parts.append("real-all" if self.site is None else f"real-subset-{self.site}")
        if self.synthetic:
            parts.append("synthetic")
        return "+".join(parts)


def parse_source(text: str) -> SourceSpec:
    """``real-all`` | ``real-subset-N`` | ``synthetic`` | ``real-...+synthetic`` -> :class:`SourceSpec`."""
    m = _SOURCE.match(text.strip()) if isinstance(text, str) else None
    if not m or not text.strip():
        raise ConfigError(
            f"train source {text!r} not understood (expected real-all, real-subset-N, synthetic "
            "or real-subset-N+synthetic)"
        )
    real_all, site, syn = m.groups()
    real = bool(real_all or site)
    if syn and real and not syn.startswith("+"):
        raise ConfigError(f"train source {text!r}: join the parts with '+' (e.g. real-subset-2+synthetic)")
    if syn and not real and syn.startswith("+"):
        raise ConfigError(f"train source {text!r}: nothing before '+'")
    return SourceSpec(real=real, site=int(site) if site else None, synthetic=bool(syn))


def site_dirs(data_root: Path) -> dict[int, Path]:
    """``{K: data_root/site-K}`` for every site folder with a split file, sorted by K."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise DataError(f"{data_root}: data folder is missing")
    found = {}
    for p in data_root.iterdir():
        m = _SITE_DIR.match(p.name)
        if m and p.is_dir() and (p / "split.json").is_file():
            found[int(m.group(1))] = p
    if not found:
        raise DataError(f"{data_root}: no site-K folder with a split.json")
    return dict(sorted(found.items()))


def _site_dir(data_root: Path, site: int) -> Path:
    dirs = site_dirs(data_root)
    if site not in dirs:
        raise DataError(f"{data_root}: no folder site-{site} (sites present: {', '.join(map(str, dirs))})")
    return dirs[site]


def load_real_slices(
    data_root: Path,
    *,
    site: int | None,
    image_size: int,
    split: str = "train",
    modalities: tuple[str, ...] = IMAGE_CHANNELS,
    min_tumour_pixels: int = 10,
    load_options: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slices of one site (``site``) or all sites (None) for ``split``: (images, conds, segs).
    ``load_options``: further keyword arguments of ``load_site`` (skip_bad, layout, ...)."""
    from secgan.data.dataset import load_site

    dirs = site_dirs(data_root) if site is None else {site: _site_dir(data_root, site)}
    images, conds, segs = [], [], []
    for d in dirs.values():
        data = load_site(d, split=split, image_size=image_size, modalities=modalities, min_tumour_pixels=min_tumour_pixels,
                         **(load_options or {}))
        im, co, sg, _ = data.all_slices()
        images.append(im)
        conds.append(co)
        segs.append(sg)
    return np.concatenate(images), np.concatenate(conds), np.concatenate(segs)


def load_real_train(
    data_root: Path,
    *,
    site: int | None,
    image_size: int,
    modalities: tuple[str, ...] = IMAGE_CHANNELS,
) -> tuple[np.ndarray, np.ndarray]:
    """Tumour-bearing train slices of one site (``site``) or all sites (None): (images, segs)."""
    images, _, segs = load_real_slices(data_root, site=site, image_size=image_size, modalities=modalities)
    return images, segs


def load_test_patients(
    data_root: Path,
    *,
    image_size: int,
    modalities: tuple[str, ...] = IMAGE_CHANNELS,
    load_options: dict | None = None,
) -> list[HeldOutPatient]:
    """Every site's held-out test patients, each with all of its brain slices."""
    from secgan.data.dataset import load_site

    out = []
    for d in site_dirs(data_root).values():
        data = load_site(d, split="test", image_size=image_size, modalities=modalities, min_tumour_pixels=0,
                         **(load_options or {}))
        out.extend(HeldOutPatient(images=data.images(i), segs=data.segs(i)) for i in range(data.n_patients))
    return out


def conds_to_segs(conds: np.ndarray) -> np.ndarray:
    """Condition maps ``[N,4,H,W]`` -> BraTS label maps ``[N,H,W]`` int16."""
    return np.stack([decode_condition(c)[0] for c in np.asarray(conds)]) if len(conds) else np.zeros((0,) + conds.shape[2:], np.int16)


def synthetic_pairs(
    checkpoint: Path,
    *,
    n: int,
    seed: int,
    source: str = "procedural",
    bank_dir: Path | None = None,
    image_size: int | None = None,
    mask_background: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic (images, segs) from a generator checkpoint; label maps from ``source``.

    Images are G's output as is. ``mask_background`` sets the pixels outside the condition's brain
    channel to -1 as in real slices (it uses nothing G was not given); it is off by default because
    on the phantom sweep it lowered the downstream Dice (0.35 vs 0.41, one seed, 300-step AsynDGAN).
    """
    from secgan.gan.synthetic import sample_generator

    if n < 1:
        raise ConfigError(f"number of synthetic pairs must be >= 1, got {n}")
    try:
        images, conds = sample_generator(Path(checkpoint), n=n, seed=seed, source=source, bank_dir=bank_dir)
    except ValueError as exc:
        raise ConfigError(f"cannot sample from {checkpoint}: {exc}") from None
    images, conds = np.asarray(images, dtype=np.float32), np.asarray(conds, dtype=np.float32)
    if image_size is not None and images.shape[-1] != image_size:
        raise ConfigError(
            f"checkpoint generates {images.shape[-1]}x{images.shape[-1]} images but --image-size is {image_size}"
        )
    if mask_background:
        images = np.where(conds[:, :1] > 0.5, images, np.float32(-1.0))
    return images, conds_to_segs(conds)


def drop_modality(images: np.ndarray, modalities: Sequence[str]) -> np.ndarray:
    """A copy of ``images`` with the channels of ``modalities`` set to -1 (absent)."""
    out = np.array(images, dtype=np.float32, copy=True)
    for m in modalities:
        out[:, IMAGE_CHANNELS.index(m)] = -1.0
    return out

"""Patient-level splits and the files every built-in phantom writes next to its data.

One owner for what the phantoms (brain, nuclei, dermoscopy) share: the random patient-level
train/test split and the ``split.json`` + phantom marker pair (:data:`secgan.data.dataset.PHANTOM_MARKER`)
each site folder carries. The split file's format and its validation stay in
:func:`secgan.data.dataset.read_split`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

# the parts a reader of the 2-D domains (tiles, ISIC folders) can load: split.json's two, or both
IMAGE_SPLITS = ("train", "test", "all")


def random_split(g: np.random.Generator, ids: Sequence[str], test_fraction: float) -> dict[str, list[str]]:
    """Patient-level train/test split of ``ids`` drawn from ``g``; both sides non-empty, each sorted."""
    ids = list(ids)
    if len(ids) < 2:
        raise ValueError("a split needs at least 2 patients")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = g.permutation(len(ids))
    n_test = min(max(1, int(round(test_fraction * len(ids)))), len(ids) - 1)
    return {"train": sorted(ids[i] for i in order[n_test:]), "test": sorted(ids[i] for i in order[:n_test])}


def write_site_files(site_dir: Path, split: Mapping[str, list[str]], marker: Mapping[str, object]) -> None:
    """Write ``site_dir/split.json`` and the phantom marker (what generated the folder), durably."""
    from secgan.core.fsio import atomic_write_json
    from secgan.data.dataset import PHANTOM_MARKER

    atomic_write_json(Path(site_dir) / "split.json", {"train": list(split["train"]), "test": list(split["test"])})
    atomic_write_json(Path(site_dir) / PHANTOM_MARKER, dict(marker))

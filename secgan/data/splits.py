"""Patient-level splits and the files every built-in phantom writes next to its data.

One owner for what the phantoms (brain, nuclei, dermoscopy) share: the random patient-level
train/test split and the ``split.json`` + phantom marker pair (:data:`secgan.data.dataset.PHANTOM_MARKER`)
each site folder carries. The split file's format and its validation stay in
:func:`secgan.data.dataset.read_split`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

# the parts a reader of the 2-D domains (tiles, ISIC folders) can load: split.json's two, both, or the
# patients of the folder it lists in neither ("unlisted": an audit searches them for copies)
IMAGE_SPLITS = ("train", "test", "all", "unlisted")


def split_ids(parts: Mapping[str, list[str]], split: str, known: Iterable[str]) -> list[str]:
    """The patient ids of ``split`` (:data:`IMAGE_SPLITS`) from split.json's ``parts``; ``known``: every
    patient id the folder holds (the "unlisted" ones are those of it split.json names in neither part)."""
    if split == "unlisted":
        listed = set(parts["train"]) | set(parts["test"])
        return sorted(k for k in known if k not in listed)
    return list(parts["train"]) + list(parts["test"]) if split == "all" else list(parts[split])


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


def check_writer_counts(*, sites: int, size: int, test_fraction: float, **counts: tuple[int, int, int]) -> None:
    """The argument checks every phantom writer shares: ``sites`` in 1..64, ``size`` in 16..1024,
    ``test_fraction`` in (0, 1), and each of ``counts`` (name -> (value, low, high)) in low..high.
    Raises ValueError naming the first argument out of range."""
    if not 1 <= sites <= 64:
        raise ValueError(f"sites must be in 1..64, got {sites}")
    for name, (value, low, high) in counts.items():
        if not low <= value <= high:
            hint = " (a split needs train and test)" if low == 2 else ""
            raise ValueError(f"{name} must be in {low}..{high}{hint}, got {value}")
    if not 16 <= size <= 1024:
        raise ValueError(f"size must be in 16..1024, got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")

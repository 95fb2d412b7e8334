"""One site folder pooling several sites' cases (links, or copies where links fail) and splits."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from secgan.core.errors import DataError
from secgan.core.fsio import atomic_write_json


def pool_sites(site_dirs: Sequence[Path], out: Path) -> Path:
    """A site folder ``out`` holding every listed site's cases (as links) and their merged split.

    Case folder names must be distinct across sites. Re-running with the same sites is a no-op.
    """
    from secgan.data.dataset import PHANTOM_MARKER, read_split

    out = Path(out)
    merged: dict[str, list[str]] = {"train": [], "test": []}
    sources: dict[str, Path] = {}
    for d in site_dirs:
        split = read_split(Path(d))
        for part in ("train", "test"):
            for case in split[part]:
                if case in sources:
                    raise DataError(f"{d}: case folder names collide across sites; cannot pool them")
                sources[case] = Path(d).resolve() / case
                merged[part].append(case)
    if _pooled_matches(out, merged):
        return out
    # Built beside ``out`` and renamed into place, so concurrent callers (the sweep's GAN workers)
    # never see, or delete, a half-built folder.
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for case, src in sources.items():
        try:
            os.symlink(src, tmp / case, target_is_directory=True)
        except OSError:
            shutil.copytree(src, tmp / case)
    atomic_write_json(tmp / "split.json", merged)
    if site_dirs and all((Path(d) / PHANTOM_MARKER).is_file() for d in site_dirs):  # pooled phantoms stay phantoms
        shutil.copyfile(Path(site_dirs[0]) / PHANTOM_MARKER, tmp / PHANTOM_MARKER)
    if out.exists() or out.is_symlink():
        if _pooled_matches(out, merged):  # another process finished first
            shutil.rmtree(tmp)
            return out
        shutil.rmtree(out)
    try:
        os.rename(tmp, out)
    except OSError:
        if not _pooled_matches(out, merged):
            raise
        shutil.rmtree(tmp)
    return out


def _pooled_matches(out: Path, merged: dict) -> bool:
    try:
        return json.loads((out / "split.json").read_text()) == merged
    except (OSError, ValueError):
        return False

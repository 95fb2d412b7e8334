"""Shared fixtures. Each xdist worker builds its own copies, so keep them small and fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two pytest workers share two cores: one intra-op thread each avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 3-site phantom federation (BraTS layout, 32x32 in-plane, 16 slices, 6 patients a site)."""
    from secgan.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("phantom")
    write_phantom(root, sites=3, patients=6, seed=1234, size=32, slices=16)
    return root

"""End-to-end smoke: phantom -> reader -> dataset -> sampling; procedural conditions."""

from __future__ import annotations

import numpy as np
import torch

from secgan.gan.conditions import ProceduralConditions
from secgan.data.dataset import load_site


def test_phantom_loads_as_patient_slices(phantom_root):
    ds = load_site(phantom_root / "site-1", split="train", image_size=32)
    assert ds.n_patients >= 1 and ds.missing == ()
    imgs, conds = ds.sample_slices(list(range(ds.n_patients)), generator=np.random.default_rng(0))
    assert imgs.shape == (ds.n_patients, 4, 32, 32) and conds.shape == imgs.shape
    assert imgs.dtype == np.float32 and imgs.min() >= -1.0 and imgs.max() <= 1.0


def test_procedural_draw_shape():
    c = ProceduralConditions(32).draw(5, generator=torch.Generator().manual_seed(1))
    assert c.shape == (5, 4, 32, 32) and c.dtype == torch.float32

"""Tiny datasets and configs shared by the privacy tests (also imported by their subprocesses)."""

from __future__ import annotations

import numpy as np
import torch

from secgan.data.dataset import PatientSlices
from secgan.net.schema import FakeBatch
from secgan.privacy.policy import PrivacyPolicy
from secgan.gan.config import ModelConfig, TrainConfig
from secgan.core.spec import ImageSpec

SIZE = 16
MODEL = ModelConfig(g_width=4, d_width=4, noise_dim=2, d_layers=2, norm_groups=2)
IMAGE = ImageSpec(size=SIZE)
TRAIN = TrainConfig(batch_size=3, checkpoint_every=2)


def dataset(n: int = 10, *, seed: int = 0, slices: int = 3) -> PatientSlices:
    rng = np.random.default_rng(seed)
    return PatientSlices(
        case_ids=[f"case-{i}" for i in range(n)],
        images=[rng.uniform(-1, 1, (slices, 4, SIZE, SIZE)).astype(np.float32) for _ in range(n)],
        conds=[(rng.random((slices, 4, SIZE, SIZE)) > 0.5).astype(np.float32) for _ in range(n)],
        segs=[np.zeros((slices, SIZE, SIZE), np.int16) for _ in range(n)],
        image_size=SIZE,
    )


def with_patient_changed(ds: PatientSlices, p: int) -> PatientSlices:
    images = [ds.images(i).copy() for i in range(ds.n_patients)]
    images[p] = -images[p]
    return PatientSlices(
        case_ids=list(ds.case_ids),
        images=images,
        conds=[ds.conds(i) for i in range(ds.n_patients)],
        segs=[ds.segs(i) for i in range(ds.n_patients)],
        image_size=ds.image_size,
    )


def policy(mode: str = "dpsgd", **kw) -> PrivacyPolicy:
    base = dict(
        mode=mode,
        allow_off=mode == "off",
        target_epsilon=50.0,
        noise_multiplier=1.0,
        expected_batch_size=3,
        shards=2,
        reproducible_noise=True,
    )
    base.update(kw)
    return PrivacyPolicy(**base)


def batches(n: int, *, rows: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for s in range(n):
        cond = (torch.rand(rows, 4, SIZE, SIZE, generator=g) > 0.5).float()
        fake = torch.rand(rows, 4, SIZE, SIZE, generator=g) * 2 - 1
        yield FakeBatch(run_id="run", round=s, step=s, cond=cond, fake=fake)

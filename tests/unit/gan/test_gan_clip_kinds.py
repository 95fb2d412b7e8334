"""The clip-norm calibration of a pretraining (``secgan.gan.pretrained.calibrate_clip_norm``) for every
image kind: its fakes are drawn from the run's own condition kind, and a row's loss is taken against
an empty batch of the other side with that side's own shapes (an image and its condition differ in
channels for every kind but the brain's)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secgan.gan.models import build_discriminator, build_generator
from secgan.gan.pretrained import calibrate_clip_norm, per_row_gradient_norms
from tests.unit.gan.test_gan_image_kinds import SPECS, _config, _d_archs, _dataset


@pytest.mark.parametrize("name", sorted(SPECS))
def test_calibration_runs_for_every_image_kind(name: str) -> None:
    image = SPECS[name]
    for d_arch in _d_archs(image):
        cfg = _config(image, d_arch=d_arch)
        G, D = build_generator(cfg.model, image), build_discriminator(cfg.model, image)
        out = calibrate_clip_norm(D, G, _dataset(image), cfg, draws=1, seed=3)
        rows = out["by_frozen_stages"]["0"]
        assert rows["real_rows"]["rows"] == rows["fake_rows"]["rows"] == 6
        assert np.isfinite(out["recommended"]) and out["recommended"] > 0


def test_a_row_norm_is_the_norm_of_its_own_gradient_for_a_class_spec() -> None:
    import torch

    image = SPECS["class-3"]
    cfg = _config(image, d_arch="projection")
    D = build_discriminator(cfg.model, image)
    ds = _dataset(image)
    img, cond = (torch.as_tensor(a) for a in ds.sample_slices([0, 1], generator=np.random.default_rng(0)))
    norms = per_row_gradient_norms(D, cond, img, loss=cfg.train.loss, fake=False)[0]
    from secgan.gan.step import discriminator_loss

    for r in range(2):
        loss = discriminator_loss(D, cond[r:r + 1], img[r:r + 1], cond[:0], img[:0], loss=cfg.train.loss).sum()
        grads = torch.autograd.grad(loss, list(D.parameters()), allow_unused=True)
        expect = float(torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)))
        assert norms[r] == pytest.approx(expect, rel=1e-4)

"""The semantic (OASIS-style) discriminator and its per-pixel class-balanced loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule

from secgan.gan.conditions import ProceduralConditions
from secgan.gan.models import build_discriminator, build_generator, semantic_labels
from secgan.privacy.policy import PrivacyPolicy
from secgan.gan.config import ModelConfig, TrainConfig
from secgan.run.config import DataConfig, RunConfig
from secgan.core.spec import ImageSpec
from secgan.gan.step import discriminator_loss, discriminator_step, generator_gradient, generator_loss_rows

M = ModelConfig(g_width=8, d_width=8, noise_dim=4, g_depth=2, d_layers=2, d_arch="semantic")
IM = ImageSpec(size=16)


def _batch(b: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    cond = ProceduralConditions(16).draw(b, generator=g)
    img = torch.rand(b, 4, 16, 16, generator=g) * 2 - 1
    return cond, img


def test_semantic_labels_follow_the_condition_channels() -> None:
    cond = torch.zeros(1, 4, 2, 3)
    cond[0, 0] = 1.0
    cond[0, 0, 0, 0] = 0.0  # background
    cond[0, 1, 0, 1] = 1.0  # ncr
    cond[0, 2, 0, 2] = 1.0  # ed
    cond[0, 3, 1, 0] = 1.0  # et
    assert semantic_labels(cond).tolist() == [[[0, 2, 3], [4, 1, 1]]]


def test_row_loss_is_weighted_cross_entropy_with_weights_averaging_one() -> None:
    D = build_discriminator(M, IM)
    rc, ri = _batch(2, 1)
    fc, fi = _batch(3, 2)
    rows = discriminator_loss(D, rc, ri, fc, fi, loss="semantic")
    assert rows.shape == (5,)
    with torch.no_grad():
        logits = D(rc, ri)
    lab = semantic_labels(rc)
    for r in range(2):
        counts = torch.bincount(lab[r].flatten(), minlength=5).float()
        w = torch.where(counts > 0, lab[r].numel() / ((counts > 0).sum() * counts.clamp(min=1)), torch.zeros(5))
        pix_w = w[lab[r]]
        assert float(pix_w.mean()) == pytest.approx(1.0, rel=1e-5)
        ce = F.cross_entropy(logits[r : r + 1], lab[r : r + 1], reduction="none")[0]
        assert float(rows[r].detach()) == pytest.approx(float((pix_w * ce).mean()), rel=1e-5)


def test_one_rows_loss_does_not_depend_on_the_other_rows() -> None:
    """Per-patient clipping needs row-local losses: no batch-level class weights."""
    D = build_discriminator(M, IM)
    rc, ri = _batch(3, 1)
    fc, fi = _batch(2, 2)
    full = discriminator_loss(D, rc, ri, fc, fi, loss="semantic")
    alone = discriminator_loss(D, rc[:1], ri[:1], fc[:0], fi[:0], loss="semantic")
    torch.testing.assert_close(full[:1], alone, rtol=1e-5, atol=1e-6)
    no_real = discriminator_loss(D, rc[:0], ri[:0], fc, fi, loss="semantic")  # an empty Poisson sample
    torch.testing.assert_close(no_real, full[3:], rtol=1e-5, atol=1e-6)


def test_training_the_semantic_d_lowers_its_loss_and_g_gradient_matches_autograd() -> None:
    D = build_discriminator(M, IM)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3)
    rc, ri = _batch(4, 1)
    fc, fi = _batch(4, 2)
    before = discriminator_loss(D, rc, ri, fc, fi, loss="semantic").mean().item()
    for _ in range(8):
        discriminator_step(D, opt, rc, ri, fc, fi, loss="semantic")
    after = discriminator_loss(D, rc, ri, fc, fi, loss="semantic").mean().item()
    assert after < before
    g = generator_gradient(D, fc, fi, loss="semantic")
    x = fi.clone().requires_grad_(True)
    generator_loss_rows(D, fc, x, loss="semantic").sum().backward()
    torch.testing.assert_close(g, x.grad)
    assert float(g.abs().sum()) > 0


def test_opacus_per_sample_gradients_of_the_semantic_d_match_single_row_backward() -> None:
    D = build_discriminator(M, IM)
    gsm = GradSampleModule(D, loss_reduction="sum")
    rc, ri = _batch(2, 1)
    fc, fi = _batch(1, 2)
    discriminator_loss(gsm, rc, ri, fc, fi, loss="semantic").sum().backward()
    p = next(iter(D.parameters()))
    for row in range(3):
        D2 = build_discriminator(M, IM)
        D2.load_state_dict(D.state_dict())
        if row < 2:
            loss = discriminator_loss(D2, rc[row : row + 1], ri[row : row + 1], fc[:0], fi[:0], loss="semantic")
        else:
            loss = discriminator_loss(D2, rc[:0], ri[:0], fc, fi, loss="semantic")
        loss.sum().backward()
        torch.testing.assert_close(p.grad_sample[row], next(iter(D2.parameters())).grad, rtol=1e-4, atol=1e-6)


def test_semantic_loss_and_semantic_d_must_be_chosen_together() -> None:
    off = PrivacyPolicy(mode="off", allow_off=True)
    data = DataConfig(site_dirs=("x",))
    with pytest.raises(ValueError, match="semantic"):
        RunConfig(model=M, train=TrainConfig(loss="bce"), data=data, privacy=off)
    with pytest.raises(ValueError, match="semantic"):
        RunConfig(model=dataclasses.replace(M, d_arch="patch"), train=TrainConfig(loss="semantic"), data=data, privacy=off)
    RunConfig(model=M, train=TrainConfig(loss="semantic"), data=data, privacy=off, image=ImageSpec(size=32))
    assert build_generator(M, IM) is not None

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule

from secgan.core.errors import ConfigError
from secgan.gan.models import build_discriminator
from secgan.gan.config import ModelConfig
from secgan.core.spec import ImageSpec
from secgan.gan.step import (
    discriminator_loss,
    discriminator_step,
    generator_gradient,
    generator_loss_rows,
)

M = ModelConfig(g_width=8, d_width=8, noise_dim=4, g_depth=2, d_layers=2)
IM = ImageSpec(size=16)


def _batch(b: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    cond = (torch.rand(b, 4, 16, 16, generator=g) > 0.5).float()
    img = torch.rand(b, 4, 16, 16, generator=g) * 2 - 1
    return cond, img


@pytest.mark.parametrize("loss", ["bce", "hinge"])
def test_discriminator_loss_rows_real_first_then_fake(loss: str) -> None:
    D = build_discriminator(M, IM)
    rc, ri = _batch(3, 1)
    fc, fi = _batch(5, 2)
    rows = discriminator_loss(D, rc, ri, fc, fi, loss=loss)
    assert rows.shape == (8,)
    with torch.no_grad():
        lr = D(rc, ri).flatten(1)
        lf = D(fc, fi).flatten(1)
    if loss == "bce":
        exp_real = F.softplus(-lr).mean(1)
        exp_fake = F.softplus(lf).mean(1)
    else:
        exp_real = F.relu(1 - lr).mean(1)
        exp_fake = F.relu(1 + lf).mean(1)
    torch.testing.assert_close(rows[:3].detach(), exp_real, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows[3:].detach(), exp_fake, rtol=1e-5, atol=1e-6)


def test_unknown_loss_is_a_config_error() -> None:
    D = build_discriminator(M, IM)
    c, x = _batch(2, 0)
    with pytest.raises(ConfigError):
        generator_gradient(D, c, x, loss="wgan")


def test_discriminator_step_changes_d_and_moves_real_and_fake_apart() -> None:
    D = build_discriminator(M, IM)
    opt = torch.optim.Adam(D.parameters(), lr=1e-3)
    rc, ri = _batch(4, 1)
    fc, fi = _batch(4, 2)
    before = discriminator_loss(D, rc, ri, fc, fi, loss="bce").mean().item()
    for _ in range(5):
        discriminator_step(D, opt, rc, ri, fc, fi, loss="bce")
    after = discriminator_loss(D, rc, ri, fc, fi, loss="bce").mean().item()
    assert after < before


def test_generator_gradient_takes_no_real_data() -> None:
    params = list(inspect.signature(generator_gradient).parameters)
    assert params == ["D", "fake_cond", "fake_img", "loss"]
    assert inspect.signature(generator_gradient).parameters["loss"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("loss", ["bce", "hinge"])
def test_generator_gradient_leaves_d_grads_untouched_and_matches_autograd(loss: str) -> None:
    D = build_discriminator(M, IM)
    rc, ri = _batch(3, 1)
    fc, fi = _batch(3, 2)
    # give D some existing .grad to make sure it is not modified
    discriminator_loss(D, rc, ri, fc, fi, loss=loss).sum().backward()
    saved = {n: p.grad.clone() for n, p in D.named_parameters()}
    g = generator_gradient(D, fc, fi, loss=loss)
    assert g.shape == fi.shape and g.dtype == torch.float32
    for n, p in D.named_parameters():
        assert torch.equal(p.grad, saved[n]), n
    x = fi.clone().requires_grad_(True)
    generator_loss_rows(D, fc, x, loss=loss).sum().backward()
    torch.testing.assert_close(g, x.grad)
    assert float(g.abs().sum()) > 0


def test_generator_gradient_rows_are_independent_of_batch_size() -> None:
    D = build_discriminator(M, IM)
    fc, fi = _batch(4, 2)
    g4 = generator_gradient(D, fc, fi, loss="bce")
    g1 = generator_gradient(D, fc[:1], fi[:1], loss="bce")
    torch.testing.assert_close(g4[:1], g1, rtol=1e-4, atol=1e-7)


def test_generator_gradient_does_not_record_opacus_grad_samples() -> None:
    D = GradSampleModule(build_discriminator(M, IM), loss_reduction="mean")
    fc, fi = _batch(3, 2)
    generator_gradient(D, fc, fi, loss="bce")
    assert D.hooks_enabled
    for p in D.parameters():
        assert getattr(p, "grad_sample", None) is None
        assert p.grad is None

from __future__ import annotations

import dataclasses

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator

from secgan.core.errors import ConfigError
from secgan.gan.models import (
    MODEL_VARIANTS,
    build_discriminator,
    build_generator,
    count_parameters,
    iter_model_variants,
)
from secgan.gan.config import ModelConfig
from secgan.core.spec import ImageSpec

SMALL = ModelConfig(g_width=8, d_width=8, noise_dim=4, g_depth=2, d_layers=2)
IM32 = ImageSpec(size=32)


def _inputs(b: int, size: int, noise_dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cond = (torch.rand(b, 4, size, size, generator=g) > 0.5).float()
    z = torch.randn(b, noise_dim, generator=g)
    return cond, z


@pytest.mark.parametrize("name", sorted(MODEL_VARIANTS))
def test_every_variant_builds_with_right_shapes_and_passes_opacus_strict(name: str) -> None:
    m = MODEL_VARIANTS[name]
    G = build_generator(m, IM32)
    D = build_discriminator(m, IM32)
    cond, z = _inputs(2, 32, m.noise_dim)
    with torch.no_grad():
        x = G(cond, z)
        y = D(cond, x)
    assert x.shape == (2, 4, 32, 32)
    assert float(x.abs().max()) < 1.0
    if m.d_arch == "semantic":
        assert y.shape == (2, 6, 32, 32)  # 5 pixel classes + "fake", full resolution
    else:
        side = 32 >> m.d_layers
        assert y.shape == (2, 1, side, side)
    for module in (G, D):
        assert ModuleValidator.validate(module, strict=True) == []
        # no BatchNorm, no in-place activation anywhere
        for sub in module.modules():
            assert not isinstance(sub, torch.nn.modules.batchnorm._BatchNorm)
            assert not getattr(sub, "inplace", False)
            if isinstance(sub, torch.nn.Conv2d):
                assert sub.padding_mode == "zeros"


def test_variants_cover_every_noise_mode_and_several_depths() -> None:
    names = [n for n, _ in iter_model_variants()]
    assert len(names) == len(set(names))
    modes = {m.noise_mode for m in MODEL_VARIANTS.values()}
    assert modes == {"bottleneck", "input", "both"}
    assert len({m.d_layers for m in MODEL_VARIANTS.values()}) >= 3


@pytest.mark.parametrize("mode", ["bottleneck", "input", "both"])
def test_noise_changes_the_output_for_one_label_map(mode: str) -> None:
    m = dataclasses.replace(SMALL, noise_mode=mode)
    G = build_generator(m, IM32)
    cond, _ = _inputs(1, 32, m.noise_dim)
    cond = cond.expand(2, -1, -1, -1)
    z = torch.randn(2, m.noise_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        x = G(cond, z)
    assert float((x[0] - x[1]).abs().mean()) > 1e-4
    # and the condition matters too
    cond2, _ = _inputs(1, 32, m.noise_dim, seed=9)
    with torch.no_grad():
        x2 = G(cond2, z[:1])
    assert float((x2[0] - x[0]).abs().mean()) > 1e-4


def test_model_too_deep_for_image_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="g_depth"):
        build_generator(dataclasses.replace(SMALL, g_depth=6), ImageSpec(size=16))
    with pytest.raises(ConfigError, match="d_layers"):
        build_discriminator(dataclasses.replace(SMALL, d_layers=5), ImageSpec(size=16))


def test_count_parameters_matches_manual_sum_and_default_sizes_are_modest() -> None:
    G = build_generator(ModelConfig(), ImageSpec())
    D = build_discriminator(ModelConfig(), ImageSpec())
    assert count_parameters(G) == sum(p.numel() for p in G.parameters())
    assert count_parameters(G) < 5_000_000
    assert count_parameters(D) < 1_000_000


def test_opacus_per_sample_gradients_match_one_sample_at_a_time() -> None:
    D = build_discriminator(SMALL, IM32)
    gs = GradSampleModule(D, loss_reduction="sum")
    cond, _ = _inputs(3, 32, 4, seed=2)
    img = torch.rand(3, 4, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    out = gs(cond, img)
    out.flatten(1).mean(1).pow(2).sum().backward()
    per_sample = {n: p.grad_sample.clone() for n, p in gs._module.named_parameters()}
    for i in range(3):
        D.zero_grad(set_to_none=True)
        ref = build_discriminator(SMALL, IM32)
        ref.load_state_dict(D.state_dict())
        ref(cond[i : i + 1], img[i : i + 1]).flatten(1).mean(1).pow(2).sum().backward()
        for n, p in ref.named_parameters():
            torch.testing.assert_close(per_sample[n][i], p.grad, rtol=1e-4, atol=1e-6)


def test_spade_decoder_modulates_every_stage_by_the_label_map() -> None:
    """With g_norm = "spade" each decoder normalisation takes its scale and shift from the label map:
    zeroing the SPADE heads leaves plain (affine-free) GroupNorm, and a label change at one pixel
    changes the modulated features around that pixel only."""
    from secgan.gan.models import _Spade

    m = dataclasses.replace(SMALL, g_norm="spade")
    G = build_generator(m, IM32)
    spades = [u.norm for u in G.ups]
    assert len(spades) == m.g_depth and all(isinstance(s, _Spade) for s in spades)
    s = spades[-1]
    x = torch.randn(1, s.norm.num_channels, 8, 8, generator=torch.Generator().manual_seed(1))
    cond = torch.zeros(1, 4, 8, 8)
    with torch.no_grad():
        for conv in (s.gamma, s.beta):
            conv.weight.zero_()
            conv.bias.zero_()
        assert torch.allclose(s(x, cond), s.norm(x))
        torch.nn.init.normal_(s.gamma.weight, std=0.5, generator=torch.Generator().manual_seed(2))
        cond2 = cond.clone()
        cond2[0, 2, 1, 1] = 1.0  # one oedema pixel in a corner
        diff = (s(x, cond2) - s(x, cond)).abs().sum(dim=1)[0]
    assert diff[1, 1] > 0
    assert diff[5:, 5:].max() == 0  # beyond the two 3x3 convolutions' reach


def test_generator_norm_choice_is_checked() -> None:
    from secgan.core.config import load_dataclass

    with pytest.raises(ConfigError, match="g_norm"):
        load_dataclass(ModelConfig, {"g_norm": "batch"})

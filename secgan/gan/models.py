"""The conditional generator (coordinator) and the conditional PatchGAN discriminator (each site).

Both are built from layers Opacus can compute per-sample gradients for as they are: Conv2d,
Linear, GroupNorm (never BatchNorm: it mixes rows, which breaks per-patient clipping), activations
that are not in-place, zero padding, no spectral norm. A test runs Opacus's strict validator on
every variant ``iter_model_variants`` yields.

Generator: a U-Net over the condition label map. The noise vector z enters as tiled input
channels ("input"), as a learned projection concatenated at the bottleneck ("bottleneck"), or both,
so one label map yields varied images. Output is tanh, i.e. in (-1, 1) like the real images.

Discriminator: PatchGAN over cat(condition, image) (8 channels): ``d_layers`` stride-2 stages,
then two stride-1 3x3 convolutions ending in one logit per patch.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import torch
from torch import nn

from secgan.gan.config import NOISE_MODES, ModelConfig
from secgan.core.spec import ImageSpec

# pixel classes of the semantic discriminator (its extra last channel is "fake")
SEMANTIC_CLASSES = ("background", "brain", "ncr", "ed", "et")


def _groups(channels: int, max_groups: int) -> int:
    """The largest divisor of ``channels`` not above ``max_groups`` (GroupNorm needs a divisor)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def _norm(channels: int, model: ModelConfig) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(channels, model.norm_groups), channels)


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, model: ModelConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1)
        self.norm = _norm(cout, model)
        self.act = nn.LeakyReLU(0.2, inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class _Spade(nn.Module):
    """SPADE (Park et al., CVPR 2019): GroupNorm without its own affine, then a per-pixel scale and
    shift predicted from the label map resized to the feature map. Used in G only (G never runs
    under Opacus, so any layer is allowed there)."""

    def __init__(self, channels: int, cond_channels: int, model: ModelConfig, hidden: int = 32) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels, model.norm_groups), channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, kernel_size=3, padding=1), nn.ReLU(inplace=False))
        self.gamma = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.shared(nn.functional.interpolate(cond, size=x.shape[-2:], mode="nearest"))
        return self.norm(x) * (1.0 + self.gamma(c)) + self.beta(c)


class _Up(nn.Module):
    """Nearest upsampling + 3x3 conv (no transposed conv: avoids checkerboard artefacts), then
    GroupNorm, or SPADE when ``cond_channels`` is given (its forward then needs the label map)."""

    def __init__(self, cin: int, cout: int, model: ModelConfig, *, leaky: bool = False, cond_channels: int = 0) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.norm = _Spade(cout, cond_channels, model) if cond_channels else _norm(cout, model)
        # G decodes with ReLU; the semantic D's decoder keeps LeakyReLU like every other D layer
        self.act = nn.LeakyReLU(0.2, inplace=False) if leaky else nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(self.up(x))
        return self.act(self.norm(y, cond) if isinstance(self.norm, _Spade) else self.norm(y))


class ConditionalGenerator(nn.Module):
    def __init__(self, model: ModelConfig, image: ImageSpec) -> None:
        super().__init__()
        model.check_fits(image)
        self.noise_dim = model.noise_dim
        self.noise_mode = model.noise_mode
        self.image_size = image.size
        w = model.g_width
        widths = [min(w * 2**i, w * 8) for i in range(model.g_depth + 1)]
        in_ch = image.cond_channels + (model.noise_dim if model.noise_mode in ("input", "both") else 0)
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, widths[0], kernel_size=3, padding=1),
            _norm(widths[0], model),
            nn.LeakyReLU(0.2, inplace=False),
        )
        self.downs = nn.ModuleList(_Down(widths[i], widths[i + 1], model) for i in range(model.g_depth))
        bott = widths[-1]
        self.bottleneck_pixels = image.size >> model.g_depth
        if model.noise_mode in ("bottleneck", "both"):
            self.noise_ch = max(4, bott // 4)
            self.noise_proj = nn.Linear(model.noise_dim, self.noise_ch * self.bottleneck_pixels**2)
        else:
            self.noise_ch = 0
            self.noise_proj = None
        self.mid = nn.Sequential(
            nn.Conv2d(bott + self.noise_ch, bott, kernel_size=3, padding=1),
            _norm(bott, model),
            nn.ReLU(inplace=False),
        )
        # decoder stage i goes from resolution of widths[i+1] to widths[i], with the skip at widths[i]
        spade = image.cond_channels if model.g_norm == "spade" else 0
        self.ups = nn.ModuleList(
            _Up(widths[i + 1] if i == model.g_depth - 1 else 2 * widths[i + 1], widths[i], model, cond_channels=spade)
            for i in reversed(range(model.g_depth))
        )
        self.head = nn.Conv2d(2 * widths[0], image.image_channels, kernel_size=3, padding=1)
        self.out = nn.Tanh()

    def forward(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        b, _, h, w = cond.shape
        x = cond
        if self.noise_mode in ("input", "both"):
            x = torch.cat([x, z[:, :, None, None].expand(b, self.noise_dim, h, w)], dim=1)
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        if self.noise_proj is not None:
            p = self.bottleneck_pixels
            y = torch.cat([y, self.noise_proj(z).view(b, self.noise_ch, p, p)], dim=1)
        y = self.mid(y)
        for up in self.ups:
            y = torch.cat([up(y, cond), skips.pop()], dim=1)
        return self.out(self.head(y))


class SemanticDiscriminator(nn.Module):
    """OASIS-style discriminator (Schoenfeld et al., ICLR 2021): a small U-Net segmenter that sees the
    image alone and labels every pixel as one of the ``SEMANTIC_CLASSES`` or as "fake" (last channel).

    Why: against a label map, a real/fake logit per patch gives G almost no signal about small
    regions (a 32 px tumour core is a few pixels of one patch). A per-pixel, class-balanced
    segmentation loss tells G, for every pixel, which class it should look like.
    Output ``[B, len(SEMANTIC_CLASSES) + 1, H, W]``. Built from Conv2d, GroupNorm, LeakyReLU and
    nearest upsampling only, so Opacus computes per-sample gradients for it as it is.
    """

    def __init__(self, model: ModelConfig, image: ImageSpec) -> None:
        super().__init__()
        model.check_fits(image)
        w = model.d_width
        widths = [min(w * 2**i, w * 4) for i in range(model.d_layers + 1)]
        self.stem = nn.Sequential(
            nn.Conv2d(image.image_channels, widths[0], kernel_size=3, padding=1),
            nn.LeakyReLU(0.2, inplace=False),
        )
        self.downs = nn.ModuleList(_Down(widths[i], widths[i + 1], model) for i in range(model.d_layers))
        self.ups = nn.ModuleList(
            _Up(widths[i + 1] if i == model.d_layers - 1 else 2 * widths[i + 1], widths[i], model, leaky=True)
            for i in reversed(range(model.d_layers))
        )
        self.head = nn.Conv2d(2 * widths[0], len(SEMANTIC_CLASSES) + 1, kernel_size=3, padding=1)

    def forward(self, cond: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        # ``cond`` is unused on purpose: D must find the classes in the image itself.
        skips = [self.stem(img)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = torch.cat([up(y), skips.pop()], dim=1)
        return self.head(y)


def semantic_labels(cond: torch.Tensor) -> torch.Tensor:
    """Condition ``[B,4,H,W]`` -> class index per pixel ``[B,H,W]`` (``SEMANTIC_CLASSES`` order)."""
    brain, ncr, ed, et = cond[:, 0] > 0.5, cond[:, 1] > 0.5, cond[:, 2] > 0.5, cond[:, 3] > 0.5
    lab = torch.zeros(cond.shape[0], cond.shape[2], cond.shape[3], dtype=torch.long, device=cond.device)
    lab = torch.where(brain, torch.ones_like(lab), lab)
    lab = torch.where(ncr, torch.full_like(lab, 2), lab)
    lab = torch.where(ed, torch.full_like(lab, 3), lab)
    return torch.where(et, torch.full_like(lab, 4), lab)


class PatchDiscriminator(nn.Module):
    def __init__(self, model: ModelConfig, image: ImageSpec) -> None:
        super().__init__()
        model.check_fits(image)
        w = model.d_width
        layers: list[nn.Module] = [
            nn.Conv2d(image.cond_channels + image.image_channels, w, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=False),
        ]
        ch = w
        for _ in range(model.d_layers - 1):
            nxt = min(ch * 2, w * 8)
            layers += [
                nn.Conv2d(ch, nxt, kernel_size=4, stride=2, padding=1),
                _norm(nxt, model),
                nn.LeakyReLU(0.2, inplace=False),
            ]
            ch = nxt
        nxt = min(ch * 2, w * 8)
        layers += [
            nn.Conv2d(ch, nxt, kernel_size=3, stride=1, padding=1),
            _norm(nxt, model),
            nn.LeakyReLU(0.2, inplace=False),
            nn.Conv2d(nxt, 1, kernel_size=3, stride=1, padding=1),
        ]
        self.net = nn.Sequential(*layers)
        self.patches = image.size >> model.d_layers

    def forward(self, cond: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([cond, img], dim=1))


def init_weights(module: nn.Module, *, generator: torch.Generator) -> nn.Module:
    """DCGAN-style initialisation drawn from an explicit generator (reproducible, no global RNG)."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(sub.weight, 0.0, 0.02, generator=generator)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)
            elif isinstance(sub, nn.GroupNorm) and sub.affine:
                nn.init.ones_(sub.weight)
                nn.init.zeros_(sub.bias)
    return module


def build_generator(model: ModelConfig, image: ImageSpec, *, seed: int = 0) -> nn.Module:
    G = ConditionalGenerator(model, image)
    return init_weights(G, generator=torch.Generator().manual_seed(seed))


def build_discriminator(model: ModelConfig, image: ImageSpec, *, seed: int = 0) -> nn.Module:
    D = SemanticDiscriminator(model, image) if model.d_arch == "semantic" else PatchDiscriminator(model, image)
    return init_weights(D, generator=torch.Generator().manual_seed(seed))


def iter_model_variants(base: ModelConfig | None = None) -> Iterator[tuple[str, ModelConfig]]:
    """Every structurally different model this module can build (for validators and benches).

    Widths only scale channel counts, so a few values suffice; every noise mode, depth and group
    setting that changes which layers exist is enumerated.
    """
    base = base or ModelConfig(g_width=8, d_width=8, noise_dim=4)
    for mode in NOISE_MODES:
        for g_depth in (1, 2, 4):
            yield f"g-{mode}-depth{g_depth}", dataclasses.replace(base, noise_mode=mode, g_depth=g_depth)
    for d_layers in (1, 2, 3, 4):
        yield f"d-layers{d_layers}", dataclasses.replace(base, d_layers=d_layers)
    for d_layers in (1, 2, 3):
        yield f"d-semantic-layers{d_layers}", dataclasses.replace(base, d_arch="semantic", d_layers=d_layers)
    yield "g-spade", dataclasses.replace(base, g_norm="spade")
    yield "norm-groups1", dataclasses.replace(base, norm_groups=1)
    yield "odd-widths", dataclasses.replace(base, g_width=6, d_width=6, norm_groups=4)


MODEL_VARIANTS: dict[str, ModelConfig] = dict(iter_model_variants())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def discriminator_stages(D: nn.Module) -> list[nn.Module]:
    """D's stages in forward order (input first), the units ``policy.freeze_d_stages`` counts.

    Semantic D: the stem, each stride-2 encoder stage, each decoder stage, the head. PatchGAN: one
    stage per convolution with the norm and activation that follow it. An Opacus wrapper is looked
    through (its ``_module``).
    """
    D = getattr(D, "_module", D)
    if isinstance(D, SemanticDiscriminator):
        return [D.stem, *D.downs, *D.ups, D.head]
    if isinstance(D, PatchDiscriminator):
        stages: list[list[nn.Module]] = []
        for layer in D.net:
            if isinstance(layer, nn.Conv2d) or not stages:
                stages.append([])
            stages[-1].append(layer)
        return [nn.Sequential(*s) for s in stages]
    raise TypeError(f"not a discriminator of this module: {type(D).__name__}")


def freeze_discriminator_stages(D: nn.Module, n: int) -> int:
    """Freeze (``requires_grad = False``) the first ``n`` stages of D; returns how many parameters
    stay trainable (what DP-SGD clips and noises). The last stage always stays trainable."""
    from secgan.core.errors import ConfigError

    stages = discriminator_stages(D)
    if not 0 <= n < len(stages):
        raise ConfigError(f"policy.freeze_d_stages = {n}: this discriminator has {len(stages)} stages and "
                          f"its last must stay trainable, so at most {len(stages) - 1} can be frozen")
    for stage in stages[:n]:
        for p in stage.parameters():
            p.requires_grad_(False)
    return count_parameters(D)

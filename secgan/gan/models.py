"""The conditional generator (coordinator) and the conditional PatchGAN discriminator (each site).

Both are built from layers Opacus can compute per-sample gradients for as they are: Conv2d,
Linear, GroupNorm (never BatchNorm: it mixes rows, which breaks per-patient clipping), activations
that are not in-place, zero padding, no spectral norm. A test runs Opacus's strict validator on
every variant ``iter_model_variants`` yields.

Both read the run's :class:`~secgan.core.spec.ImageSpec`: image channels, value range and the
condition kind (``labelmap`` / ``instances``: a map ``[B, K, H, W]``; ``class``: a one-hot
``[B, K, 1, 1]``; ``none``: the empty ``[B, 0, 1, 1]``).

Generator: a U-Net over a condition map. A spatial condition is the map itself; a class label
becomes a learned embedding (a bias-free Linear of the one-hot, i.e. an embedding table) broadcast
over the image; "none" is one constant channel. The noise vector z enters as tiled input
channels ("input"), as a learned projection concatenated at the bottleneck ("bottleneck"), or both,
so one condition yields varied images. Output is tanh, mapped onto the spec's value range (the
brain default (-1, 1) is the tanh itself).

Discriminators (``model.d_arch``):
- "patch": PatchGAN over cat(condition, image) (a class condition broadcast over the image, none:
  the image alone): ``d_layers`` stride-2 stages, then two stride-1 3x3 convolutions ending in
  one logit per patch;
- "semantic": OASIS-style per-pixel segmenter, classes ``("background",) + cond_names`` (spatial
  conditions only);
- "projection": Miyato & Koyama (ICLR 2018) for class conditions: a conv trunk, global mean
  pooling, logit = linear(h) + <embed(y), h>.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import torch
from torch import nn

from secgan.core.errors import ConfigError
from secgan.gan.config import NOISE_MODES, ModelConfig
from secgan.core.spec import COND_CHANNELS, ImageSpec

# pixel classes of the brain spec's semantic discriminator (its extra last channel is "fake")
SEMANTIC_CLASSES = ("background",) + COND_CHANNELS


def semantic_classes(image: ImageSpec) -> tuple[str, ...]:
    """Pixel classes of the semantic D for ``image``: "background" then one per condition channel."""
    if not image.spatial:
        raise ConfigError(f"the semantic D needs a spatial condition; image.condition is {image.condition!r}")
    return ("background",) + tuple(image.cond_names)


def check_model_for(model: ModelConfig, image: ImageSpec) -> None:
    """Refuse a model that cannot build for ``image`` (ConfigError naming the keys): the one check,
    ``ModelConfig.check_fits``."""
    model.check_fits(image)


def _output_range(image: ImageSpec) -> tuple[float, float] | None:
    """(scale, shift) taking tanh's (-1, 1) onto the spec's value range; None for (-1, 1) itself."""
    lo, hi = (float(v) for v in image.value_range)
    if (lo, hi) == (-1.0, 1.0):
        return None
    return (hi - lo) / 2.0, (hi + lo) / 2.0


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
        check_model_for(model, image)
        self.noise_dim = model.noise_dim
        self.noise_mode = model.noise_mode
        self.image_size = image.size
        self.condition = image.condition
        self.out_range = _output_range(image)
        w = model.g_width
        widths = [min(w * 2**i, w * 8) for i in range(model.g_depth + 1)]
        # the condition map G's stem (and SPADE) reads: the map, a class embedding, or one constant channel
        if image.condition == "class":
            self.embed = nn.Linear(image.cond_channels, w, bias=False)
            map_ch = w
        else:
            map_ch = image.cond_channels if image.spatial else 1
        in_ch = map_ch + (model.noise_dim if model.noise_mode in ("input", "both") else 0)
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
        spade = map_ch if model.g_norm == "spade" else 0
        self.ups = nn.ModuleList(
            _Up(widths[i + 1] if i == model.g_depth - 1 else 2 * widths[i + 1], widths[i], model, cond_channels=spade)
            for i in reversed(range(model.g_depth))
        )
        self.head = nn.Conv2d(2 * widths[0], image.image_channels, kernel_size=3, padding=1)
        self.out = nn.Tanh()

    def condition_map(self, cond: torch.Tensor) -> torch.Tensor:
        """The condition as a map over the image ``[B, ch, H, W]`` (module doc)."""
        if self.condition in ("labelmap", "instances"):
            return cond
        b, s = cond.shape[0], self.image_size
        if self.condition == "class":
            return self.embed(cond.flatten(1))[:, :, None, None].expand(b, -1, s, s)
        return cond.new_ones(b, 1, s, s)

    def forward(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        cond = self.condition_map(cond)
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
        out = self.out(self.head(y))
        if self.out_range is not None:
            scale, shift = self.out_range
            out = out * scale + shift
        return out


class SemanticDiscriminator(nn.Module):
    """OASIS-style discriminator (Schoenfeld et al., ICLR 2021): a small U-Net segmenter that sees the
    image alone and labels every pixel as one of ``semantic_classes(image)`` (brain:
    ``SEMANTIC_CLASSES``) or as "fake" (last channel).

    Why: against a label map, a real/fake logit per patch gives G almost no signal about small
    regions (a 32 px tumour core is a few pixels of one patch). A per-pixel, class-balanced
    segmentation loss tells G, for every pixel, which class it should look like.
    Output ``[B, len(classes) + 1, H, W]``. Built from Conv2d, GroupNorm, LeakyReLU and
    nearest upsampling only, so Opacus computes per-sample gradients for it as it is.
    """

    def __init__(self, model: ModelConfig, image: ImageSpec) -> None:
        super().__init__()
        check_model_for(model, image)
        self.classes = semantic_classes(image)
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
        self.head = nn.Conv2d(2 * widths[0], len(self.classes) + 1, kernel_size=3, padding=1)

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
    """Spatial condition ``[B,K,H,W]`` -> class index per pixel ``[B,H,W]`` (``semantic_classes``
    order): 0 where no channel is set, else 1 + the LAST set channel (brain: brain < ncr < ed < et)."""
    lab = torch.zeros(cond.shape[0], cond.shape[2], cond.shape[3], dtype=torch.long, device=cond.device)
    for k in range(cond.shape[1]):
        lab = torch.where(cond[:, k] > 0.5, torch.full_like(lab, k + 1), lab)
    return lab


def _trunk(cin: int, model: ModelConfig) -> tuple[list[nn.Module], int]:
    """PatchGAN's layers up to its last stride-1 stage: (layers, channels out)."""
    w = model.d_width
    layers: list[nn.Module] = [
        nn.Conv2d(cin, w, kernel_size=4, stride=2, padding=1),
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
    ]
    return layers, nxt


class PatchDiscriminator(nn.Module):
    """PatchGAN over cat(condition, image); a class one-hot is broadcast over the image, and an
    unconditional spec ("none") gives D the image alone."""

    def __init__(self, model: ModelConfig, image: ImageSpec) -> None:
        super().__init__()
        check_model_for(model, image)
        self.spatial = image.spatial
        layers, ch = _trunk(image.cond_channels + image.image_channels, model)
        self.net = nn.Sequential(*layers, nn.Conv2d(ch, 1, kernel_size=3, stride=1, padding=1))
        self.patches = image.size >> model.d_layers

    def forward(self, cond: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        if not self.spatial:
            cond = cond.expand(-1, -1, img.shape[2], img.shape[3])
        return self.net(torch.cat([cond, img], dim=1))


class ProjectionDiscriminator(nn.Module):
    """Projection discriminator (Miyato & Koyama, ICLR 2018) for a class condition: PatchGAN's trunk
    over the image, global mean pooling to h, logit = linear(h) + <embed(y), h>, one per row
    (``[B, 1]``). The embedding is a bias-free Linear of the one-hot label (an embedding table
    Opacus computes per-sample gradients for as a Linear)."""

    def __init__(self, model: ModelConfig, image: ImageSpec) -> None:
        super().__init__()
        check_model_for(model, image)
        layers, ch = _trunk(image.image_channels, model)
        self.net = nn.Sequential(*layers)
        self.linear = nn.Linear(ch, 1)
        self.embed = nn.Linear(image.cond_channels, ch, bias=False)

    def forward(self, cond: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        h = self.net(img).mean(dim=(2, 3))
        return self.linear(h) + (self.embed(cond.flatten(1)) * h).sum(dim=1, keepdim=True)


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


DISCRIMINATORS: dict[str, type[nn.Module]] = {}


def build_discriminator(model: ModelConfig, image: ImageSpec, *, seed: int = 0) -> nn.Module:
    D = DISCRIMINATORS[model.d_arch](model, image)
    return init_weights(D, generator=torch.Generator().manual_seed(seed))


def iter_model_variants(base: ModelConfig | None = None,
                        image: ImageSpec | None = None) -> Iterator[tuple[str, ModelConfig]]:
    """Every structurally different model this module can build (for validators and benches);
    with ``image``, those that can read its condition kind (``check_model_for``), plus the
    projection D for a class condition.

    Widths only scale channel counts, so a few values suffice; every noise mode, depth and group
    setting that changes which layers exist is enumerated.
    """
    base = base or ModelConfig(g_width=8, d_width=8, noise_dim=4)
    if image is None:
        yield from _variants(base)
        return
    for name, m in _variants(base):
        try:
            check_model_for(m, image)
        except ConfigError:
            continue
        yield name, m
    if image.condition == "class":
        for d_layers in (1, 2, 3):
            yield f"d-projection-layers{d_layers}", dataclasses.replace(base, d_arch="projection", d_layers=d_layers)


def _variants(base: ModelConfig) -> Iterator[tuple[str, ModelConfig]]:
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


DISCRIMINATORS.update(patch=PatchDiscriminator, semantic=SemanticDiscriminator, projection=ProjectionDiscriminator)


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
    if isinstance(D, (PatchDiscriminator, ProjectionDiscriminator)):
        stages: list[list[nn.Module]] = []
        for layer in D.net:
            if isinstance(layer, nn.Conv2d) or not stages:
                stages.append([])
            stages[-1].append(layer)
        out = [nn.Sequential(*s) for s in stages]
        # the projection head (linear and embedding) is the last stage
        return out + [nn.ModuleList([D.linear, D.embed])] if isinstance(D, ProjectionDiscriminator) else out
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

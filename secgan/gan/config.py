"""The GAN's own configuration: model shape and optimisation, and the names they choose from.

Part of a run's configuration (:class:`secgan.run.config.RunConfig` composes these with the data and
privacy sections), built once at the CLI edge and passed down explicitly. Each is a small frozen
dataclass whose ranges live on the fields (``secgan.core.config.rng`` / ``choices``), so a bad TOML
value is a :class:`ConfigError` naming its dotted key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secgan.core.config import choices, rng
from secgan.core.errors import ConfigError
from secgan.core.spec import ImageSpec

LOSSES = ("bce", "hinge", "minimax", "semantic")
D_ARCHS = ("patch", "semantic", "projection")
NOISE_MODES = ("bottleneck", "input", "both")
G_NORMS = ("group", "spade")
# where label maps come from (secgan.gan.conditions builds the first two; "site" is the paper's)
CONDITION_SOURCES = ("procedural", "bank", "site")


def recommended_settings(image_size: int) -> dict[str, dict]:
    """The model and optimiser settings measured to work on the phantom with DP-SGD: a small U-Net
    G and the semantic (per-pixel class) D with its loss, TTUR learning rates, Adam betas (0, 0.99),
    and samples from a moving average of G (at epsilon 10, 300 steps: Dice 0.55 / 0.49 with decay
    0.99, 0.44 / 0.42 with 0.95; 0.43 without it, one GAN with earlier priors).
    `secgan provision` writes them into new kits and the demo uses them; the dataclass defaults
    below stay the plain conditional PatchGAN (see the README for the measurements).

    ``fine_tune``: what a private run that starts from a public pretraining (``train.init_from``)
    changes, chosen on validation patients at epsilon 10 over paired GANs (README, "what each lever
    bought"): a slower average of G (0.997: post-processing of G, free), the PRV accountant (a tighter
    valid bound, 6% less noise at the same epsilon), and half the generator steps with two private D
    steps each (``policy.d_steps = 2``; the demo and the sweep run 150 G steps, not 300): the same 2x charged D steps buy a
    better-trained D per G update, and G moves less far from its public start. Third round, mean of
    two GANs: 0.646 with the average alone, 0.708 with n_D = 2 at half the G steps."""
    return {
        "model": {"g_width": 16, "g_depth": 3 if image_size <= 32 else 4, "d_width": 8, "d_layers": 3,
                  "d_arch": "semantic", "noise_dim": 8},
        "train": {"loss": "semantic", "lr_g": 1e-3, "lr_d": 2e-3, "beta1": 0.0, "beta2": 0.99, "batch_size": 8,
                  "g_average": 0.99},
        "fine_tune": {"train": {"g_average": 0.997}, "policy": {"accountant": "prv", "d_steps": 2}},
    }


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the generator (a small U-Net) and of each site's PatchGAN discriminator."""

    # channels of G's first stage (doubled at each stage)
    g_width: int = field(default=32, metadata=rng(min=4, max=256))
    # number of stride-2 stages of the U-Net encoder; the bottleneck is size / 2**g_depth pixels
    g_depth: int = field(default=4, metadata=rng(min=1, max=6))
    # channels of D's first convolution (doubled at each stage)
    d_width: int = field(default=32, metadata=rng(min=4, max=256))
    # number of stride-2 stages of the discriminator; patches are size / 2**d_layers pixels apart
    d_layers: int = field(default=3, metadata=rng(min=1, max=5))
    # length of the noise vector z, so one label map gives varied images
    noise_dim: int = field(default=16, metadata=rng(min=1, max=512))
    # where z enters G: tiled as extra input channels, projected at the bottleneck, or both
    noise_mode: str = field(default="both", metadata=choices(*NOISE_MODES))
    # normalisation of G's decoder: "group" (GroupNorm) or "spade" (GroupNorm whose scale and shift
    # are predicted per pixel from the label map, Park et al. 2019, so the layout reaches every stage)
    g_norm: str = field(default="group", metadata=choices(*G_NORMS))
    # "patch": PatchGAN over cat(condition, image), one real/fake logit per patch (losses bce, hinge,
    # minimax); "semantic": a per-pixel segmenter with an extra "fake" class (loss semantic);
    # "projection": a class-conditional D, logit = linear(h) + <embed(class), h> (image.condition = "class")
    d_arch: str = field(default="patch", metadata=choices(*D_ARCHS))
    # upper bound on GroupNorm groups (the largest divisor of the channel count <= this is used)
    norm_groups: int = field(default=8, metadata=rng(min=1, max=64))

    def check_fits(self, image: ImageSpec) -> None:
        """Refuse a model whose strided stages would shrink the image below one pixel, or that cannot
        read the image's condition kind."""
        if image.size >> self.g_depth < 1 or image.size % (1 << self.g_depth):
            raise ConfigError(f"model.g_depth = {self.g_depth} is too deep for image size {image.size}")
        if image.size >> self.d_layers < 1 or image.size % (1 << self.d_layers):
            raise ConfigError(f"model.d_layers = {self.d_layers} is too deep for image size {image.size}")
        if self.d_arch == "semantic" and not image.spatial:
            raise ConfigError(f"model.d_arch = 'semantic' needs a spatial condition (labelmap or instances); "
                              f"image.condition is {image.condition!r}: use 'patch' or 'projection'")
        if self.d_arch == "projection" and image.condition != "class":
            raise ConfigError(f"model.d_arch = 'projection' needs image.condition = 'class', got {image.condition!r}")
        if self.g_norm == "spade" and not image.spatial:
            raise ConfigError(f"model.g_norm = 'spade' modulates by a condition map; image.condition is "
                              f"{image.condition!r}: use 'group'")


@dataclass(frozen=True)
class TrainConfig:
    # generator steps (one step: a batch of fakes for every site, then one G update)
    steps: int = field(default=200, metadata=rng(min=1))
    # fakes per site per step; also the number of patients a plain site samples per step
    batch_size: int = field(default=8, metadata=rng(min=1, max=4096))
    # Adam learning rate of G
    lr_g: float = field(default=2e-4, metadata=rng(min=0.0, max=1.0, min_exclusive=True))
    # Adam learning rate of each site's D
    lr_d: float = field(default=2e-4, metadata=rng(min=0.0, max=1.0, min_exclusive=True))
    # Adam beta1 of G and D
    beta1: float = field(default=0.5, metadata=rng(min=0.0, max=0.999))
    # Adam beta2 of G and D
    beta2: float = field(default=0.999, metadata=rng(min=0.0, max=0.9999))
    # adversarial loss; minimax is the saturating form that targets the mixture of sites (see README)
    loss: str = field(default="bce", metadata=choices(*LOSSES))
    # the paper's L1 term against the real image; only legal with the site source and DP off
    l1_weight: float = field(default=0.0, metadata=rng(min=0.0))
    # decay of an exponential moving average of G's weights kept next to G (0: off). Samples,
    # audits and evaluation use the average; it is post-processing of G, so it costs no privacy
    g_average: float = field(default=0.0, metadata=rng(min=0.0, max=0.9999))
    # seeds model initialisation, conditions and noise vectors (never DP noise, see privacy.reproducible_noise)
    seed: int = field(default=0, metadata=rng(min=0, max=2**63 - 1))
    # write a checkpoint every this many steps (and at the end)
    checkpoint_every: int = field(default=50, metadata=rng(min=1))
    # a `secgan pretrain` output folder: a fresh run starts G (and its average) and each site's D
    # from its weights (a site decides for its own D); a resumed run keeps its trained weights
    init_from: str | None = None
    # weight of G's moment-matching term against the sites' DP statistics (privacy.release_stats; 0: off)
    stats_weight: float = field(default=0.0, metadata=rng(min=0.0))

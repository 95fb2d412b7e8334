"""Configuration of one training run: model shape, optimisation, data and privacy.

Built once at the CLI edge (``load_run_config``) and passed down explicitly. Everything is a small
frozen dataclass whose ranges live on the fields (``secgan.core.config.rng`` / ``choices``), so a bad
TOML value is a :class:`ConfigError` naming its dotted key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from secgan.core.config import choices, load_dataclass, read_toml, rng
from secgan.core.errors import ConfigError
from secgan.privacy.policy import PrivacyPolicy
from secgan.core.spec import ImageSpec

LOSSES = ("bce", "hinge", "minimax", "semantic")
D_ARCHS = ("patch", "semantic")
NOISE_MODES = ("bottleneck", "input", "both")
G_NORMS = ("group", "spade")
CONDITION_SOURCES = ("procedural", "bank", "site")


def recommended_settings(image_size: int) -> dict[str, dict]:
    """The model and optimiser settings measured to work on the phantom with DP-SGD: a small U-Net
    G and the semantic (per-pixel class) D with its loss, TTUR learning rates, Adam betas (0, 0.99),
    and samples from a moving average of G (at epsilon 10, 300 steps: Dice 0.55 / 0.49 with decay
    0.99, 0.44 / 0.42 with 0.95; 0.43 without it, one GAN with earlier priors).
    `secgan provision` writes them into new kits and the demo uses them; the dataclass defaults
    below stay the plain conditional PatchGAN (see the README for the measurements)."""
    return {
        "model": {"g_width": 16, "g_depth": 3 if image_size <= 32 else 4, "d_width": 8, "d_layers": 3,
                  "d_arch": "semantic", "noise_dim": 8},
        "train": {"loss": "semantic", "lr_g": 1e-3, "lr_d": 2e-3, "beta1": 0.0, "beta2": 0.99, "batch_size": 8,
                  "g_average": 0.99},
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
    # minimax); "semantic": a per-pixel segmenter with an extra "fake" class (loss semantic)
    d_arch: str = field(default="patch", metadata=choices(*D_ARCHS))
    # upper bound on GroupNorm groups (the largest divisor of the channel count <= this is used)
    norm_groups: int = field(default=8, metadata=rng(min=1, max=64))

    def check_fits(self, image: ImageSpec) -> None:
        """Refuse a model whose strided stages would shrink the image below one pixel."""
        if image.size >> self.g_depth < 1 or image.size % (1 << self.g_depth):
            raise ConfigError(f"model.g_depth = {self.g_depth} is too deep for image size {image.size}")
        if image.size >> self.d_layers < 1 or image.size % (1 << self.d_layers):
            raise ConfigError(f"model.d_layers = {self.d_layers} is too deep for image size {image.size}")


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


@dataclass(frozen=True)
class DataConfig:
    # one directory per site (BraTS layout with split.json); relative paths resolve against the config file
    site_dirs: tuple[str, ...] = ()
    # which patients of split.json to train on
    split: str = field(default="train", metadata=choices("train", "all"))
    # where label maps come from: procedural (no patient data), bank (a folder the coordinator may hold), site (refused with DP)
    condition_source: str = field(default="procedural", metadata=choices(*CONDITION_SOURCES))
    # folder of label maps for condition_source = bank
    bank_dir: str | None = None
    # skip a malformed case with a warning instead of stopping
    skip_bad: bool = False

    def __post_init__(self) -> None:
        if self.condition_source == "bank" and not self.bank_dir:
            raise ValueError("condition_source = 'bank' needs bank_dir")


@dataclass(frozen=True)
class RunConfig:
    image: ImageSpec = field(default_factory=ImageSpec)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    # one policy applied by every (simulated) site of an in-process run
    privacy: PrivacyPolicy = field(default_factory=PrivacyPolicy)
    # names the run in checkpoints and messages; 1-64 of letters, digits, '-', '_', '.'
    run_id: str = "run"
    # cpu or cuda
    device: str = field(default="cpu", metadata=choices("cpu", "cuda"))
    # write PNG previews of a few samples next to each checkpoint
    previews: bool = True

    def __post_init__(self) -> None:
        if self.train.l1_weight > 0 and not (self.privacy.mode == "off" and self.data.condition_source == "site"):
            raise ValueError(
                "train.l1_weight > 0 compares fakes with real images, so it needs privacy.mode = 'off' "
                "and data.condition_source = 'site'"
            )
        if (self.train.loss == "semantic") != (self.model.d_arch == "semantic"):
            raise ValueError("train.loss = 'semantic' and model.d_arch = 'semantic' go together (one needs the other)")
        if not self.run_id or len(self.run_id) > 64 or not all(c.isalnum() or c in "-_." for c in self.run_id):
            raise ValueError("run_id must be 1-64 characters of letters, digits, '-', '_' or '.'")
        try:
            self.model.check_fits(self.image)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Make relative data paths absolute against ``base`` (the config file's folder)."""
    import dataclasses

    def fix(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    data = dataclasses.replace(
        cfg.data,
        site_dirs=tuple(fix(p) for p in cfg.data.site_dirs),
        bank_dir=fix(cfg.data.bank_dir) if cfg.data.bank_dir else None,
    )
    return dataclasses.replace(cfg, data=data)


def load_run_config(path: str | Path) -> RunConfig:
    path = Path(path)
    cfg = load_dataclass(RunConfig, read_toml(path))
    return resolve_paths(cfg, path.parent.resolve())

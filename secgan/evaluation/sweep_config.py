"""The sweep's configuration: frozen dataclasses, one per TOML table, and their loader.

``[phantom]`` and ``[atlas]`` describe the data generated when the data folder is missing,
``[gan]`` and ``[privacy]`` the GAN runs, ``[missing_modality]`` the missing-channel setting,
``[segmenter]`` the downstream U-Net (``secgan.evaluation.segmenter``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from secgan.core.config import choices, load_dataclass, read_toml, rng
from secgan.evaluation.segmenter import SegmenterConfig
from secgan.gan.config import D_ARCHS, LOSSES
from secgan.core.spec import IMAGE_CHANNELS


@dataclass(frozen=True)
class PhantomConfig:
    """Used only when the data folder is missing: the phantom federation to generate there."""

    sites: int = field(default=3, metadata=rng(min=2, max=16))
    patients: int = field(default=24, metadata=rng(min=4, max=1000))
    size: int = field(default=32, metadata=rng(min=16, max=256))
    slices: int = field(default=24, metadata=rng(min=4, max=256))
    seed: int = field(default=7, metadata=rng(min=0))
    test_fraction: float = field(default=0.25, metadata=rng(min=0.05, max=0.9))


@dataclass(frozen=True)
class AtlasConfig:
    """The public label-map atlas of the phantom world: label maps of made-up patients who belong to
    no site, standing in for a public annotated set (such as the BraTS training labels). Generated
    next to the data (``<data>-atlas``) and used as the GAN's condition bank when
    ``gan.condition_source = "bank"`` and ``gan.bank_dir`` is not set. Same image size and slice
    count as ``[phantom]``; another seed, so no patient is shared with any site."""

    sites: int = field(default=3, metadata=rng(min=1, max=16))
    patients: int = field(default=60, metadata=rng(min=2, max=1000))
    seed: int = field(default=1234, metadata=rng(min=0))


@dataclass(frozen=True)
class GanConfig:
    """The GAN runs (AsynDGAN, DP variants and Syn-All share it)."""

    steps: int = field(default=300, metadata=rng(min=1))
    batch_size: int = field(default=8, metadata=rng(min=1, max=1024))
    g_width: int = field(default=16, metadata=rng(min=4, max=256))
    g_depth: int = field(default=3, metadata=rng(min=1, max=6))
    d_width: int = field(default=16, metadata=rng(min=4, max=256))
    d_layers: int = field(default=3, metadata=rng(min=1, max=5))
    noise_dim: int = field(default=8, metadata=rng(min=1, max=512))
    lr_g: float = field(default=2e-4, metadata=rng(min=0.0, max=1.0, min_exclusive=True))
    lr_d: float = field(default=2e-4, metadata=rng(min=0.0, max=1.0, min_exclusive=True))
    loss: str = field(default="bce", metadata=choices(*LOSSES))
    # "patch" (conditional PatchGAN) or "semantic" (per-pixel class discriminator, needs loss "semantic")
    d_arch: str = field(default="patch", metadata=choices(*D_ARCHS))
    beta1: float = field(default=0.5, metadata=rng(min=0.0, max=0.999))
    beta2: float = field(default=0.999, metadata=rng(min=0.0, max=0.9999))
    # decay of the moving average of G's weights that is sampled (0: off; see train.g_average)
    g_average: float = field(default=0.0, metadata=rng(min=0.0, max=0.9999))
    seed: int = field(default=0, metadata=rng(min=0))
    # GANs trained per GAN setting, seeded seed, seed + 1, ...; a setting's Dice mean and spread are
    # then over every (GAN, U-Net seed) pair, so they include the GAN's own run-to-run variation.
    # Each DP run spends its own budget on the same patients (independent repeats of one experiment).
    runs: int = field(default=1, metadata=rng(min=1, max=16))
    # label maps of the GAN runs and of the synthetic training pairs: "procedural" (no data at all)
    # or "bank" (bank_dir, or the generated public atlas of [atlas] when bank_dir is not set)
    condition_source: str = field(default="procedural", metadata=choices("procedural", "bank"))
    bank_dir: str | None = None


@dataclass(frozen=True)
class DPConfig:
    epsilons: tuple[float, ...] = (1.0, 3.0, 10.0)
    delta: float = field(default=1e-5, metadata=rng(min=0.0, max=0.1, min_exclusive=True))
    clip_norm: float = field(default=1.0, metadata=rng(min=0.0, min_exclusive=True))
    expected_batch_size: int = field(default=6, metadata=rng(min=1))
    # generator steps of the DP runs (0: gan.steps). At a fixed epsilon, fewer steps mean less
    # noise per step, so the best step count of a DP run is usually below the non-private one
    steps: int = field(default=0, metadata=rng(min=0))

    def __post_init__(self) -> None:
        if any(not e > 0 for e in self.epsilons) or len(set(self.epsilons)) != len(self.epsilons):
            raise ValueError("epsilons must be distinct positive numbers")


@dataclass(frozen=True)
class MissingModalityConfig:
    enabled: bool = True
    site: int = field(default=1, metadata=rng(min=1))
    modality: str = field(default="flair", metadata=choices(*IMAGE_CHANNELS))
    # completion: best of this many G draws, matched on the present channels
    draws: int = field(default=4, metadata=rng(min=1, max=64))


@dataclass(frozen=True)
class SweepConfig:
    # the data root (site-K folders with split.json); relative to the config file
    data: str = "data/phantom"
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    atlas: AtlasConfig = field(default_factory=AtlasConfig)
    image_size: int = field(default=32, metadata=rng(min=16, max=512))
    seeds: tuple[int, ...] = (0, 1)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    privacy: DPConfig = field(default_factory=DPConfig)
    missing_modality: MissingModalityConfig = field(default_factory=MissingModalityConfig)
    # synthetic pairs per U-Net training set (0: as many as Real-All's train slices for a synthetic
    # source, one per real slice for real-subset-K+synthetic)
    n_synthetic: int = field(default=0, metadata=rng(min=0))
    augment_subsets: bool = True
    quality: bool = True
    device: str = field(default="cpu", metadata=choices("cpu", "cuda"))

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError("seeds must be a non-empty list of distinct non-negative integers")
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")

    def dp_steps(self) -> int:
        """Generator steps of the DP runs (``privacy.steps``, or ``gan.steps`` when 0)."""
        return self.privacy.steps or self.gan.steps


def load_sweep_config(path: str | Path) -> tuple[SweepConfig, Path]:
    """The sweep config and its data root resolved against the config file's folder."""
    path = Path(path)
    cfg = load_dataclass(SweepConfig, read_toml(path))
    data = Path(cfg.data).expanduser()
    if not data.is_absolute():
        data = (path.parent / data).resolve()
    return cfg, data

"""The sweep's configuration: frozen dataclasses, one per TOML table, and their loader.

``[phantom]`` and ``[atlas]`` describe the data generated when the data folder is missing,
``[gan]`` and ``[privacy]`` the GAN runs, ``[missing_modality]`` the missing-channel setting,
``[segmenter]`` the downstream U-Net (``secgan.evaluation.segmenter``), ``[public]`` the public
cohort and its pretrainings (``secgan.evaluation.sweep_public``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secgan.core.config import choices, load_dataclass, read_toml, rng, to_dict
from secgan.evaluation.segmenter import SegmenterConfig
from secgan.evaluation.sweep_public import PublicConfig
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
    # GANs per DP setting and of the public-only row (0: gan.runs); DP run r starts from pretraining r
    runs: int = field(default=0, metadata=rng(min=0, max=16))
    # every DP run starts G, its average and each site's D from the pretraining of its GAN seed
    # on the public cohort ([public]; the public-only row scores that pretraining itself)
    pretrained: bool = False
    # site policy settings of every DP run beyond the ones above (a table of privacy policy keys,
    # e.g. { slices_per_patient = 4 }); checked against the policy when the sweep config is loaded
    policy: Any = None
    # training settings of every DP run (a table of [train] keys of a run config, e.g. { g_average = 0.99 })
    train: Any = None

    def __post_init__(self) -> None:
        if any(not e > 0 for e in self.epsilons) or len(set(self.epsilons)) != len(self.epsilons):
            raise ValueError("epsilons must be distinct positive numbers")
        for name in ("policy", "train"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name} must be a table of settings")


VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class VariantConfig:
    """One lever row of the sweep: DP runs whose ``[privacy]`` and ``[gan]`` settings differ from the
    main DP rows' by the tables given here, scored like them. Its settings are named
    ``lever-<name>-eps<E>``; they are shown in the table, not in the epsilon-Dice figure."""

    # 1-32 of a-z, 0-9 and '-'
    name: str = "variant"
    # target epsilons of this row (one setting each)
    epsilons: tuple[float, ...] = (10.0,)
    # GANs per setting (0: gan.runs)
    runs: int = field(default=0, metadata=rng(min=0, max=16))
    # keys of [privacy] to change, merged into it (its policy and train sub-tables key by key)
    privacy: Any = None
    # keys of [gan] to change (not runs or seed)
    gan: Any = None

    def __post_init__(self) -> None:
        if not VARIANT_NAME.fullmatch(self.name):
            raise ValueError(f"variant name {self.name!r} must be 1-32 of a-z, 0-9 and '-'")
        if not self.epsilons or any(not e > 0 for e in self.epsilons) or len(set(self.epsilons)) != len(self.epsilons):
            raise ValueError(f"variant {self.name}: epsilons must be distinct positive numbers")
        for part in ("privacy", "gan"):
            value = getattr(self, part)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"variant {self.name}: {part} must be a table of settings")
        if self.privacy and "epsilons" in self.privacy:
            raise ValueError(f"variant {self.name}: set its epsilons on the variant, not in its privacy table")
        if self.gan and {"runs", "seed"} & set(self.gan):
            raise ValueError(f"variant {self.name}: set runs on the variant; the seed is the sweep's")


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
    public: PublicConfig = field(default_factory=PublicConfig)
    # synthetic pairs per U-Net training set (0: as many as Real-All's train slices for a synthetic
    # source, one per real slice for real-subset-K+synthetic)
    n_synthetic: int = field(default=0, metadata=rng(min=0))
    augment_subsets: bool = True
    # train and score Syn-All (one GAN on the pooled data of every site)
    syn_all: bool = True
    quality: bool = True
    device: str = field(default="cpu", metadata=choices("cpu", "cuda"))
    # which patients every U-Net is scored on: "test" (the held-out test patients, scored once, for
    # the reported table) or "validation" (a held-out part of each site's training patients, for
    # choosing settings: the test patients are then not read at all, and the GANs and U-Nets train on
    # the remaining training patients)
    score_on: str = field(default="test", metadata=choices("test", "validation"))
    # score_on = "validation": the fraction of each site's training patients held out for scoring
    validation_fraction: float = field(default=0.2, metadata=rng(min=0.05, max=0.5))
    # lever rows: DP runs with some settings changed ([[variants]] tables)
    variants: tuple[VariantConfig, ...] = ()

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError("seeds must be a non-empty list of distinct non-negative integers")
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be distinct")

    def dp_steps(self) -> int:
        """Generator steps of the DP runs (``privacy.steps``, or ``gan.steps`` when 0)."""
        return self.privacy.steps or self.gan.steps


def _merge(base: dict, changes: dict | None) -> dict:
    """``base`` with ``changes`` applied key by key (nested tables merged, not replaced)."""
    out = dict(base)
    for k, v in (changes or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def variant_config(cfg: SweepConfig, variant: VariantConfig) -> SweepConfig:
    """The sweep config a variant's runs are made with: ``[privacy]`` and ``[gan]`` with the variant's
    changes, its epsilons, and its GAN count (ConfigError naming the variant's key if one is bad)."""
    whole = to_dict(cfg)
    privacy = _merge(whole["privacy"], variant.privacy)
    privacy["epsilons"] = list(variant.epsilons)
    gan = _merge(whole["gan"], variant.gan)
    gan["runs"] = variant.runs or cfg.gan.runs
    prefix = f"variants.{variant.name}."
    return dataclasses.replace(cfg, privacy=load_dataclass(DPConfig, privacy, prefix=prefix + "privacy."),
                               gan=load_dataclass(GanConfig, gan, prefix=prefix + "gan."), variants=())


def check_run_settings(cfg: SweepConfig) -> None:
    """Every DP run's policy and training tables name real settings with legal values, for the main DP
    rows and every variant (ConfigError naming the key), before any work is done."""
    from secgan.evaluation.sweep_plan import gan_run_config

    configs = [("privacy.", cfg)] + [(f"variants.{v.name}.privacy.", variant_config(cfg, v)) for v in cfg.variants]
    for where, c in configs:
        gan_run_config(c, [], epsilon=c.privacy.epsilons[0], where=where)


def load_sweep_config(path: str | Path) -> tuple[SweepConfig, Path]:
    """The sweep config and its data root resolved against the config file's folder."""
    path = Path(path)
    cfg = load_dataclass(SweepConfig, read_toml(path))
    check_run_settings(cfg)
    data = Path(cfg.data).expanduser()
    if not data.is_absolute():
        data = (path.parent / data).resolve()
    return cfg, data

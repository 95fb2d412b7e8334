"""Configuration of one training run: the GAN's model and optimisation (:mod:`secgan.gan.config`),
the data, and the privacy policy every simulated site applies.

Above the privacy layer, because a run composes a :class:`~secgan.privacy.policy.PrivacyPolicy`.
Built once at the CLI edge (``load_run_config``) and passed down explicitly; the in-process runner
trains from it and the coordinator writes one into its checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from secgan.core.config import choices, load_dataclass, read_toml, rng
from secgan.core.errors import ConfigError, DataError
from secgan.core.ids import RUN_ID_RE
from secgan.core.spec import ImageSpec
from secgan.data.options import ReadOptions
from secgan.gan.config import CONDITION_SOURCES, ModelConfig, TrainConfig
from secgan.privacy.policy import PrivacyPolicy


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
    # how every site's folder is read (layout, tolerances, voxel size, crop): [data.read]
    read: ReadOptions = field(default_factory=ReadOptions)

    def __post_init__(self) -> None:
        if self.condition_source == "bank" and not self.bank_dir:
            raise ValueError("condition_source = 'bank' needs bank_dir")

    def load_options(self) -> dict:
        """The keyword arguments of :func:`secgan.data.dataset.load_site` these settings give."""
        return {"skip_bad": self.skip_bad, **self.read.load_kwargs()}


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
        if RUN_ID_RE.fullmatch(self.run_id) is None:
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
    train = dataclasses.replace(cfg.train, init_from=fix(cfg.train.init_from)) if cfg.train.init_from else cfg.train
    return dataclasses.replace(cfg, data=data, train=train)


def load_run_config(path: str | Path, *, steps: int | None = None) -> RunConfig:
    """The run config in ``path``, its paths resolved; ``steps`` (a command's ``--steps``) overrides train.steps."""
    path = Path(path)
    cfg = load_dataclass(RunConfig, read_toml(path))
    if steps is not None:
        if steps < 1:
            raise ConfigError("--steps must be >= 1")
        import dataclasses

        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
    return resolve_paths(cfg, path.parent.resolve())


def stored_run_config(checkpoint) -> RunConfig:
    """The RunConfig a checkpoint was written with (re-validated)."""
    if checkpoint.config is None:
        raise DataError(f"{checkpoint.path}: checkpoint has no run config")
    try:
        return load_dataclass(RunConfig, checkpoint.config)
    except ConfigError as exc:
        raise DataError(f"{checkpoint.path}: stored run config is invalid ({exc})") from None

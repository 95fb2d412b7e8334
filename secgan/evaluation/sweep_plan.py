"""What a sweep runs: its settings and GAN runs, their names and folders, the GAN run configs, and
the resume decisions (a saved result is reused only while the inputs it depends on are unchanged).

Setting names are the ``setting`` column of the results; a GAN run is named ``name:run`` (``run``
0-based, ``gan.runs`` per GAN setting) and trained in ``out/gans/<gan_dir_name(name, run)>``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secgan.core.config import to_dict
from secgan.core.errors import ConfigError
from secgan.evaluation.sweep_public import PUBLIC_ONLY, public_inputs, public_settings

if TYPE_CHECKING:  # kept light: the figure, the page and the command import the names below
    from secgan.evaluation.sweep_config import MissingModalityConfig, SweepConfig, VariantConfig

SYN_ALL = "syn-all"
ASYNDGAN = "asyndgan"
DP_PREFIX = "asyndgan-dp-eps"
LEVER_PREFIX = "lever-"
MISSING_PREFIX = "missing-"


def eps_name(eps: float) -> str:
    return f"{DP_PREFIX}{eps:g}"


def lever_name(variant: VariantConfig, eps: float) -> str:
    return f"{LEVER_PREFIX}{variant.name}-eps{eps:g}"


def lever_settings(cfg: SweepConfig) -> dict[str, tuple[VariantConfig, float]]:
    """``{setting: (variant, epsilon)}`` of every lever row, in order."""
    return {lever_name(v, e): (v, e) for v in cfg.variants for e in v.epsilons}


def epsilon_of(cfg: SweepConfig, setting: str) -> float:
    """The target epsilon of the DP setting ``setting`` (a main DP row or a lever row)."""
    levers = lever_settings(cfg)
    if setting in levers:
        return levers[setting][1]
    return next(e for e in cfg.privacy.epsilons if eps_name(e) == setting)


def is_dp_setting(setting: str) -> bool:
    return setting.startswith(DP_PREFIX) or setting.startswith(LEVER_PREFIX)


def config_of(cfg: SweepConfig, setting: str) -> SweepConfig:
    """The sweep config ``setting``'s GAN runs are made with: the variant's for a lever row."""
    from secgan.evaluation.sweep_config import variant_config

    levers = lever_settings(cfg)
    return variant_config(cfg, levers[setting][0]) if setting in levers else cfg


def runs_of(cfg: SweepConfig, setting: str) -> int:
    """GANs trained for GAN setting ``setting``: ``privacy.runs`` (or ``gan.runs``) for the main DP
    rows and the public-only row, the variant's for a lever row, ``gan.runs`` otherwise."""
    if setting.startswith(DP_PREFIX) or setting == PUBLIC_ONLY:
        return cfg.privacy.runs or cfg.gan.runs
    return config_of(cfg, setting).gan.runs


def gan_settings(cfg: SweepConfig) -> list[str]:
    """The settings scored on their own GAN runs, in order: Syn-All (if on), AsynDGAN, public-only
    (when ``public.enabled``), one per epsilon, then the lever rows."""
    head = [SYN_ALL] if cfg.syn_all else []
    return head + [ASYNDGAN] + public_settings(cfg) + [eps_name(e) for e in cfg.privacy.epsilons] + list(lever_settings(cfg))


def is_gan_setting(setting: str) -> bool:
    return setting in (SYN_ALL, ASYNDGAN, PUBLIC_ONLY) or is_dp_setting(setting)


def is_real_subset(setting: str) -> bool:
    """A Real-Subset-n baseline (one site's real slices alone, not augmented)."""
    return setting.startswith("real-subset-") and "+" not in setting


def missing_settings(mm: MissingModalityConfig) -> tuple[str, str]:
    """The two missing-modality settings, made by one computation: the channel absent, and
    completed by the AsynDGAN (no DP) generator."""
    stem = f"{MISSING_PREFIX}{mm.modality}-site-{mm.site}"
    return stem, stem + "-completed"


def gan_dir_name(name: str, run: int) -> str:
    """Folder of GAN run ``run`` (0-based) of setting ``name`` under ``out/gans``."""
    return name if run == 0 else f"{name}-run{run}"


def planned_settings(cfg: SweepConfig, sites: list[int]) -> list[str]:
    """Every setting the sweep will run, in order."""
    out = ["real-all"] + [f"real-subset-{k}" for k in sites] + gan_settings(cfg)
    if cfg.augment_subsets:
        out += [f"real-subset-{k}+synthetic" for k in sites]
    mm = cfg.missing_modality
    if mm.enabled:
        out += list(missing_settings(mm))
    return out


def gan_runs(cfg: SweepConfig) -> list[str]:
    """Every GAN run the sweep needs, as ``name:run`` (``runs_of`` per GAN setting)."""
    return [f"{n}:{r}" for n in gan_settings(cfg) for r in range(runs_of(cfg, n))]


def split_run(item: str) -> tuple[str, int]:
    """``name:run`` -> (name, run)."""
    name, run = item.rsplit(":", 1)
    return name, int(run)


def gan_run_config(cfg: SweepConfig, site_dirs: list[Path], *, epsilon: float | None, run: int = 0,
                   name: str | None = None, where: str = "privacy."):
    """RunConfig of an AsynDGAN run over ``site_dirs``; DP-SGD at ``epsilon`` or privacy off (None).
    ``run`` (0-based) seeds the GAN with ``gan.seed + run``; ``name`` (default: the setting's name
    from ``epsilon``) names the run. DP runs take ``privacy.policy`` and ``privacy.train`` on top."""
    from secgan.core.config import load_dataclass
    from secgan.privacy.policy import PrivacyPolicy
    from secgan.gan.config import ModelConfig, TrainConfig
    from secgan.run.config import DataConfig, RunConfig
    from secgan.core.spec import ImageSpec

    # ``where``: how a bad key of the override tables is named (``privacy.policy.<key>``)
    g = cfg.gan
    steps = g.steps
    train = dict(steps=steps, batch_size=g.batch_size, lr_g=g.lr_g, lr_d=g.lr_d, loss=g.loss, beta1=g.beta1,
                 beta2=g.beta2, g_average=g.g_average, seed=g.seed + run, checkpoint_every=max(1, min(100, steps)))
    if epsilon is None:
        policy = PrivacyPolicy(mode="off", allow_off=True)
        run_id = name or ASYNDGAN
        train_cfg = TrainConfig(**train)
    else:
        steps = cfg.dp_steps()
        base = dict(mode="dpsgd", target_epsilon=float(epsilon), delta=cfg.privacy.delta,
                    clip_norm=cfg.privacy.clip_norm, planned_steps=steps,
                    expected_batch_size=cfg.privacy.expected_batch_size)
        policy = load_dataclass(PrivacyPolicy, {**base, **(cfg.privacy.policy or {})}, prefix=f"{where}policy.")
        train.update(steps=steps, checkpoint_every=max(1, min(100, steps)))
        train_cfg = load_dataclass(TrainConfig, {**train, **(cfg.privacy.train or {})}, prefix=f"{where}train.")
        run_id = name or eps_name(epsilon)
    run_id = gan_dir_name(run_id, run)
    try:
        return RunConfig(
            image=ImageSpec(size=cfg.image_size),
            model=ModelConfig(g_width=g.g_width, g_depth=g.g_depth, d_width=g.d_width, d_layers=g.d_layers,
                              noise_dim=g.noise_dim, d_arch=g.d_arch),
            train=train_cfg,
            data=DataConfig(site_dirs=tuple(str(d) for d in site_dirs), condition_source=g.condition_source,
                            bank_dir=g.bank_dir),
            privacy=policy,
            run_id=run_id,
            device=cfg.device,
            previews=False,
        )
    except ValueError as exc:
        raise ConfigError(f"gan: {exc}") from None


def gan_config(cfg: SweepConfig, site_dirs: list[Path], pooled: Path, name: str, run: int = 0):
    """The run config of GAN run ``name:run`` (``syn-all`` on the ``pooled`` site, ``asyndgan`` or a
    DP setting over ``site_dirs``)."""
    from secgan.evaluation.baseline import syn_all_config

    if name == SYN_ALL:
        plain = gan_run_config(cfg, site_dirs, epsilon=None, run=run)
        return syn_all_config(plain, pooled, len(site_dirs), run_id=gan_dir_name(SYN_ALL, run))
    if name == ASYNDGAN:
        return gan_run_config(cfg, site_dirs, epsilon=None, run=run)
    if name.startswith(LEVER_PREFIX):
        return gan_run_config(config_of(cfg, name), site_dirs, epsilon=epsilon_of(cfg, name), run=run, name=name)
    return gan_run_config(cfg, site_dirs, epsilon=epsilon_of(cfg, name), run=run)


def setting_inputs(cfg: SweepConfig, setting: str) -> dict:
    """The parts of the sweep config that ``setting``'s result depends on; a resumed sweep reuses a
    saved result only when they are unchanged (``inputs_fingerprint``)."""
    whole = to_dict(config_of(cfg, setting) if setting.startswith(LEVER_PREFIX) else cfg)
    seg = {k: v for k, v in whole["segmenter"].items() if k != "device"}
    out: dict[str, Any] = {"phantom": whole["phantom"], "image_size": cfg.image_size, "seeds": whole["seeds"],
                           "segmenter": seg}
    if cfg.score_on != "test":  # (absent for "test", so results made before the option stay valid)
        out["score_on"] = {"split": cfg.score_on, "validation_fraction": cfg.validation_fraction}
    real_only = setting.startswith("real-") and not setting.endswith("+synthetic")
    if real_only:
        return out
    out["gan"] = whole["gan"]
    out["n_synthetic"] = cfg.n_synthetic
    if cfg.gan.condition_source == "bank" and not cfg.gan.bank_dir:
        out["atlas"] = whole["atlas"]
    if is_gan_setting(setting):
        out["quality"] = cfg.quality
        if setting == PUBLIC_ONLY and cfg.privacy.runs:
            out["runs"] = cfg.privacy.runs
    else:
        out["gan"] = {k: v for k, v in whole["gan"].items() if k != "runs"}  # these use the first GAN only
    if is_dp_setting(setting):
        out["privacy"] = {k: v for k, v in whole["privacy"].items() if k not in ("epsilons", "pretrained")}
        for extra in ("policy", "train"):  # (absent when unset, so earlier results stay valid)
            if out["privacy"].get(extra) is None:
                out["privacy"].pop(extra, None)
        out["epsilon"] = epsilon_of(cfg, setting)
    if setting.startswith(MISSING_PREFIX):
        out["missing_modality"] = whole["missing_modality"]
    out.update(public_inputs(cfg, setting))
    return out


def inputs_fingerprint(cfg: SweepConfig, setting: str) -> str:
    """SHA-256 of ``setting_inputs`` in canonical JSON."""
    text = json.dumps(setting_inputs(cfg, setting), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stale_reason(path: Path, cfg: SweepConfig, setting: str) -> str | None:
    """Whether the saved result ``path`` of ``setting`` can be reused under ``cfg``: None when it was
    made with this configuration; "" when there is none; otherwise why it cannot be reused."""
    if not path.is_file():
        return ""
    try:
        saved = json.loads(path.read_text()).get("inputs_sha256")
    except (OSError, ValueError, AttributeError):
        return "its saved result is unreadable"
    if saved is None:
        return "its saved result does not record the configuration it was made with"
    if saved != inputs_fingerprint(cfg, setting):
        return "the configuration it depends on changed since it ran"
    return None

"""The sweep's public side: the public cohort, the ``public-only`` row and pretrained DP runs.

- ``[public]`` (``PublicConfig``): a public cohort of another phantom distribution
  (``secgan.data.phantom.PUBLIC_STYLE``), generated next to the data as ``<data>-public/site-1``
  when missing, like the atlas;
- ``public-only``: the pretrained G itself, i.e. G trained on the public cohort alone (privacy
  off, one simulated site, the sweep's GAN settings), one pretraining per GAN seed
  (``gan.seed + run``) in ``out/gans/public-only[-runR]`` (a ``secgan pretrain`` folder), scored
  like every other GAN setting. It is the floor each private row is compared with: what the
  private fine-tuning adds over it is measured, not assumed;
- ``privacy.pretrained = true``: every DP run starts G, its average and each site's D from the
  pretraining of its seed (``train.init_from``); ``public.asyndgan = true`` does the same for the
  no-DP AsynDGAN; ``public.freeze_d_stages`` freezes that many pretrained stages of each DP
  site's D (``policy.freeze_d_stages``).

Resumable and fingerprinted like the other settings: a finished pretraining is reused, a cut-off
one resumes from its checkpoint, and a result is reused only while ``public_inputs`` is unchanged.
Several GAN workers that need one pretraining take turns on a lock file; one trains it, the others
find it finished.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from secgan.core.config import rng, to_dict
from secgan.core.logs import get_logger

if TYPE_CHECKING:
    from secgan.evaluation.sweep_config import SweepConfig

log = get_logger(__name__)

PUBLIC_ONLY = "public-only"


@dataclass(frozen=True)
class PublicConfig:
    """The public cohort, its pretrainings and the ``public-only`` row."""

    # score the public-only row (the pretrained G: trained on the public cohort alone)
    enabled: bool = True
    # patients of the public cohort (all of them train the pretraining)
    patients: int = field(default=60, metadata=rng(min=2, max=999))
    # seed of the public phantom (its style has its own random streams too)
    seed: int = field(default=2024, metadata=rng(min=0))
    # generator steps of each pretraining (0: gan.steps)
    steps: int = field(default=0, metadata=rng(min=0))
    # the no-DP AsynDGAN also starts from the pretraining of its seed
    asyndgan: bool = False
    # pretrained DP runs freeze this many first stages of each site's D (policy.freeze_d_stages)
    freeze_d_stages: int = field(default=0, metadata=rng(min=0, max=16))


def public_root(data_root: Path) -> Path:
    return Path(data_root).with_name(Path(data_root).name + "-public")


def public_site(data_root: Path) -> Path:
    """The public cohort's one site folder (``<data>-public/site-1``)."""
    return public_root(data_root) / "site-1"


def uses_public(cfg: SweepConfig) -> bool:
    """Whether any setting of this sweep needs the public cohort."""
    return cfg.public.enabled or cfg.privacy.pretrained or cfg.public.asyndgan


def public_settings(cfg: SweepConfig) -> list[str]:
    return [PUBLIC_ONLY] if cfg.public.enabled else []


def starts_pretrained(cfg: SweepConfig, name: str) -> bool:
    """Whether GAN setting ``name`` starts from the pretraining of its seed."""
    from secgan.evaluation.sweep_plan import ASYNDGAN, config_of, is_dp_setting

    return (is_dp_setting(name) and config_of(cfg, name).privacy.pretrained) or (name == ASYNDGAN and cfg.public.asyndgan)


def ensure_public(cfg: SweepConfig, data_root: Path) -> Path:
    """Generate the public cohort (``[public]``, the phantom's size and slices) if it is missing;
    returns its site folder."""
    from secgan.data.phantom import PUBLIC_STYLE, write_phantom

    root = public_root(data_root)
    if (root / "site-1" / "split.json").is_file():
        return root / "site-1"
    p, ph = cfg.public, cfg.phantom
    log.info("public_cohort_generating", patient_count=p.patients, seed=p.seed, style=PUBLIC_STYLE.name)
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    write_phantom(tmp, sites=1, patients=p.patients, seed=p.seed, size=ph.size, slices=ph.slices,
                  test_fraction=ph.test_fraction, style=PUBLIC_STYLE)
    tmp.rename(root)  # a cut-off generation never looks like a finished cohort
    return root / "site-1"


def pretrain_run_config(cfg: SweepConfig, data_root: Path, run: int):
    """The run config of pretraining ``run``: the sweep's GAN settings and seed ``gan.seed + run``
    over the public cohort (every patient), privacy off, ``public.steps`` (or ``gan.steps``) steps."""
    from secgan.evaluation.sweep_plan import gan_dir_name, gan_run_config
    from secgan.simulation.pretrain import pretrain_config

    site = public_site(data_root)
    plain = gan_run_config(cfg, [site], epsilon=None, run=run)
    steps = cfg.public.steps or cfg.gan.steps
    plain = dataclasses.replace(plain, run_id=gan_dir_name(PUBLIC_ONLY, run),
                                train=dataclasses.replace(plain.train, steps=steps,
                                                          checkpoint_every=max(1, min(100, steps))))
    return pretrain_config(plain, site)


def adapt_gan_config(cfg: SweepConfig, run_cfg, name: str, run: int, *, data_root: Path, gans: Path):
    """The run config of GAN run ``name:run`` with the public side applied: the pretraining's own
    config for ``public-only``; ``train.init_from`` (and the frozen D stages of DP sites) for a run
    that starts pretrained; ``run_cfg`` unchanged otherwise."""
    from secgan.evaluation.sweep_plan import gan_dir_name, is_dp_setting

    if name == PUBLIC_ONLY:
        return pretrain_run_config(cfg, data_root, run)
    if not starts_pretrained(cfg, name):
        return run_cfg
    init = str((Path(gans) / gan_dir_name(PUBLIC_ONLY, run)).resolve())
    out = dataclasses.replace(run_cfg, train=dataclasses.replace(run_cfg.train, init_from=init))
    if is_dp_setting(name) and cfg.public.freeze_d_stages:
        out = dataclasses.replace(out, privacy=dataclasses.replace(out.privacy,
                                                                   freeze_d_stages=cfg.public.freeze_d_stages))
    return out


class _FolderLock:
    """An exclusive lock on ``<folder>.lock`` beside a GAN folder (blocking; released on exit)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder.with_name(f".{folder.name}.lock")

    def __enter__(self) -> "_FolderLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a")  # noqa: SIM115 - closed in __exit__
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *_exc: object) -> None:
        import fcntl

        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()


def ensure_public_gan(run_cfg, folder: Path) -> dict:
    """Train (or resume, or skip when finished) one pretraining into ``folder``; returns its
    ``run.json`` summary. A folder trained with another configuration is refused."""
    import shutil

    from secgan.evaluation.baseline import check_gan_folder, gan_checkpoint, run_finished
    from secgan.core.fsio import atomic_write_json
    from secgan.gan.pretrained import INFO_FILE
    from secgan.simulation.pretrain import pretrain

    folder = Path(folder)
    with _FolderLock(folder):
        check_gan_folder(run_cfg, folder)
        if not (folder / INFO_FILE).is_file():
            if run_finished(folder) is None and not gan_checkpoint(folder).is_file() and folder.exists():
                shutil.rmtree(folder)  # died before its first checkpoint: start it afresh
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / "sweep-run-config.json", to_dict(run_cfg))
            log.info("pretrain_start", run=run_cfg.run_id, steps=run_cfg.train.steps)
            pretrain(run_cfg, Path(run_cfg.data.site_dirs[0]), folder)
        return json.loads((folder / "run.json").read_text())


def public_inputs(cfg: SweepConfig, setting: str) -> dict[str, Any]:
    """What ``setting``'s result depends on from the public side (merged into ``setting_inputs``)."""
    p = to_dict(cfg.public)
    cohort = {k: p[k] for k in ("patients", "seed", "steps")}
    if setting == PUBLIC_ONLY:
        return {"public": cohort}
    if starts_pretrained(cfg, setting):
        from secgan.evaluation.sweep_plan import is_dp_setting

        out: dict[str, Any] = {"pretrained": cohort}
        if is_dp_setting(setting):
            out["pretrained"] = {**cohort, "freeze_d_stages": p["freeze_d_stages"]}
        return out
    return {}


def public_targets(rows: list[dict]) -> Iterator[dict]:
    """The issue's floor: every DP row above the public-only row by more than its spread."""
    from secgan.evaluation.sweep_plan import DP_PREFIX

    by = {r["setting"]: r for r in rows}
    floor = by.get(PUBLIC_ONLY)
    dp = sorted((r for r in rows if str(r["setting"]).startswith(DP_PREFIX)), key=lambda r: r["epsilon"])
    if floor is None or not dp:
        return
    for r in dp:
        margin = r["dice_mean"] - floor["dice_mean"]
        yield {"ok": margin > r["dice_std"],
               "text": f"DP eps {r['epsilon']:g} Dice {r['dice_mean']:.3f} vs public-only {floor['dice_mean']:.3f}: "
                       f"{margin:+.3f} (target: above by more than its spread {r['dice_std']:.3f})"}

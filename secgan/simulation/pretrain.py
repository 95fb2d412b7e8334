"""``pretrain``: G and D trained non-privately on a public cohort into a pretrain folder (the weights
``train.init_from`` reads, see ``secgan.gan.pretrained``).

Public data costs no privacy: the pretrained weights are data-independent of every site.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from secgan.core.errors import ConfigError
from secgan.core.logs import get_logger
from secgan.gan.pretrained import (AVERAGE_FILE, DISCRIMINATOR_FILE, FINGERPRINT_SALT, FORMAT, GENERATOR_FILE, INFO_FILE,
                                   calibrate_clip_norm, read_info)

log = get_logger(__name__)


def public_site_dir(public: str | Path, *, pooled: Path) -> Path:
    """The one site folder to pretrain on: ``public`` itself when it has a split.json, its only
    ``site-K`` folder, or its ``site-K`` folders pooled into ``pooled``."""
    public = Path(public)
    if (public / "split.json").is_file():
        return public
    sites = sorted(p for p in public.glob("site-*") if (p / "split.json").is_file())
    if not sites:
        raise ConfigError(f"--public {public}: no split.json there nor in any site-K folder under it "
                          f"(write one with `secgan phantom --public`)")
    if len(sites) == 1:
        return sites[0]
    from secgan.data.pool import pool_sites

    return pool_sites(sites, pooled)


def pretrain_config(cfg, public_site: Path):
    """The run config of a pretraining: ``cfg``'s model and training settings, one site (the public
    cohort, every patient of it), privacy off, no initialisation."""
    from secgan.privacy.policy import PrivacyPolicy

    try:
        return dataclasses.replace(
            cfg,
            data=dataclasses.replace(cfg.data, site_dirs=(str(Path(public_site).resolve()),), split="all"),
            train=dataclasses.replace(cfg.train, init_from=None),
            privacy=PrivacyPolicy(mode="off", allow_off=True, accept_sources=cfg.privacy.accept_sources),
        )
    except ValueError as exc:
        raise ConfigError(f"pretrain: {exc}") from None


def pretrain(cfg, public: str | Path, out: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Train (or resume, or skip when finished) a pretraining of ``cfg``'s model on the public cohort
    ``public`` into ``out``; returns ``pretrain.json``'s content."""
    from secgan.gan.checkpoint import checkpoint_file, load_checkpoint, load_module_state, save_module_state
    from secgan.core.config import to_dict
    from secgan.data.dataset import load_site
    from secgan.core.fsio import atomic_write_json
    from secgan.gan.models import build_discriminator
    from secgan.simulation.runner import run_inprocess

    out = Path(out)
    if (out / INFO_FILE).is_file():
        return read_info(out)
    site = public_site_dir(public, pooled=out / "public-pooled" / "site-1")
    run_cfg = pretrain_config(cfg, site)
    if not (out / "run.json").is_file():
        resume = checkpoint_file(out / "checkpoint").is_file()
        summary = run_inprocess(run_cfg, out_dir=out, resume=resume, progress=progress)
    else:
        summary = json.loads((out / "run.json").read_text())
    ck = load_checkpoint(out / "checkpoint")
    G = ck.build_generator(average=False)
    save_module_state(out / GENERATOR_FILE, G, None, {"part": "generator"})
    if ck.average_state is not None:
        save_module_state(out / AVERAGE_FILE, ck.build_generator(average=True), None, {"part": "generator-average"})
    D = build_discriminator(run_cfg.model, run_cfg.image)
    load_module_state(out / "sites" / "site-1" / "discriminator.safetensors", D, None)
    save_module_state(out / DISCRIMINATOR_FILE, D, None, {"part": "discriminator"})
    dataset = load_site(site, split="all", image_size=run_cfg.image.size, image=run_cfg.image,
                        **run_cfg.data.load_options())
    clip = calibrate_clip_norm(D, ck.build_generator(average=True), dataset, run_cfg, seed=run_cfg.train.seed)
    info = {
        "format": FORMAT,
        "kind": "secgan-pretrained",
        "trained_on": {"public_cohort": Path(public).name, "patients": dataset.n_patients,
                       "slices": int(sum(dataset.n_slices(i) for i in range(dataset.n_patients))),
                       "fingerprint": dataset.fingerprint(salt=FINGERPRINT_SALT), "privacy_mode": "off"},
        "steps": int(summary.get("steps_done", ck.step)),
        "model": to_dict(run_cfg.model),
        "image": to_dict(run_cfg.image),
        "train": {k: v for k, v in to_dict(run_cfg.train).items() if k != "init_from"},
        "files": {"generator": GENERATOR_FILE, "discriminator": DISCRIMINATOR_FILE,
                  "generator_average": AVERAGE_FILE if ck.average_state is not None else None},
        "clip_norm": clip,
    }
    atomic_write_json(out / INFO_FILE, info)
    log.info("pretrain_done", steps=info["steps"], patient_count=dataset.n_patients,
             recommended_clip_norm=clip["recommended"])
    return info

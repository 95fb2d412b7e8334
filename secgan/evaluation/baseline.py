"""GAN runs of the sweep: the centralised Syn-All baseline and the AsynDGAN runs, via the in-process runner.

Syn-All is "the same G and D trained on the pooled data in one process": the runner is given a
single site whose folder pools every site's patients (links to the case folders plus a merged
``split.json``), so the data path, models and step core are exactly AsynDGAN's. So that G sees as
many fakes per step as in AsynDGAN (one batch per site), its batch is ``batch_size x sites``.

A run is finished when its ``run.json`` exists; a run with a checkpoint but no ``run.json`` was
interrupted and is resumed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from secgan.core.config import to_dict
from secgan.core.errors import ConfigError, DataError
from secgan.core.fsio import atomic_write_json
from secgan.data.pool import pool_sites  # noqa: F401  (the sweep's Syn-All site)
from secgan.core.logs import get_logger

log = get_logger(__name__)


def syn_all_config(cfg, pooled_dir: Path, n_sites: int, *, run_id: str):
    """The Syn-All variant of an AsynDGAN run config: one pooled site, privacy off, K x the batch;
    named ``run_id``."""
    from secgan.privacy.policy import PrivacyPolicy

    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, site_dirs=(str(Path(pooled_dir).resolve()),)),
        train=dataclasses.replace(cfg.train, batch_size=cfg.train.batch_size * n_sites),
        privacy=PrivacyPolicy(mode="off", allow_off=True, accept_sources=cfg.privacy.accept_sources),
        run_id=run_id,
    )


def run_finished(out_dir: Path) -> dict | None:
    """The run's summary if it finished, else None."""
    path = Path(out_dir) / "run.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# Run-config keys that do not change what a GAN run learns: where the data sits (a moved folder is
# the same data), the device, previews and how often it checkpoints.
_NOT_PROVENANCE = (("data", "site_dirs"), ("device",), ("previews",), ("train", "checkpoint_every"))


def _provenance(run_config: dict) -> dict:
    out = json.loads(json.dumps(run_config))
    for path in _NOT_PROVENANCE:
        node = out
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return out


_ABSENT = object()


def _differences(old, new, prefix: str = "", defaults=None) -> list[str]:
    """The keys whose values differ. A key the old record lacks while the new value is that
    setting's default is no difference: a setting added since, at the default that reproduces the
    old behaviour, trains the same GAN."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            d = defaults.get(key, _ABSENT) if isinstance(defaults, dict) else _ABSENT
            if key not in old and d is not _ABSENT and new.get(key) == d:
                continue
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.", d if isinstance(d, dict) else None)
        return out
    return [] if old == new else [f"{prefix[:-1]} {json.dumps(old)} -> {json.dumps(new)}"]


def check_gan_folder(cfg, out_dir: Path) -> None:
    """Refuse to reuse or resume a GAN run folder that was trained with another configuration.

    ConfigError names the keys that differ. A folder without a recorded configuration is refused
    too unless it holds nothing trained yet (no checkpoint, no summary).
    """
    out_dir = Path(out_dir)
    trained = run_finished(out_dir) is not None or gan_checkpoint(out_dir).is_file()
    if not trained:
        return
    recorded = out_dir / "sweep-run-config.json"
    try:
        old = json.loads(recorded.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{out_dir}: holds a trained GAN but no readable record of its configuration "
                          f"(sweep-run-config.json); delete the folder to train it again") from None
    diffs = _differences(_provenance(old), _provenance(to_dict(cfg)), defaults=to_dict(type(cfg)()))
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise ConfigError(f"{out_dir}: this GAN run was trained with another configuration ({shown}); "
                          f"write the sweep to a new --out folder, or delete this folder to train it again")


def ensure_gan(cfg, out_dir: Path, *, progress: bool = False) -> dict:
    """Train (or resume, or skip when finished) one GAN run; returns its ``run.json`` summary.

    A folder trained with another configuration is refused (``check_gan_folder``), never reused.
    """
    from secgan.simulation.runner import run_inprocess

    out_dir = Path(out_dir)
    check_gan_folder(cfg, out_dir)
    done = run_finished(out_dir)
    if done is not None:
        log.info("gan_run_skipped", run=cfg.run_id, reason="finished")
        return done
    resume = gan_checkpoint(out_dir).is_file()
    if not resume and out_dir.exists():
        # a run that died before its first checkpoint: its site state would not match a fresh G
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "sweep-run-config.json", to_dict(cfg))
    log.info("gan_run_start", run=cfg.run_id, resume=resume, steps=cfg.train.steps)
    return run_inprocess(cfg, out_dir=out_dir, resume=resume, progress=progress)


def gan_checkpoint(out_dir: Path) -> Path:
    """The checkpoint file of the GAN run in ``out_dir`` (it may not exist yet)."""
    from secgan.gan.checkpoint import checkpoint_file

    return checkpoint_file(Path(out_dir) / "checkpoint")


def spent_epsilon(summary: dict) -> float | None:
    """The largest epsilon any site reports having spent (None when no site accounts)."""
    eps = [s.get("epsilon") for s in summary.get("sites", {}).values()]
    eps = [float(e) for e in eps if e is not None]
    return max(eps) if eps else None

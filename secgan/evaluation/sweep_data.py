"""The sweep's data: the phantom federation and the public atlas, generated when missing."""

from __future__ import annotations

from pathlib import Path

from secgan.evaluation.sweep_config import SweepConfig
from secgan.core.logs import get_logger

log = get_logger(__name__)


def ensure_data(cfg: SweepConfig, data_root: Path) -> Path:
    """Generate the configured phantom federation if ``data_root`` does not exist yet."""
    from secgan.data.phantom import write_phantom

    if data_root.exists():
        return data_root
    p = cfg.phantom
    log.info("phantom_generating", sites=p.sites, patient_count=p.patients, size=p.size, seed=p.seed)
    tmp = data_root.with_name(data_root.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    write_phantom(tmp, sites=p.sites, patients=p.patients, seed=p.seed, size=p.size, slices=p.slices,
                  test_fraction=p.test_fraction)
    tmp.rename(data_root)  # a cut-off generation never looks like finished data
    return data_root


def ensure_atlas(cfg: SweepConfig, data_root: Path) -> Path:
    """The condition bank made from the public atlas (``<data>-atlas/bank``); generated if missing."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from secgan.data.phantom import write_phantom
    from secgan.evaluation.sources import load_real_slices

    root = data_root.with_name(data_root.name + "-atlas")
    bank = root / "bank"
    if (bank / "conds.safetensors").is_file():
        return bank
    a, p = cfg.atlas, cfg.phantom
    if not (root / "site-1" / "split.json").is_file():
        log.info("atlas_generating", sites=a.sites, patient_count=a.patients, seed=a.seed)
        write_phantom(root, sites=a.sites, patients=a.patients, seed=a.seed, size=p.size, slices=p.slices)
    conds = np.concatenate([load_real_slices(root, site=None, image_size=cfg.image_size, split=part)[1]
                            for part in ("train", "test")])
    bank.mkdir(parents=True, exist_ok=True)
    tmp = bank / "conds.safetensors.partial"
    save_file({"conds": torch.from_numpy(np.ascontiguousarray(conds))}, str(tmp))
    tmp.rename(bank / "conds.safetensors")
    return bank

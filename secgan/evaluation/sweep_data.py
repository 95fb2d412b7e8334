"""The sweep's data: the phantom federation and the public atlas, generated when missing."""

from __future__ import annotations

from pathlib import Path

from secgan.core.errors import ConfigError
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


VALIDATION_TAG = 0x7A11  # seeds the choice of validation patients (with the site number)


def validation_root(data_root: Path) -> Path:
    """Where ``ensure_validation`` puts the validation copy of ``data_root``."""
    return data_root.with_name(data_root.name + "-validation")


def ensure_validation(data_root: Path, out: Path, *, fraction: float) -> Path:
    """A copy of ``data_root`` for choosing settings without the test patients: each site keeps only
    its training patients, and ``round(fraction * train)`` of them (at least one, chosen by a fixed
    seed per site) become that copy's "test" patients. The original test patients are not copied, so
    nothing scored on the copy can depend on them. Rebuilt when the fraction or the data changed."""
    import json
    import shutil

    import numpy as np

    from secgan.data.dataset import read_split
    from secgan.evaluation.sources import site_dirs
    from secgan.core.fsio import atomic_write_json

    plan = {}
    for k, site in site_dirs(data_root).items():
        train = sorted(read_split(site)["train"])
        if len(train) < 2:
            raise ConfigError(f"{site}: score_on = 'validation' needs at least 2 training patients a site")
        order = np.random.default_rng([VALIDATION_TAG, k]).permutation(len(train))
        n_val = min(max(1, int(round(fraction * len(train)))), len(train) - 1)
        val = sorted(train[i] for i in order[:n_val])
        plan[k] = {"train": sorted(set(train) - set(val)), "test": val}
    stamp = {"source": str(data_root.resolve()), "fraction": fraction, "splits": plan}
    marker = out / "validation.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == json.loads(json.dumps(stamp)):
                return out
        except ValueError:
            pass
    if out.exists():
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    for k, site in site_dirs(data_root).items():
        dest = tmp / site.name
        dest.mkdir(parents=True)
        for case in plan[k]["train"] + plan[k]["test"]:
            shutil.copytree(site / case, dest / case)
        atomic_write_json(dest / "split.json", plan[k])
    atomic_write_json(tmp / "validation.json", stamp)
    tmp.rename(out)
    log.info("validation_split_written", sites=len(plan), fraction=fraction)
    return out

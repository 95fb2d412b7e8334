"""The sweep's public side: the cohort next to the data, the pretraining configs, who starts pretrained."""

from __future__ import annotations

import dataclasses as dc
import json
from pathlib import Path

from secgan.evaluation.sweep_config import SweepConfig, load_sweep_config
from secgan.evaluation.sweep_plan import gan_run_config
from secgan.evaluation.sweep_public import (
    PUBLIC_ONLY,
    adapt_gan_config,
    ensure_public,
    pretrain_run_config,
    public_targets,
    starts_pretrained,
)


def test_public_cohort_is_generated_next_to_the_data_once(tmp_path: Path):
    cfg = SweepConfig(public=dc.replace(SweepConfig().public, patients=3, seed=9))
    cfg = dc.replace(cfg, phantom=dc.replace(cfg.phantom, size=16, slices=8))
    data = tmp_path / "phantom"
    site = ensure_public(cfg, data)
    assert site == tmp_path / "phantom-public" / "site-1"
    assert sorted(p.name for p in site.iterdir() if p.is_dir()) == ["Public1-P001", "Public1-P002", "Public1-P003"]
    assert not (tmp_path / "phantom-public.partial").exists()
    stamp = (site / "split.json").stat().st_mtime_ns
    assert ensure_public(cfg, data) == site and (site / "split.json").stat().st_mtime_ns == stamp


def test_pretraining_config_per_gan_seed(tmp_path: Path):
    base = SweepConfig()
    cfg = dc.replace(base, gan=dc.replace(base.gan, seed=10, steps=500),
                     public=dc.replace(base.public, steps=120))
    rc = pretrain_run_config(cfg, tmp_path / "phantom", 2)
    assert rc.data.site_dirs == (str((tmp_path / "phantom-public" / "site-1").resolve()),)
    assert rc.data.split == "all" and rc.privacy.mode == "off" and rc.train.init_from is None
    assert rc.train.seed == 12 and rc.train.steps == 120 and rc.run_id == "public-only-run2"
    assert rc.model == gan_run_config(cfg, [tmp_path], epsilon=None).model  # the sweep's own GAN model
    # public.steps = 0: as many steps as the sweep's GANs
    assert pretrain_run_config(base, tmp_path, 0).train.steps == base.gan.steps


def test_who_starts_from_the_pretraining(tmp_path: Path):
    base = SweepConfig()
    gans = tmp_path / "out" / "gans"
    on = dc.replace(base, privacy=dc.replace(base.privacy, pretrained=True),
                    public=dc.replace(base.public, freeze_d_stages=2))
    for cfg, dp_init, asyn_init in ((base, False, False), (on, True, False),
                                    (dc.replace(on, public=dc.replace(on.public, asyndgan=True)), True, True)):
        assert starts_pretrained(cfg, "asyndgan-dp-eps3") == dp_init
        assert starts_pretrained(cfg, "asyndgan") == asyn_init
        assert not starts_pretrained(cfg, "syn-all") and not starts_pretrained(cfg, PUBLIC_ONLY)
        dp = adapt_gan_config(cfg, gan_run_config(cfg, [tmp_path], epsilon=3.0, run=1), "asyndgan-dp-eps3", 1,
                              data_root=tmp_path, gans=gans)
        assert dp.train.init_from == (str((gans / "public-only-run1").resolve()) if dp_init else None)
        assert dp.privacy.freeze_d_stages == (2 if dp_init else 0)
        plain = adapt_gan_config(cfg, gan_run_config(cfg, [tmp_path], epsilon=None), "asyndgan", 0,
                                 data_root=tmp_path, gans=gans)
        assert plain.train.init_from == (str((gans / "public-only").resolve()) if asyn_init else None)
        assert plain.privacy.freeze_d_stages == 0  # the no-DP sites are not asked to freeze


def test_floor_target_and_toml(tmp_path: Path):
    rows = [{"setting": PUBLIC_ONLY, "dice_mean": 0.5, "dice_std": 0.02, "epsilon": None},
            {"setting": "asyndgan-dp-eps10", "dice_mean": 0.6, "dice_std": 0.05, "epsilon": 10.0},
            {"setting": "asyndgan-dp-eps1", "dice_mean": 0.52, "dice_std": 0.05, "epsilon": 1.0}]
    got = list(public_targets(rows))
    assert [t["ok"] for t in got] == [False, True]  # eps 1 within its spread of the floor, eps 10 above it
    assert "public-only 0.500" in got[1]["text"]
    path = tmp_path / "s.toml"
    path.write_text('[public]\npatients = 12\nasyndgan = true\n[privacy]\npretrained = true\n')
    cfg, _ = load_sweep_config(path)
    assert cfg.public.patients == 12 and cfg.public.asyndgan and cfg.privacy.pretrained
    assert json.dumps(dc.asdict(cfg.public))  # plain data

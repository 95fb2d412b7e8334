"""Sweep configuration: the example configs load, bad ones are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from secgan.core.errors import ConfigError
from secgan.evaluation.sweep_config import load_sweep_config
from secgan.evaluation.sweep_plan import gan_run_config, planned_settings

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"



@pytest.mark.parametrize("name", ["sweep.toml", "sweep-small-sites.toml", "sweep-tiny.toml", "sweep-select.toml",
                                  "sweep-large-sites.toml"])
def test_example_configs_load(name):
    cfg, data = load_sweep_config(EXAMPLES / name)
    assert data.is_absolute()
    assert cfg.seeds and cfg.privacy.epsilons
    settings = planned_settings(cfg, list(range(1, cfg.phantom.sites + 1)))
    assert settings[0] == "real-all" and ("syn-all" in settings) == cfg.syn_all and "asyndgan" in settings
    assert all(f"asyndgan-dp-eps{e:g}" in settings for e in cfg.privacy.epsilons)
    dirs = [data / f"site-{k}" for k in range(1, cfg.phantom.sites + 1)]
    dp = gan_run_config(cfg, dirs, epsilon=cfg.privacy.epsilons[0])
    dp_steps = cfg.privacy.steps or cfg.gan.steps
    assert dp.privacy.mode == "dpsgd" and dp.privacy.planned_steps == dp_steps == dp.train.steps
    assert dp.privacy.target_epsilon == cfg.privacy.epsilons[0]
    plain = gan_run_config(cfg, dirs, epsilon=None)
    assert plain.privacy.mode == "off" and plain.train.steps == cfg.gan.steps



def test_bad_sweep_config(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("seeds = []\n")
    with pytest.raises(ConfigError, match="seeds"):
        load_sweep_config(p)
    p.write_text("[privacy]\nepsilons = [1.0, -2.0]\n")
    with pytest.raises(ConfigError, match="epsilon"):
        load_sweep_config(p)
    p.write_text("[gan]\nstepz = 3\n")
    with pytest.raises(ConfigError, match="gan.stepz"):
        load_sweep_config(p)


def test_the_main_sweeps_dp_runs_follow_the_private_fine_tuning_recipe():
    """examples/sweep.toml's DP rows are the recipe the demo and provisioned kits use (one owner:
    secgan.gan.config.recommended_settings "fine_tune"); a recipe change that the sweep misses fails here."""
    from secgan.gan.config import recommended_settings

    cfg, data = load_sweep_config(EXAMPLES / "sweep.toml")
    dirs = [data / f"site-{k}" for k in range(1, cfg.phantom.sites + 1)]
    dp = gan_run_config(cfg, dirs, epsilon=10.0)
    recipe = recommended_settings(cfg.image_size)["fine_tune"]
    assert recipe["policy"]["d_steps"] == 2
    assert {k: getattr(dp.train, k) for k in recipe["train"]} == recipe["train"]
    assert {k: getattr(dp.privacy, k) for k in recipe["policy"]} == recipe["policy"]
    # 150 generator steps x 2 private D steps: the 300 charged D steps of the previous recipe
    assert dp.train.steps == 150 and dp.privacy.charged_steps(dp.train.steps) == 300

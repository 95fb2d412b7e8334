from __future__ import annotations

from pathlib import Path

import pytest

from secgan.core.errors import ConfigError
from secgan.run.config import RunConfig, load_run_config

ROOT = Path(__file__).resolve().parents[3]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_example_config_loads_and_resolves_site_dirs() -> None:
    cfg = load_run_config(ROOT / "examples" / "inprocess.toml")
    assert isinstance(cfg, RunConfig)
    assert cfg.image.size == 32 and cfg.privacy.mode == "dpsgd"
    assert cfg.model.d_arch == "semantic" and cfg.train.loss == "semantic"
    assert len(cfg.data.site_dirs) == 3
    assert all(Path(d).is_absolute() for d in cfg.data.site_dirs)
    assert cfg.data.site_dirs[0].endswith("site-1")


def test_defaults_load_from_an_empty_file(tmp_path: Path) -> None:
    cfg = load_run_config(_write(tmp_path, ""))
    assert cfg == RunConfig()


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[train]\nstepz = 3\n", "train.stepz"),
        ("[model]\nnoise_mode = 'sideways'\n", "model.noise_mode"),
        ("[train]\nlr_g = 0\n", "train.lr_g"),
        ("[train]\nloss = 'wasserstein'\n", "train.loss"),
        ("[train]\nbatch_size = 'eight'\n", "train.batch_size"),
        ("[image]\nsize = 40\n", "multiple of 16"),
        ("[data]\ncondition_source = 'bank'\n", "bank_dir"),
        ("[privacy]\nmode = 'off'\n", "allow_off"),
        ("[image]\nsize = 16\n[model]\ng_depth = 5\n", "g_depth"),
        ("bogus = 1\n", "bogus"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_run_config(_write(tmp_path, text))


@pytest.mark.parametrize(
    "privacy,source",
    [("mode = 'dpsgd'", "procedural"), ("mode = 'off'\nallow_off = true", "procedural"), ("mode = 'dpsgd'", "site")],
)
def test_l1_refused_unless_dp_off_and_site_source(tmp_path: Path, privacy: str, source: str) -> None:
    text = f"[train]\nl1_weight = 1.0\n[privacy]\n{privacy}\n[data]\ncondition_source = '{source}'\n"
    with pytest.raises(ConfigError, match="l1_weight"):
        load_run_config(_write(tmp_path, text))


def test_l1_allowed_with_dp_off_and_site_source(tmp_path: Path) -> None:
    text = "[train]\nl1_weight = 1.0\n[privacy]\nmode = 'off'\nallow_off = true\n[data]\ncondition_source = 'site'\n"
    assert load_run_config(_write(tmp_path, text)).train.l1_weight == 1.0


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.toml")

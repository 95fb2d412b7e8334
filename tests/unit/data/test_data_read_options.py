"""The one read-settings table: [data.read] of a run, [read] of site.toml, and split "unlisted"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from secgan.core.errors import ConfigError, DataError
from secgan.data.dataset import load_site
from secgan.data.options import ReadOptions
from secgan.run.config import DataConfig, load_run_config
from secgan.settings import load_site_config


def test_site_toml_read_table_reaches_the_reader_and_bad_keys_are_named(tmp_path: Path) -> None:
    p = tmp_path / "site.toml"
    p.write_text('site_id = "site-1"\ndata_dir = "data"\n[read]\nlayout = "brats2023"\naffine_tolerance = 0.01\n')
    s = load_site_config(p)
    assert s.read == ReadOptions(layout="brats2023", affine_tolerance=0.01)
    kw = s.read.load_kwargs()
    assert kw["layout"] == "brats2023" and kw["limits"].affine_atol == 0.01 and kw["crop"] == "auto"
    for bad, key in (('[read]\nlayuot = "msd"\n', "read.layuot"), ('[read]\nlayout = "brats2019"\n', "read.layout"),
                     ('[read]\nvoxel_mm = 0\n', "read.voxel_mm")):
        p.write_text('site_id = "site-1"\ndata_dir = "data"\n' + bad)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_site_config(p)


def test_run_config_data_read_table(tmp_path: Path) -> None:
    p = tmp_path / "run.toml"
    p.write_text('[data]\nsite_dirs = ["a"]\n[data.read]\nlayout = "msd"\ncrop = "none"\n')
    cfg = load_run_config(p)
    assert cfg.data.read.layout == "msd" and cfg.data.load_options()["crop"] == "none"
    assert DataConfig().load_options() == {"skip_bad": False, **ReadOptions().load_kwargs()}


def test_unlisted_split_is_exactly_the_cases_split_json_does_not_list(phantom_root: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(phantom_root / "site-1", site)
    split = json.loads((site / "split.json").read_text())
    dropped = split["train"][0]
    split["train"] = split["train"][1:]
    (site / "split.json").write_text(json.dumps(split))
    un = load_site(site, split="unlisted", image_size=32)
    assert un.case_ids == (dropped,)
    full = load_site(phantom_root / "site-1", split="train", image_size=32)
    assert np.array_equal(un.images(0), full.images(full.case_ids.index(dropped)))  # sliced the same way
    with pytest.raises(DataError, match="no usable patient"):
        load_site(phantom_root / "site-1", split="unlisted", image_size=32)

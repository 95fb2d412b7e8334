"""The sweep's GAN run folders: the pooled Syn-All site and the configuration check."""

from __future__ import annotations

import pytest

from secgan.core.errors import ConfigError
from secgan.evaluation.sweep_config import SweepConfig
from secgan.evaluation.sweep_plan import gan_run_config



def test_pooled_site_is_built_once_even_by_concurrent_processes(tmp_path):
    """The Syn-All pooled site is shared by the sweep's GAN workers: processes building it at
    once all succeed (eight, so that the old race shows), and the result holds every site's cases and their merged split."""
    import json
    import subprocess
    import sys

    from secgan.data.dataset import read_split
    from secgan.evaluation.baseline import pool_sites
    from secgan.evaluation.sweep_config import PhantomConfig
    from secgan.evaluation.sweep_data import ensure_data

    cfg = SweepConfig(phantom=PhantomConfig(sites=3, patients=30, size=16, slices=8, seed=5))
    data = ensure_data(cfg, tmp_path / "data")
    sites = sorted(p for p in data.iterdir() if p.name.startswith("site-"))
    out = tmp_path / "pooled" / "site-1"
    code = ("import sys; from pathlib import Path; from secgan.evaluation.baseline import pool_sites; "
            "pool_sites([Path(a) for a in sys.argv[2:]], Path(sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out), *map(str, sites)], stderr=subprocess.PIPE)
             for _ in range(8)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    merged = {"train": [], "test": []}
    for s in sites:
        for part, cases in read_split(s).items():
            merged[part] += cases
    assert json.loads((out / "split.json").read_text()) == merged
    assert sorted(c.name for c in out.iterdir() if c.name not in ("split.json", "phantom.json")) == sorted(
        merged["train"] + merged["test"])
    assert (out / "phantom.json").is_file()  # pooled phantoms stay phantoms (no crop under data crop = "auto")
    assert not [p for p in out.parent.iterdir() if p.name != "site-1"]  # no partial folder left behind
    stamp = (out / "split.json").stat().st_mtime_ns
    assert pool_sites(sites, out) == out and (out / "split.json").stat().st_mtime_ns == stamp


def test_a_gan_folder_trained_with_another_configuration_is_refused(tmp_path):
    import dataclasses as dc
    import json

    from secgan.core.config import to_dict
    from secgan.evaluation.baseline import check_gan_folder

    cfg = SweepConfig()
    dirs = [tmp_path / "site-1", tmp_path / "site-2"]
    run = gan_run_config(cfg, dirs, epsilon=None)
    folder = tmp_path / "gans" / "asyndgan"
    check_gan_folder(run, folder)  # nothing there: fine
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"steps_done": 300}))
    with pytest.raises(ConfigError, match="no readable record of its configuration"):
        check_gan_folder(run, folder)
    (folder / "sweep-run-config.json").write_text(json.dumps(to_dict(run)))
    check_gan_folder(run, folder)
    # the data moved, another device, other checkpoint spacing: still the same run
    moved = gan_run_config(cfg, [tmp_path / "elsewhere" / "site-1", tmp_path / "elsewhere" / "site-2"], epsilon=None)
    check_gan_folder(dc.replace(moved, device="cuda", train=dc.replace(moved.train, checkpoint_every=7)), folder)
    with pytest.raises(ConfigError, match=r"train\.lr_g 0\.0002 -> 0\.001.*new --out folder"):
        check_gan_folder(dc.replace(run, train=dc.replace(run.train, lr_g=1e-3)), folder)
    dp = gan_run_config(cfg, dirs, epsilon=3.0)
    with pytest.raises(ConfigError, match=r"privacy\.mode \"off\" -> \"dpsgd\""):
        check_gan_folder(dp, folder)


def test_a_setting_added_since_at_its_default_is_no_difference(tmp_path):
    """A record written before a setting existed matches a run with that setting at its default
    (which reproduces the old behaviour), and differs from one with any other value."""
    import dataclasses as dc
    import json

    from secgan.core.config import to_dict
    from secgan.evaluation.baseline import check_gan_folder

    run = gan_run_config(SweepConfig(), [tmp_path / "site-1"], epsilon=3.0)
    folder = tmp_path / "gans" / "dp"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"steps_done": 300}))
    old = to_dict(run)
    del old["privacy"]["slices_per_patient"], old["train"]["init_from"]  # as an older version wrote it
    (folder / "sweep-run-config.json").write_text(json.dumps(old))
    check_gan_folder(run, folder)
    with pytest.raises(ConfigError, match=r"privacy\.slices_per_patient null -> 4"):
        check_gan_folder(dc.replace(run, privacy=dc.replace(run.privacy, slices_per_patient=4)), folder)
    with pytest.raises(ConfigError, match=r"train\.init_from"):
        check_gan_folder(dc.replace(run, train=dc.replace(run.train, init_from=str(tmp_path))), folder)

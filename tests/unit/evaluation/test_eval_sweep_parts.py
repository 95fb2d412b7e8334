"""Sweep configuration, planned settings, targets, CSV, figure and HTML page (no training)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from secgan.errors import ConfigError
from secgan.evaluation.plots import baseline_values, plot_dice_vs_epsilon
from secgan.evaluation.report import render_report
from secgan.evaluation.sweep import (
    SweepConfig,
    check_targets,
    gan_run_config,
    load_sweep_config,
    planned_settings,
    results_csv,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _row(setting, dice, eps=None, std=0.01):
    return {"setting": setting, "epsilon": eps, "epsilon_spent": eps, "dice_mean": dice, "dice_std": std,
            "hd95_mean": 5.0, "hd95_std": 0.5, "seeds": 2}


ROWS = [
    _row("real-all", 0.80), _row("real-subset-1", 0.60), _row("real-subset-2", 0.65),
    _row("syn-all", 0.70), _row("asyndgan", 0.74),
    _row("asyndgan-dp-eps1", 0.30, 1.0), _row("asyndgan-dp-eps3", 0.45, 3.0), _row("asyndgan-dp-eps10", 0.55, 10.0),
    _row("real-subset-1+synthetic", 0.70),
]


@pytest.mark.parametrize("name", ["sweep.toml", "sweep-small-sites.toml", "sweep-tiny.toml"])
def test_example_configs_load(name):
    cfg, data = load_sweep_config(EXAMPLES / name)
    assert data.is_absolute()
    assert cfg.seeds and cfg.privacy.epsilons
    settings = planned_settings(cfg, list(range(1, cfg.phantom.sites + 1)))
    assert settings[0] == "real-all" and "syn-all" in settings and "asyndgan" in settings
    assert all(f"asyndgan-dp-eps{e:g}" in settings for e in cfg.privacy.epsilons)
    dirs = [data / f"site-{k}" for k in range(1, cfg.phantom.sites + 1)]
    dp = gan_run_config(cfg, dirs, epsilon=cfg.privacy.epsilons[0])
    dp_steps = cfg.privacy.steps or cfg.gan.steps
    assert dp.privacy.mode == "dpsgd" and dp.privacy.planned_steps == dp_steps == dp.train.steps
    assert dp.privacy.target_epsilon == cfg.privacy.epsilons[0]
    plain = gan_run_config(cfg, dirs, epsilon=None)
    assert plain.privacy.mode == "off" and plain.train.steps == cfg.gan.steps


def test_dp_runs_can_have_their_own_step_count():
    import dataclasses

    cfg = SweepConfig()
    cfg = dataclasses.replace(cfg, gan=dataclasses.replace(cfg.gan, steps=800),
                              privacy=dataclasses.replace(cfg.privacy, steps=300))
    dp = gan_run_config(cfg, [Path("site-1")], epsilon=3.0, run=1)
    assert dp.train.steps == dp.privacy.planned_steps == 300 and dp.train.seed == cfg.gan.seed + 1
    assert dp.run_id == "asyndgan-dp-eps3-run1"
    assert gan_run_config(cfg, [Path("site-1")], epsilon=None).train.steps == 800


def test_default_epsilons_and_settings():
    cfg = SweepConfig()
    assert cfg.privacy.epsilons == (1.0, 3.0, 10.0)
    assert planned_settings(cfg, [1, 2]) == [
        "real-all", "real-subset-1", "real-subset-2", "syn-all", "asyndgan",
        "asyndgan-dp-eps1", "asyndgan-dp-eps3", "asyndgan-dp-eps10",
        "real-subset-1+synthetic", "real-subset-2+synthetic",
        "missing-flair-site-1", "missing-flair-site-1-completed",
    ]


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


def test_targets_are_checked_honestly():
    claims = check_targets(ROWS)
    assert len(claims) == 3
    ratio, subset, dp = claims
    assert ratio["ok"] and "0.92 x" in ratio["text"]  # 0.74 / 0.80 = 0.925
    assert subset["ok"]
    assert dp["ok"]
    worse = [dict(r, dice_mean=0.5) if r["setting"] == "asyndgan" else r for r in ROWS]
    ratio, subset, dp = check_targets(worse)
    assert not ratio["ok"] and not subset["ok"] and not dp["ok"]
    assert check_targets([_row("real-all", 0.8)]) == []


def test_csv_has_required_columns():
    rows = list(csv.DictReader(io.StringIO(results_csv(ROWS))))
    assert [r["setting"] for r in rows] == [r["setting"] for r in ROWS]
    assert rows[0]["epsilon"] == "" and rows[6]["epsilon"] == "3"
    assert float(rows[4]["dice_mean"]) == pytest.approx(0.74)


def test_figure_and_page(tmp_path):
    lines = baseline_values(ROWS)
    assert lines["best-real-subset"][0] == pytest.approx(0.65)  # augmented subsets are not baselines
    png = plot_dice_vs_epsilon(ROWS, tmp_path / "f.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = render_report(ROWS, figure_png=png, claims=check_targets(ROWS), notes=["<b>note</b>"], config_text="x",
                         wall_s=90.0)
    assert "data:image/png;base64," in page and "asyndgan-dp-eps3" in page
    assert "&lt;b&gt;note&lt;/b&gt;" in page  # escaped
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "1.5 min" in page


def test_public_atlas_bank_is_generated_once_from_other_patients(tmp_path):
    """gan.condition_source = "bank" without bank_dir: the sweep's condition bank is the label maps
    of an atlas phantom with its own seed: no map equals one of the sites' own."""
    import numpy as np

    from secgan.conditions import BankConditions
    from secgan.evaluation.sources import load_real_slices
    from secgan.evaluation.sweep import AtlasConfig, PhantomConfig, ensure_atlas, ensure_data

    cfg = SweepConfig(phantom=PhantomConfig(sites=2, patients=4, size=32, slices=12, seed=5),
                      atlas=AtlasConfig(sites=1, patients=5, seed=6))
    data = ensure_data(cfg, tmp_path / "data")
    bank = ensure_atlas(cfg, data)
    assert bank == tmp_path / "data-atlas" / "bank"
    maps = BankConditions(bank, 32)
    assert len(maps) > 5  # tumour-bearing slices of 5 atlas patients
    own = load_real_slices(data, site=None, image_size=32)[1]
    own_bytes = {c.tobytes() for c in own}
    assert not any(c.numpy().tobytes() in own_bytes for c in maps._conds)
    stamp = (bank / "conds.safetensors").stat().st_mtime_ns
    assert ensure_atlas(cfg, data) == bank and (bank / "conds.safetensors").stat().st_mtime_ns == stamp
    assert np.isfinite(maps._conds.numpy()).all()


def test_pooled_site_is_built_once_even_by_concurrent_processes(tmp_path):
    """The Syn-All pooled site is shared by the sweep's GAN workers: processes building it at
    once all succeed (eight, so that the old race shows), and the result holds every site's cases and their merged split."""
    import json
    import subprocess
    import sys

    from secgan.data.dataset import read_split
    from secgan.evaluation.baseline import pool_sites
    from secgan.evaluation.sweep import PhantomConfig, ensure_data

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
    assert sorted(c.name for c in out.iterdir() if c.name != "split.json") == sorted(merged["train"] + merged["test"])
    assert not [p for p in out.parent.iterdir() if p.name != "site-1"]  # no partial folder left behind
    stamp = (out / "split.json").stat().st_mtime_ns
    assert pool_sites(sites, out) == out and (out / "split.json").stat().st_mtime_ns == stamp


def test_each_setting_depends_only_on_its_own_part_of_the_config():
    """A resumed sweep reuses a saved result only when its inputs are unchanged: what a setting's
    fingerprint covers, and what it must not (so unrelated edits do not force recomputation)."""
    import dataclasses as dc

    from secgan.evaluation.sweep import inputs_fingerprint

    base = SweepConfig()
    names = planned_settings(base, [1, 2])

    def changed(cfg):
        return {n for n in names if inputs_fingerprint(cfg, n) != inputs_fingerprint(base, n)}

    assert changed(base) == set()
    assert changed(dc.replace(base, device="cuda")) == set()
    assert changed(dc.replace(base, segmenter=dc.replace(base.segmenter, device="cuda"))) == set()
    assert changed(dc.replace(base, seeds=(0, 1, 2))) == set(names)
    assert changed(dc.replace(base, segmenter=dc.replace(base.segmenter, lr=1e-3))) == set(names)
    gan_users = {n for n in names if n not in ("real-all", "real-subset-1", "real-subset-2")}
    assert changed(dc.replace(base, gan=dc.replace(base.gan, steps=301))) == gan_users
    # more GANs per setting: only the GAN rows (the others use the first GAN)
    gan_rows = {"syn-all", "asyndgan", "asyndgan-dp-eps1", "asyndgan-dp-eps3", "asyndgan-dp-eps10"}
    assert changed(dc.replace(base, gan=dc.replace(base.gan, runs=2))) == gan_rows
    # another epsilon added: no existing setting changes; the DP budget knobs change the DP rows only
    more = dc.replace(base, privacy=dc.replace(base.privacy, epsilons=(1.0, 3.0, 10.0, 30.0)))
    assert changed(more) == set()
    dp_rows = {"asyndgan-dp-eps1", "asyndgan-dp-eps3", "asyndgan-dp-eps10"}
    assert changed(dc.replace(base, privacy=dc.replace(base.privacy, clip_norm=0.5))) == dp_rows
    mm = dc.replace(base, missing_modality=dc.replace(base.missing_modality, draws=8))
    assert changed(mm) == {"missing-flair-site-1", "missing-flair-site-1-completed"}
    assert changed(dc.replace(base, phantom=dc.replace(base.phantom, seed=99))) == set(names)


def test_a_gan_folder_trained_with_another_configuration_is_refused(tmp_path):
    import dataclasses as dc
    import json

    from secgan.config import to_dict
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

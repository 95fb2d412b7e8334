"""``secgan evaluate`` end to end on the phantom federation: real and synthetic sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from secgan.cli import main
from secgan.evaluation.downstream import Workbench, evaluate_source
from secgan.evaluation.segmenter import SegmenterConfig, build_unet, evaluate_segmenter
from secgan.evaluation.sources import conds_to_segs, parse_source, synthetic_pairs
from secgan.gan.synthetic import sample_generator

pytestmark = pytest.mark.slow

TINY = ["--image-size", "32", "--channels", "8,16,32", "--batch-size", "16"]


def test_real_all_beats_untrained(phantom_root: Path):
    cfg = SegmenterConfig(channels=(8, 16, 32), num_res_units=0, epochs=10, batch_size=16, lr=5e-3)
    bench = Workbench(phantom_root, 32)
    trained = evaluate_source(parse_source("real-all"), bench, seeds=(0,), segmenter=cfg)
    untrained = evaluate_segmenter(build_unet(cfg, seed=0).eval(), bench.test_patients())
    assert trained["dice_mean"] > untrained["mean"]["dice"] + 0.1
    assert trained["dice_wt_mean"] > 0.4
    assert trained["hd95_mean"] < untrained["mean"]["hd95"]


def test_evaluate_command_real_subset(phantom_root: Path, tmp_path: Path, capsys):
    out = tmp_path / "ev"
    rc = main(["evaluate", "--train-source", "real-subset-2", "--data", str(phantom_root), "--out", str(out),
               "--seeds", "0,1", "--epochs", "1", *TINY])
    assert rc == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["train_source"] == "real-subset-2"
    assert result["seeds"] == 2 and len(result["per_seed"]) == 2
    for key in ("dice_mean", "dice_std", "hd95_mean", "dice_wt_mean", "dice_tc_mean", "dice_et_mean"):
        assert key in result
    assert 0.0 <= result["dice_mean"] <= 1.0 and result["hd95_mean"] >= 0.0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["train_source"] == "real-subset-2"


def test_evaluate_command_synthetic_sources(phantom_root: Path, tmp_path: Path):
    from secgan.evaluation.baseline import ensure_gan, gan_checkpoint
    from secgan.evaluation.sources import site_dirs
    from secgan.evaluation.sweep_config import GanConfig, SweepConfig
    from secgan.evaluation.sweep_plan import gan_run_config

    cfg = SweepConfig(image_size=32, gan=GanConfig(steps=2, batch_size=4, g_width=8, g_depth=2, d_width=8, d_layers=2, noise_dim=4))
    run = gan_run_config(cfg, list(site_dirs(phantom_root).values()), epsilon=None)
    ensure_gan(run, tmp_path / "gan")
    ck = gan_checkpoint(tmp_path / "gan")
    images, segs = synthetic_pairs(ck, n=6, seed=3, image_size=32, mask_background=True)
    raw, conds = sample_generator(ck, n=6, seed=3)
    assert np.array_equal(synthetic_pairs(ck, n=6, seed=3)[0], raw)
    outside = conds[:, 0] < 0.5
    assert np.array_equal(images.transpose(1, 0, 2, 3)[:, ~outside], raw.transpose(1, 0, 2, 3)[:, ~outside])
    assert (images.transpose(1, 0, 2, 3)[:, outside] == -1).all()
    assert np.array_equal(segs, conds_to_segs(conds))
    n_real = len(bench_real(phantom_root, 1))
    # synthetic alone: as many pairs as asked; augmented by default 1:1 with the site's real slices
    for source, extra, expected in (("synthetic", ["--n-synthetic", "24"], 24),
                                    ("real-subset-1+synthetic", [], 2 * n_real)):
        out = tmp_path / source
        rc = main(["evaluate", "--train-source", source, "--data", str(phantom_root), "--out", str(out),
                   "--checkpoint", str(ck), *extra, "--epochs", "1", "--quality", *TINY])
        assert rc == 0
        assert json.loads((out / "evaluation.json").read_text())["train_slices"] == expected
    q = json.loads((tmp_path / "real-subset-1+synthetic" / "evaluation.json").read_text())["quality"]
    assert 0.0 <= q["precision"] <= 1.0 and q["w1_mean"] > 0


def bench_real(root: Path, site: int):
    return Workbench(root, 32).real(site)[0]


def test_evaluate_command_errors(phantom_root: Path, tmp_path: Path, capsys):
    assert main(["evaluate", "--train-source", "synthetic", "--data", str(phantom_root), "--out", str(tmp_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "--train-source", "real-some", "--data", str(phantom_root), "--out", str(tmp_path)]) == 2
    assert "not understood" in capsys.readouterr().err
    assert main(["evaluate", "--train-source", "real-subset-7", "--data", str(phantom_root), "--out", str(tmp_path),
                 *TINY]) == 2
    assert "site-7" in capsys.readouterr().err
    if not __import__("torch").cuda.is_available():
        assert main(["evaluate", "--train-source", "real-all", "--data", str(phantom_root), "--out", str(tmp_path),
                     "--device", "cuda", *TINY]) == 2
        assert "CUDA" in capsys.readouterr().err

"""Larger slices end to end: train, sample and evaluate at image.size 64 from 96 x 96 phantom
volumes and a BraTS 2023 site (a real layout, LPS, cropped to the brain), with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from secgan.cli import main
from secgan.data.phantom import write_phantom
from secgan.gan.synthetic import read_synthetic

from tests.unit.simulation.test_simulation_runner import CONFIG as RUN_CONFIG

from . import layout_fixtures as fx

# the runner test's tiny model and plain run, at 64 px
CONFIG = RUN_CONFIG.replace('run_id = "t"', 'run_id = "s64"').replace("size = 32", "size = 64")


def test_train_sample_evaluate_at_64(tmp_path: Path, capsys):
    root = tmp_path / "data"
    write_phantom(root, sites=1, patients=3, seed=2, size=96, slices=10)
    gli = root / "site-2"
    ids = [f"BraTS-GLI-0000{k}-000" for k in range(3)]
    for k, cid in enumerate(ids):
        vols, seg = fx.patient(k)
        fx.gli_case(gli, cid, vols, seg)
    fx.write_split(gli, ids[:2], ids[2:])
    assert main(["data", "check", str(root), "--image-size", "64", "--min-tumour-pixels", "1"]) == 0
    assert "layout brats2023" in capsys.readouterr().out
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(steps=2, sites=", ".join(f'"{root / s}"' for s in ("site-1", "site-2"))))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "run.json").read_text())["steps_done"] == 2
    samples = tmp_path / "samples"
    assert main(["sample", "--checkpoint", str(out / "checkpoint"), "--n", "3", "--out", str(samples), "--seed", "1",
                 "--no-previews"]) == 0
    images, conds = read_synthetic(samples)
    assert images.shape == (3, 4, 64, 64) and conds.shape == (3, 4, 64, 64)
    ev = tmp_path / "ev"
    assert main(["evaluate", "--train-source", "real-all", "--data", str(root), "--out", str(ev), "--image-size", "64",
                 "--channels", "8,16", "--batch-size", "8", "--epochs", "1"]) == 0
    result = json.loads((ev / "evaluation.json").read_text())
    assert result["image_size"] == 64 and 0.0 <= result["dice_mean"] <= 1.0

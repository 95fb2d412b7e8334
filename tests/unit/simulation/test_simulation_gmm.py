from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from secgan.cli import main
from secgan.simulation.gmm import MIXTURE, GmmConfig, evaluate, mode_fractions, run_gmm, true_mixture_sample


def test_metrics_on_known_samples() -> None:
    truth = true_mixture_sample(50_000, seed=0)
    fr = mode_fractions(truth.astype(np.float64))
    assert all(f > 0.22 for f in fr)
    one = np.random.default_rng(0).normal(MIXTURE[1][0], MIXTURE[1][1], 5000)
    r = evaluate(one, truth)
    assert r["modes_covered"] == 1 and r["w1"] > 1.0
    assert evaluate(true_mixture_sample(5000, seed=1).astype(np.float64), truth)["w1"] < 0.15


@pytest.mark.slow
def test_asyndgan_covers_all_modes_and_beats_every_single_site_gan() -> None:
    methods = ("syn-subset-1", "syn-subset-2", "syn-subset-3", "asyndgan")
    results, samples = run_gmm(GmmConfig(steps=300, seed=0, truth_samples=20_000, eval_samples=3000), methods=methods)
    m = results["methods"]
    assert m["asyndgan"]["modes_covered"] == 3, m["asyndgan"]
    for j in (1, 2, 3):
        assert m["asyndgan"]["w1"] < m[f"syn-subset-{j}"]["w1"], (j, m)
        assert m[f"syn-subset-{j}"]["modes_covered"] <= 2
    assert set(samples) == set(methods)


def test_gmm_command_writes_json_and_png(tmp_path: Path) -> None:
    assert main(["gmm", "--out", str(tmp_path), "--steps", "3", "--seed", "1"]) == 0
    data = json.loads((tmp_path / "gmm.json").read_text())
    assert set(data["methods"]) == {"syn-subset-1", "syn-subset-2", "syn-subset-3", "syn-all", "asyndgan", "asyndgan-bce"}
    assert all({"w1", "modes_covered", "mode_fractions"} <= set(v) for v in data["methods"].values())
    assert (tmp_path / "gmm.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["gmm", "--out", str(tmp_path), "--steps", "0"]) == 2

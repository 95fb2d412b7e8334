"""`secgan demo` end to end at a tiny size: real processes over CURVE, DP-SGD, audits, Dice, page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.demo_helpers import check_privacy_and_audits, kit_tomls, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run_demo(out)
    page = check_privacy_and_audits(out)
    run = json.loads((out / "kits" / "coordinator" / "state" / "run.json").read_text())
    assert run["steps_done"] == 3
    utility = json.loads((out / "utility" / "results.json").read_text())
    assert [r["source"] for r in utility] == ["real-all", "real-subset-1", "synthetic", "public-only"]
    assert all(0.0 <= r["dice_mean"] <= 1.0 for r in utility)
    by = {r["source"]: r["dice_mean"] for r in utility}
    # the private Dice is printed with the public-only floor beside it
    assert f"synthetic Dice at epsilon 50: {by['synthetic']:.3f} (public-only {by['public-only']:.3f}" in proc.stdout
    # every party started from the public pretraining (the sites decide for their own D)
    pre = json.loads((out / "pretrained" / "pretrain.json").read_text())
    assert pre["steps"] == 2 and pre["trained_on"]["patients"] == 4
    for kit, toml in kit_tomls(out).items():
        assert toml["train"]["init_from"] == str((out / "pretrained").resolve()), kit
    assert "secgan.data.dataset" not in proc.stdout

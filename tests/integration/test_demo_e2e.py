"""`secgan demo` end to end at a tiny size: real processes over CURVE, DP-SGD, audits, Dice, page."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "secgan", "demo", "--out", str(out), "--steps", "3", "--patients", "12",
           "--samples", "32", "--seg-epochs", "1", "--epsilon", "50", "--timeout", "240",
           "--pretrain-steps", "2", "--public-patients", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Open {out / 'index.html'}" in proc.stdout
    # every stage printed, and each site's epsilon
    for k in range(1, 9):
        assert f"[{k}/8]" in proc.stdout
    assert proc.stdout.count("epsilon spent") == 3

    run = json.loads((out / "kits" / "coordinator" / "state" / "run.json").read_text())
    assert run["status"] == "completed" and run["steps_done"] == 3
    for site, info in run["sites"].items():
        # the coordinator holds only the coarse budget left; the exact epsilon is in the site's ledger
        assert info["mode"] == "dpsgd" and 0.0 <= info["budget_left"] <= 1.0 and "epsilon" not in info
        ledger = json.loads((out / "kits" / site / "state" / "ledger.json").read_text())
        assert 0 < ledger["epsilon"] <= 50

    page = (out / "index.html").read_text()
    for k in (1, 2, 3):
        report = out / "audits" / f"site-{k}" / "report.json"
        assert f"audits/site-{k}/report.html" in page
        verdict = json.loads(report.read_text())["verdict"]
        assert verdict in page
        check = subprocess.run(
            [sys.executable, "-m", "secgan", "audit", "verify", str(report),
             "--public-key", str(out / "kits" / f"site-{k}" / "signing.pub")],
            capture_output=True, text=True, timeout=120,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    utility = json.loads((out / "utility" / "results.json").read_text())
    assert [r["source"] for r in utility] == ["real-all", "real-subset-1", "synthetic", "public-only"]
    assert all(0.0 <= r["dice_mean"] <= 1.0 for r in utility)
    by = {r["source"]: r["dice_mean"] for r in utility}
    # the private Dice is printed with the public-only floor beside it
    assert f"synthetic Dice at epsilon 50: {by['synthetic']:.3f} (public-only {by['public-only']:.3f}" in proc.stdout
    # every party started from the public pretraining (the sites decide for their own D)
    pre = json.loads((out / "pretrained" / "pretrain.json").read_text())
    assert pre["steps"] == 2 and pre["trained_on"]["patients"] == 4
    import tomllib

    for kit in ["coordinator"] + [f"site-{k}" for k in (1, 2, 3)]:
        toml = tomllib.loads((out / "kits" / kit / ("coordinator.toml" if kit == "coordinator" else "site.toml")).read_text())
        assert toml["train"]["init_from"] == str((out / "pretrained").resolve())
    # the demo's own process logs went to a file, not the terminal
    assert (out / "logs" / "demo.log").stat().st_size > 0
    summary = json.loads((out / "audits" / "summary.json").read_text())
    assert "audits/summary.html" in page and summary["verdict"] in ("Green", "Amber", "Inconclusive", "Red", "Critical")
    assert "secgan.data.dataset" not in proc.stdout

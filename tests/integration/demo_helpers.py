"""What the demo end-to-end tests share: running ``secgan demo`` as a subprocess at a tiny size, and
the checks every domain's run must pass (each site's ledger, each signed audit report, the page)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.integration.net_helpers import child_env

# what keeps a demo run tiny: a few generator steps, few patients, a one-epoch downstream model
TINY_DEMO = ["--steps", "3", "--patients", "12", "--samples", "32", "--seg-epochs", "1", "--epsilon", "50",
             "--timeout", "240", "--pretrain-steps", "2", "--public-patients", "4"]
TINY_EPSILON = 50.0
SITES = ("site-1", "site-2", "site-3")


def run_demo(out: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``secgan demo --out OUT`` with the tiny settings (and ``extra``); asserts it exited 0."""
    cmd = [sys.executable, "-m", "secgan", "demo", "--out", str(out), *TINY_DEMO, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Open {out / 'index.html'}" in proc.stdout
    for k in range(1, 9):  # every stage printed
        assert f"[{k}/8]" in proc.stdout
    assert proc.stdout.count("epsilon spent") == len(SITES)
    return proc


def check_privacy_and_audits(out: Path, *, target: float = TINY_EPSILON) -> str:
    """Every site trained with DP-SGD and spent some but not more than its target (its own ledger);
    each site's audit report verifies against its key; returns the page's text."""
    run = json.loads((out / "kits" / "coordinator" / "state" / "run.json").read_text())
    assert run["status"] == "completed" and run["steps_done"] >= 1
    assert sorted(run["sites"]) == list(SITES)
    for site, info in run["sites"].items():
        # the coordinator holds only the coarse budget left; the exact epsilon is in the site's ledger
        assert info["mode"] == "dpsgd" and 0.0 <= info["budget_left"] <= 1.0 and "epsilon" not in info
        ledger = json.loads((out / "kits" / site / "state" / "ledger.json").read_text())
        assert 0 < ledger["epsilon"] <= target
    page = (out / "index.html").read_text()
    for site in SITES:
        report = out / "audits" / site / "report.json"
        assert f"audits/{site}/report.html" in page
        assert json.loads(report.read_text())["verdict"] in page
        check = subprocess.run(
            [sys.executable, "-m", "secgan", "audit", "verify", str(report),
             "--public-key", str(out / "kits" / site / "signing.pub")],
            capture_output=True, text=True, timeout=120, env=child_env(),
        )
        assert check.returncode == 0, check.stdout + check.stderr
    summary = json.loads((out / "audits" / "summary.json").read_text())
    assert "audits/summary.html" in page and summary["verdict"] in ("Green", "Amber", "Inconclusive", "Red", "Critical")
    assert (out / "logs" / "demo.log").stat().st_size > 0  # the demo's own logs went to a file
    return page


def kit_tomls(out: Path) -> dict[str, dict]:
    """Every party's config as written by the demo's provisioning."""
    files = {"coordinator": out / "kits" / "coordinator" / "coordinator.toml"}
    files.update({s: out / "kits" / s / "site.toml" for s in SITES})
    return {name: tomllib.loads(path.read_text()) for name, path in files.items()}


def site_events(out: Path, site: str, event: str) -> list[dict]:
    """The structured log lines ``event`` of one site process."""
    rows = []
    for line in (out / "logs" / f"{site}.log").read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("event") == event:
            rows.append(obj)
    return rows

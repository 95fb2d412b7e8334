"""``secgan demo --domain nuclei|derm`` end to end at a tiny size: the real command, the coordinator and
three ``secgan site`` processes over CURVE on 127.0.0.1 with DP-SGD, each site reading its domain's
folder layout (tiles with instance masks; an ISIC-style folder with a label CSV) through the site's
own loading path with the RGB image spec checked against the Welcome, a signed audit at every site,
the downstream score, the page.

The derm run is also the CURVE integration test of a 3-channel class spec through ``secgan site``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.integration.demo_helpers import SITES, TINY_EPSILON, check_privacy_and_audits, kit_tomls, run_demo, site_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# domain -> (the layout its sites read, the spec's condition kind and channels, the score keys)
DOMAINS = {
    "nuclei": ("tiles", "instances", 3, ("dice", "f1", "aji")),
    "derm": ("isic", "class", 7, ("balanced_accuracy", "macro_auc")),
}


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_domain_demo_runs_end_to_end(tmp_path: Path, domain: str) -> None:
    layout, condition, cond_channels, metrics = DOMAINS[domain]
    out = tmp_path / "demo"
    proc = run_demo(out, "--domain", domain, "--size", "16")
    page = check_privacy_and_audits(out)

    # every party carries the domain's RGB spec; each site read its own folder in the domain's layout
    for name, toml in kit_tomls(out).items():
        image = toml["image"]
        assert (image["size"], image["image_channels"], image["condition"], image["cond_channels"]) == \
            (16, 3, condition, cond_channels), name
        assert image["value_range"] == [0.0, 1.0]
    for site in SITES:
        loaded = site_events(out, site, "site_loaded")
        assert loaded and loaded[0]["layout"] == layout and loaded[0]["patient_count"] >= 4
        assert site_events(out, site, "welcomed")  # the Welcome's spec matched the site's
    run = json.loads((out / "kits" / "coordinator" / "state" / "run.json").read_text())
    assert run["steps_done"] == 3

    # the downstream score: every source, every metric present and finite, in [0, 1]
    utility = json.loads((out / "utility" / "results.json").read_text())
    assert [r["source"] for r in utility] == ["real-all", "real-subset-1", "synthetic", "public-only"]
    for row in utility:
        for key in metrics[:1] + tuple(k for k in metrics[1:] if row[k] is not None):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0, (row["source"], key)
    head = metrics[0]
    assert all(math.isfinite(r[head]) for r in utility)
    if condition == "class":
        assert all(len(r["per_class_recall"]) == cond_channels for r in utility)
    label = {"dice": "Dice", "balanced_accuracy": "balanced accuracy"}[head]
    by = {r["source"]: r[head] for r in utility}
    assert f"synthetic {label} at epsilon {TINY_EPSILON:g}: {by['synthetic']:.3f}" in proc.stdout
    assert f"secgan demo: {domain}" in page and label in page
    assert (out / "real_vs_synthetic.png").stat().st_size > 0
    # the public pretraining every party started from saw the domain's public cohort
    pre = json.loads((out / "pretrained" / "pretrain.json").read_text())
    assert pre["steps"] == 2 and pre["image"]["condition"] == condition

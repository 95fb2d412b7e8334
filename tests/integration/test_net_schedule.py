"""D/G balance over the network: a DP-SGD site process with gradient_only_rounds = 1 and n_D = 2
serves every round of a real CURVE run, and its ledger ends with exactly ceil(R / 2) * n_D charged
steps; every round, charged or not, is in its release log, and `secgan ledger verify` agrees."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from secgan.privacy.release_log import verify_chain
from tests.integration.net_helpers import REPO, child_env, coordinator_proc, free_port, make_kit, site_proc, update_toml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS, D_STEPS = 5, 2


def test_gradient_only_rounds_are_free_and_logged_in_a_real_run(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=2, port=port,
                   coordinator={"min_sites": 2, "train": {"steps": ROUNDS}})
    update_toml(kit["site-1"], {"policy": {"mode": "dpsgd", "allow_off": False, "target_epsilon": 50.0, "delta": 1e-5,
                                           "noise_multiplier": 1.0, "planned_steps": ROUNDS, "expected_batch_size": 2,
                                           "gradient_only_rounds": 1, "d_steps": D_STEPS}})
    coord = coordinator_proc(kit, tmp_path / "logs" / "coordinator.log", "--log-json")
    sites = [site_proc(kit, f"site-{k}", tmp_path / "logs" / f"site-{k}.log", "--log-json") for k in (1, 2)]
    try:
        assert coord.wait(timeout=180) == 0, coord.tail()
        for s in sites:
            assert s.wait(timeout=30) == 0, s.tail()
    finally:
        for p in [coord, *sites]:
            p.close()
    run = json.loads((tmp_path / "kit" / "coordinator" / "state" / "run.json").read_text())
    assert run["status"] == "completed" and run["steps_done"] == ROUNDS
    assert run["sites"]["site-1"]["steps_served"] == ROUNDS
    state = tmp_path / "kit" / "site-1" / "state"
    ledger = json.loads((state / "ledger.json").read_text())
    assert ledger["steps"] == math.ceil(ROUNDS / 2) * D_STEPS == 6 and ledger["releases"] == ROUNDS
    chain = verify_chain(state / "releases.jsonl")
    assert chain.ok and chain.charged == [2, 0, 2, 0, 2]
    releases = sites[0].events("site_release")
    assert [e["charged_steps"] for e in releases] == [2, 0, 2, 0, 2]
    verified = subprocess.run([sys.executable, "-m", "secgan", "ledger", "verify", "--site-dir", str(state), "--json"],
                              cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stderr
    out = json.loads(verified.stdout)
    assert out["ok"] and out["steps"] == out["ledger_steps"] == 6 and out["releases"] == ROUNDS

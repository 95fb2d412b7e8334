"""A DP-SGD site over the network runs out of budget: its final Refusal removes it, and with fewer
than min_sites able to serve the coordinator stops cleanly (Stop to everyone, checkpoint, run.json)."""

from __future__ import annotations

import json

import pytest

from tests.integration.net_helpers import coordinator_proc, free_port, make_kit, site_proc, update_toml

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_budget_exhaustion_removes_site_and_stops_below_quorum(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=2, port=port,
                   coordinator={"min_sites": 2, "train": {"steps": 50}})
    # site-1: DP-SGD, calibrated so that the budget covers exactly 3 releases
    update_toml(kit["site-1"], {"policy": {"mode": "dpsgd", "allow_off": False, "target_epsilon": 3.0,
                                           "delta": 1e-5, "planned_steps": 3, "expected_batch_size": 2}})
    coord = coordinator_proc(kit, tmp_path / "logs" / "coordinator.log")
    sites = [site_proc(kit, f"site-{k}", tmp_path / "logs" / f"site-{k}.log") for k in (1, 2)]
    try:
        assert coord.wait(timeout=150) == 3, coord.tail()  # 3: stopped for lack of a quorum
        for s in sites:
            assert s.wait(timeout=30) == 0, s.tail()
            assert "stop_received reason=quorum_impossible" in s.text()
    finally:
        for p in [coord, *sites]:
            p.close()
    run = json.loads((tmp_path / "kit" / "coordinator" / "state" / "run.json").read_text())
    assert run["status"] == "stopped" and run["stop_reason"] == "quorum_impossible"
    s1 = run["sites"]["site-1"]
    assert s1["state"] == "removed" and s1["stop_reason"] == "budget_exhausted"
    assert s1["refusals"] == {"budget_exhausted": 1} and s1["mode"] == "dpsgd"
    assert s1["steps_served"] == 3 == run["steps_done"]
    # the coordinator learns only a coarse budget left (tenths, rounded down), never the exact epsilon
    assert s1["budget_left"] in (0.0, 0.1) and "epsilon" not in s1
    assert run["sites"]["site-2"]["budget_left"] is None
    exact = json.loads((tmp_path / "kit" / "site-1" / "state" / "ledger.json").read_text())["epsilon"]
    assert 0 < exact <= 3.0
    seen = (tmp_path / "kit" / "coordinator" / "state" / "run.json").read_text() + coord.text()
    assert f"{exact:.4f}" not in seen and repr(exact) not in seen
    # the run's 50 steps against the 3 its noise was calibrated for: visible at the site, with both numbers
    assert "steps_mismatch" in sites[0].text() and "run_steps=50 planned_steps=3" in sites[0].text()
    assert run["sites"]["site-2"]["stop_reason"] == "quorum_impossible"
    assert any(e["event"] == "site_removed" and e["site"] == "site-1" for e in run["quorum_events"])
    assert (tmp_path / "kit" / "coordinator" / "state" / "checkpoint.safetensors").is_file()

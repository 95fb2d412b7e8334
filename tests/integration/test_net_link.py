"""The site's view of its link to the coordinator, with real processes over CURVE on 127.0.0.1:

- no coordinator (or the wrong port): the site warns ``no_answer`` naming the endpoint, again and
  again, and is welcomed once the coordinator comes up;
- a coordinator that goes silent (SIGSTOP) or a link that libzmq dropped for good (a frame above
  the site's MAXMSGSIZE): the site warns ``dead_link``, reopens its DEALER and says Hello again;
- a run whose steps differ from the site's plan, under ``on_steps_mismatch = "refuse"``: a final
  Refusal before anything is charged, and the site exits with code 2.

Logs are read as JSON (``--log-json``), one object a line."""

from __future__ import annotations

import json
import signal

import pytest

from tests.integration.net_helpers import coordinator_proc, free_port, make_kit, site_proc, update_toml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST_LINK = {"heartbeat_interval_s": 0.5, "dead_link_heartbeats": 4, "no_answer_warn_s": 1.0}


def test_site_without_coordinator_warns_and_joins_when_it_comes_up(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=1, port=port, coordinator={"min_sites": 1})
    update_toml(kit["site-1"], FAST_LINK)
    endpoint = f"tcp://127.0.0.1:{port}"
    site = site_proc(kit, "site-1", tmp_path / "logs" / "site-1.log", "--log-json")
    coord = None
    try:
        site.wait_event("no_answer", timeout=90, count=3, endpoint=endpoint)
        warned = site.events("no_answer", endpoint=endpoint)
        assert all(e["level"] == "warning" and e["seconds"] >= 1.0 and not e["welcomed"] for e in warned)
        assert endpoint in warned[0]["hint"]
        assert warned[-1]["seconds"] > warned[0]["seconds"]  # repeated while the silence lasts
        coord = coordinator_proc(kit, tmp_path / "logs" / "coordinator.log")
        site.wait_event("welcomed", timeout=90)
        assert site.wait(timeout=120) == 0  # the tiny run completes and Stop ends the site
        assert coord.wait(timeout=30) == 0
    finally:
        for p in (site, coord):
            if p is not None:
                p.close()


def test_silent_coordinator_is_detected_and_the_site_rejoins(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=1, port=port,
                   coordinator={"min_sites": 1, "heartbeat_timeout_s": 4.0, "round_deadline_s": 5.0,
                                "train": {"steps": 100000}})
    update_toml(kit["site-1"], FAST_LINK)
    coord = coordinator_proc(kit, tmp_path / "logs" / "coordinator.log")
    site = site_proc(kit, "site-1", tmp_path / "logs" / "site-1.log", "--log-json")
    stopped = False
    try:
        site.wait_event("batch_served", timeout=120)
        before = len(site.events("dead_link"))  # (the site may have started well before the coordinator)
        site.wait_event("batch_served", timeout=90, count=40)  # seconds of a working link (~10 steps a second)
        assert len(site.events("dead_link")) == before  # a working link is never declared dead
        coord.p.send_signal(signal.SIGSTOP)
        stopped = True
        site.wait_event("dead_link", timeout=30, count=2)
        dead = site.events("dead_link")
        assert dead[0]["level"] == "warning" and dead[0]["action"] == "reconnect" and dead[0]["seconds"] >= 2.0
        served = len(site.events("batch_served"))
        coord.p.send_signal(signal.SIGCONT)
        stopped = False
        site.wait_event("welcomed", timeout=60, count=2)  # Hello again on the reopened DEALER
        site.wait_event("batch_served", timeout=60, count=served + 3)
        assert site.p.poll() is None and coord.p.poll() is None
    finally:
        if stopped:
            coord.p.send_signal(signal.SIGCONT)
        coord.close()
        site.close()


def test_a_link_dropped_by_libzmq_is_reopened(tmp_path, phantom_root):
    # the site's MAXMSGSIZE is far below the batch's tensor frames: libzmq drops the connection on
    # the first batch and never reconnects it by itself
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=1, port=port,
                   coordinator={"min_sites": 1, "round_deadline_s": 3.0})
    update_toml(kit["site-1"], {**FAST_LINK, "no_answer_warn_s": 600.0,
                                "wire": {"max_header_bytes": 4096, "max_tensor_bytes": 4096, "max_total_bytes": 65536}})
    coord = coordinator_proc(kit, tmp_path / "logs" / "coordinator.log")
    site = site_proc(kit, "site-1", tmp_path / "logs" / "site-1.log", "--log-json")
    try:
        site.wait_event("welcomed", timeout=120)
        site.wait_event("dead_link", timeout=60, count=2)
        assert len(site.events("welcomed")) >= 2  # each reopened DEALER said Hello and was welcomed again
        assert coord.count(r"site_welcomed site=site-1 ") >= 2
        assert site.p.poll() is None
    finally:
        coord.close()
        site.close()


def test_a_site_refuses_a_run_it_did_not_plan(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=1, port=port,
                   coordinator={"min_sites": 1, "train": {"steps": 30}})
    update_toml(kit["site-1"], {"policy": {"mode": "dpsgd", "allow_off": False, "target_epsilon": 10.0,
                                           "delta": 1e-5, "planned_steps": 200, "expected_batch_size": 2,
                                           "on_steps_mismatch": "refuse"}})
    coord = coordinator_proc(kit, tmp_path / "logs" / "coordinator.log")
    site = site_proc(kit, "site-1", tmp_path / "logs" / "site-1.log", "--log-json")
    try:
        assert site.wait(timeout=150) == 2, site.tail()
        assert coord.wait(timeout=60) == 3, coord.tail()  # the only site left: no quorum
    finally:
        coord.close()
        site.close()
    [ev] = site.events("steps_mismatch")
    assert ev["level"] == "error" and ev["action"] == "refuse"
    assert ev["run_steps"] == 30 and ev["planned_steps"] == 200 and 0 < ev["epsilon_run"] < 10.0
    ledger = json.loads((tmp_path / "kit" / "site-1" / "state" / "ledger.json").read_text())
    assert ledger["releases"] == 0  # nothing charged
    run = json.loads((tmp_path / "kit" / "coordinator" / "state" / "run.json").read_text())
    s1 = run["sites"]["site-1"]
    assert s1["state"] == "removed" and s1["stop_reason"] == "steps_mismatch" and s1["steps_served"] == 0

"""Crash recovery with real processes: kill -9 a site mid-run, then kill -9 the coordinator.

- the run goes on with the two remaining sites (quorum 2), the killed site restarts from its
  state_dir and is readmitted;
- the coordinator restarts with ``--resume``: the step counter continues from the last checkpoint
  (at most ``checkpoint_every`` steps are lost), the run id stays, and the sites reconnect and
  rejoin by themselves (their DEALER reconnects; the new coordinator answers their heartbeat with
  ``not_welcomed`` and they say Hello again). The run then completes and every process exits 0.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.integration.net_helpers import coordinator_proc, free_port, make_kit, site_proc, update_toml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHECKPOINT_EVERY = 2


def test_site_and_coordinator_crashes(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=3, port=port,
                   coordinator={"min_sites": 2, "round_deadline_s": 3.0, "heartbeat_timeout_s": 4.0,
                                "train": {"steps": 100000, "checkpoint_every": CHECKPOINT_EVERY,
                                          "g_average": 0.9}})
    logs = tmp_path / "logs"
    coord = coordinator_proc(kit, logs / "coordinator-1.log", "--log-json")
    sites = {k: site_proc(kit, f"site-{k}", logs / f"site-{k}.log", "--log-json") for k in (1, 2, 3)}
    procs = [coord, *sites.values()]
    try:
        run_id = coord.wait_event("coordinator_listening", timeout=90)["run_id"]
        coord.wait_event("step_done", timeout=120, count=2, answered=3)

        # kill -9 a site: detected, dropped from rounds, the others go on
        sites[3].kill9()
        coord.wait_event(None, timeout=30, site="site-3", where=lambda e: e["event"] in ("site_dead", "send_failed"))
        done = len(coord.events("step_done", answered=2))
        coord.wait_event("step_done", timeout=60, count=done + 3, answered=2)

        # it restarts from its state_dir and is readmitted
        sites[3] = site_proc(kit, "site-3", logs / "site-3-restarted.log", "--log-json")
        procs.append(sites[3])
        coord.wait_event("site_welcomed", timeout=90, count=2, site="site-3")
        sites[3].wait_event("batch_served", timeout=60)
        coord.wait_event("step_done", timeout=60, count=len(coord.events("step_done", answered=3)) + 1, answered=3)

        # kill -9 the coordinator
        coord.kill9()
        last = max(e["step"] for e in coord.events("step_done"))
        steps_done = last + 1
        update_toml(kit["coordinator"], {"train": {"steps": steps_done + 4}})
        coord = coordinator_proc(kit, logs / "coordinator-2.log", "--log-json", "--resume")
        procs.append(coord)
        resumed = coord.wait_event("resumed", timeout=90)["step"]
        assert steps_done - CHECKPOINT_EVERY <= resumed <= steps_done
        assert coord.wait_event("coordinator_listening", timeout=30)["run_id"] == run_id

        assert coord.wait(timeout=120) == 0, coord.tail()
        for k, s in sites.items():
            assert s.wait(timeout=30) == 0, s.tail()
            assert s.events("stop_received", reason="completed"), k
            # how it noticed the new coordinator: its heartbeat answered not_welcomed, or (the
            # coordinator took longer to come back than the site's dead-link limit) its own silence check
            assert s.events("coordinator_error", code="not_welcomed") or s.events("dead_link"), k
    finally:
        for p in procs:
            p.close()

    run = json.loads((tmp_path / "kit" / "coordinator" / "state" / "run.json").read_text())
    assert run["run_id"] == run_id and run["status"] == "completed"
    assert run["incarnation"] == 2 and run["steps_done"] == steps_done + 4
    # rejoining cost no round: no retry, no replay refusal of the resumed round numbers
    assert not [e for e in run["quorum_events"] if e["event"] == "retry"], run["quorum_events"]
    for k in (1, 2, 3):
        assert run["sites"][f"site-{k}"]["steps_served"] >= 1  # everyone rejoined the resumed run
    # the moving average of G was checkpointed, carried over the restart, and is what gets sampled
    from secgan.gan.checkpoint import load_checkpoint

    ck = load_checkpoint(tmp_path / "kit" / "coordinator" / "state")
    assert ck.average_state is not None and ck.step == steps_done + 4
    assert any(not torch.equal(ck.average_state[k], ck.generator_state[k]) for k in ck.generator_state)

"""A site that misses the final Stop still learns that the run ended, with real processes over CURVE.

Four sites: site-1 a plain ``secgan site`` process that serves every step; site-2 a ``secgan
site`` process and site-3, site-4 two nodes of one ``secgan site-host`` process, all three with
DP-SGD. After the first step that all four served, site-2 and the host are paused (SIGSTOP). The
coordinator's ZMTP heartbeat drops their connections, the next batch for them is unroutable and
they are marked dead, so the Stop at the end of the run goes to site-1 alone (quorum 1 lets it
finish). Then they are resumed (SIGCONT): each says Hello again on a reopened DEALER, the
lingering coordinator answers with the final Stop, each acknowledges and exits 0, and the
coordinator closes as soon as the last acknowledgement came (long before its linger ends).
Every DP ledger is exact: it verifies against its release log, counts exactly the steps its
process served, its epsilon is Opacus's RDP accountant over the same history, and it holds no
release beyond the batches the coordinator sent during the run (the linger sends none).

Before the coordinator lingered, it closed right after the run: the resumed sites reconnected for
ever and never exited."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.integration.net_helpers import (
    TINY_TRAIN,
    coordinator_proc,
    free_port,
    make_kit,
    site_host_proc,
    site_proc,
    update_toml,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 8
TRAIN = {**TINY_TRAIN, "steps": STEPS, "checkpoint_every": 100}
LINGER_S = 90.0  # far above the test's waits: the coordinator must close on the acknowledgements
DP = {"mode": "dpsgd", "allow_off": False, "target_epsilon": 10.0, "delta": 1e-5, "planned_steps": STEPS,
      "expected_batch_size": 2}
LINK = {"heartbeat_interval_s": 0.5, "dead_link_heartbeats": 4, "no_answer_warn_s": 1.0}


def _exact_ledger(state, *, served_by_process: int, sent_by_coordinator: int) -> None:
    from opacus.accountants import RDPAccountant

    from secgan.privacy.ledger import PrivacyLedger
    from secgan.privacy.release_log import verify_release_log

    res = verify_release_log(state)
    assert res.ok, res.problems
    ledger = PrivacyLedger.read(state)
    assert ledger.mode == "dpsgd" and ledger.releases == res.releases == served_by_process > 0
    assert ledger.releases <= sent_by_coordinator  # nothing charged that the run did not send
    independent = RDPAccountant()
    for sigma, q, k in ledger.history:
        for _ in range(int(k)):
            independent.step(noise_multiplier=float(sigma), sample_rate=float(q))
    assert sum(int(k) for _s, _q, k in ledger.history) == ledger.releases
    assert ledger.epsilon == pytest.approx(independent.get_epsilon(delta=ledger.delta), rel=1e-9)


def test_sites_paused_through_the_end_of_the_run_get_the_final_stop_and_exit(tmp_path, phantom_root):
    data = tmp_path / "data"
    data.mkdir()
    for k in range(1, 5):  # the phantom has three sites: the fourth reads site-1's folder (its own state)
        os.symlink(phantom_root / f"site-{(k - 1) % 3 + 1}", data / f"site-{k}")
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=data, sites=4, port=port,
                   coordinator={"min_sites": 1, "round_deadline_s": 2.0, "startup_grace_s": 120.0,
                                "stop_linger_s": LINGER_S, "train": TRAIN,
                                "tuning": {"heartbeat_ivl_ms": 500, "heartbeat_timeout_ms": 1500}},
                   site={**LINK, "train": TRAIN, "policy": DP})
    update_toml(kit["site-1"], {"policy": {"mode": "off", "allow_off": True}})
    logs = tmp_path / "logs"
    coord = coordinator_proc(kit, logs / "coordinator.log", "--log-json")
    site1 = site_proc(kit, "site-1", logs / "site-1.log", "--log-json")
    site2 = site_proc(kit, "site-2", logs / "site-2.log", "--log-json")
    host = site_host_proc(kit, ["site-3", "site-4"], logs / "host.log", "--log-json")
    paused = []
    try:
        coord.wait_event("step_done", timeout=240, where=lambda e: e["answered"] == 4)
        for p in (site2, host):
            p.stop()
            paused.append(p)
        coord.wait_event("run_finished", timeout=180, status="completed")
        for p in paused:
            p.p.send_signal(signal.SIGCONT)
        paused.clear()
        assert site2.wait(timeout=90) == 0, site2.tail()
        assert host.wait(timeout=90) == 0, host.tail()
        assert coord.wait(timeout=60) == 0, coord.tail()
        assert site1.wait(timeout=30) == 0, site1.tail()
    finally:
        for p in paused:
            p.p.send_signal(signal.SIGCONT)
        for p in (coord, site1, site2, host):
            p.close()
    run = json.loads((tmp_path / "kit" / "coordinator" / "state" / "run.json").read_text())
    assert run["status"] == "completed" and run["steps_done"] == STEPS
    for name in ("site-2", "site-3", "site-4"):  # the case made: dead (not told) when the run ended
        assert run["sites"][name]["deaths"] >= 1, (name, run["sites"][name])
    final = run["final_stop"]
    assert final["owed"] == 4 and final["acknowledged"] == 4 and final["unacknowledged"] == []
    assert final["lingered_s"] < LINGER_S and final["answered_with_stop"] >= 3
    assert len(site2.events("stop_received", reason="completed")) == 1
    assert len(host.events("stop_received", reason="completed")) == 2
    for name in ("site-2", "site-3", "site-4"):
        state = tmp_path / "kit" / name / "state"
        status = json.loads((state / "site.json").read_text())
        assert status["exit_reason"] == "stop:completed", (name, status)
        rec = run["sites"][name]
        _exact_ledger(state, served_by_process=status["counts"].get("served", 0),
                      sent_by_coordinator=rec["steps_served"] + rec["gradients_late"] + rec["gradients_dropped"])

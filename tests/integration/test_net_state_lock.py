"""Two real site processes on one state folder: the second start is refused, naming the holder's pid,
and the first keeps serving; the ledger, the release log and site.json agree afterwards."""

from __future__ import annotations

import json

import pytest

from tests.integration.net_helpers import coordinator_proc, free_port, make_kit, site_proc

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_second_site_process_on_the_same_state_is_refused(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=2, port=port,
                   coordinator={"min_sites": 2, "train": {"steps": 100000}})
    logs = tmp_path / "logs"
    coord = coordinator_proc(kit, logs / "coordinator.log")
    first = site_proc(kit, "site-1", logs / "site-1.log")
    other = site_proc(kit, "site-2", logs / "site-2.log")
    procs = [coord, first, other]
    try:
        coord.wait_for(r"step_done step=\d+ answered=2", timeout=150, count=2)
        second = site_proc(kit, "site-1", logs / "site-1-second.log")  # same site.toml, same state folder
        procs.append(second)
        rc = second.wait(timeout=120)
        assert rc != 0, second.tail()
        assert f"in use by another process (pid {first.p.pid})" in second.text(), second.tail()
        assert first.p.poll() is None  # the holder is untouched ...
        served = first.count(r"batch_served")
        done = coord.count(r"step_done step=\d+ answered=2")
        coord.wait_for(r"step_done step=\d+ answered=2", timeout=90, count=done + 3)  # ... and keeps serving
        first.wait_for(r"batch_served", timeout=60, count=served + 3)
        assert coord.count(r"site_welcomed site=site-1 ") == 1  # the second never reached the coordinator
        assert "quorum_lost" not in coord.text()
        for p in (first, other):
            p.terminate()
        assert first.wait(timeout=60) == 0, first.tail()
        assert other.wait(timeout=60) == 0, other.tail()
    finally:
        for p in procs:
            p.close()

    from secgan.privacy.ledger import PrivacyLedger
    from secgan.privacy.release_log import verify_release_log

    state = tmp_path / "kit" / "site-1" / "state"
    res = verify_release_log(state)
    assert res.ok, res.problems
    ledger = PrivacyLedger.read(state)
    assert ledger.releases >= res.releases >= served + 3
    status = json.loads((state / "site.json").read_text())
    assert (status["releases"], status["epsilon"]) == (ledger.releases, ledger.epsilon)

"""The waiting helpers the network tests rely on: structured events read from a child's log, a
wait that fails at once when the child exits without the event, and SIGSTOP that returns only once
the child is stopped."""

from __future__ import annotations

import signal
import time

import pytest

from tests.integration.net_helpers import Proc, json_events

pytestmark = pytest.mark.integration

EMIT = """
import json, sys, time
print("a plain line, then a torn one: {", flush=True)
for r in range(3):
    print(json.dumps({"event": "batch_held", "round": r, "site": "site-1"}), flush=True)
print(json.dumps({"event": "done"}), flush=True)
time.sleep(float(sys.argv[1]))  # stand-in for a long-running service
"""


def test_events_are_read_and_matched_by_field(tmp_path):
    p = Proc(["-c", EMIT, "60"], tmp_path / "emit.log")
    try:
        assert p.wait_event("batch_held", timeout=30, count=2)["round"] == 1
        p.wait_event("done", timeout=30)
        assert [e["round"] for e in p.events("batch_held", site="site-1")] == [0, 1, 2]
        assert p.events("batch_held", site="site-2") == []
        assert [e["round"] for e in p.events("batch_held", where=lambda e: e["round"] > 0)] == [1, 2]
        assert [e["event"] for e in json_events(p.text())] == ["batch_held"] * 3 + ["done"]
        with pytest.raises(AssertionError, match="timed out"):
            p.wait_event("batch_held", timeout=0.5, count=4)
        p.stop()
        state = open(f"/proc/{p.p.pid}/stat").read().rsplit(")", 1)[1].split()[0]
        assert state in ("T", "t")
        p.p.send_signal(signal.SIGCONT)
    finally:
        p.close()


def test_a_wait_ends_when_the_process_exits_without_the_event(tmp_path):
    p = Proc(["-c", EMIT, "0"], tmp_path / "emit.log")
    try:
        t0 = time.monotonic()
        with pytest.raises(AssertionError, match=r"process exited \(0\)"):
            p.wait_event("never_logged", timeout=60)
        assert time.monotonic() - t0 < 30  # not the whole timeout
        assert p.wait_event("done", timeout=1)  # lines written before the exit still count
    finally:
        p.close()

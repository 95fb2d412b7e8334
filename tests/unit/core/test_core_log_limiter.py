"""secgan.core.logs.LogLimiter: bounded warning lines with counts, on an injected clock (no sleeps)."""

from __future__ import annotations

import io
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secgan.core.logs import LogLimiter, get_logger, setup_logging


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    """Stands in for a StructuredLogger: records (event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def warning(self, event: str, **fields) -> None:
        self.lines.append((event, fields))


def test_first_lines_then_one_summary_per_window():
    clock, rec = Clock(), Recorder()
    lim = LogLimiter(burst=3, window_s=10.0, clock=clock)
    for _ in range(100):
        lim.warning(rec, "inbound_rejected", site="site-1", code="bad_json", bytes=17)
    assert len(rec.lines) == 3 and all(f == {"site": "site-1", "code": "bad_json", "bytes": 17} for _, f in rec.lines)
    assert lim.suppressed_total == 97
    clock.t += 9.9
    lim.summarize(rec)
    assert len(rec.lines) == 3  # the window has not ended
    clock.t += 0.1
    lim.summarize(rec)
    assert rec.lines[-1] == ("inbound_rejected", {"site": "site-1", "code": "bad_json", "suppressed": 97})
    lim.summarize(rec)
    assert len(rec.lines) == 4  # reported once
    lim.warning(rec, "inbound_rejected", site="site-1", code="bad_json", bytes=1)  # a new window: logged again
    assert rec.lines[-1][1]["bytes"] == 1


def test_keys_are_independent_and_bytes_is_not_part_of_the_key():
    clock, rec = Clock(), Recorder()
    lim = LogLimiter(burst=1, window_s=5.0, clock=clock)
    for site in ("site-1", "site-2"):
        for code in ("bad_json", "replay"):
            for n in range(5):
                lim.warning(rec, "inbound_rejected", site=site, code=code, bytes=n)
    assert len(rec.lines) == 4  # the first of each (site, code)
    assert {(f["site"], f["code"]) for _, f in rec.lines} == {(s, c) for s in ("site-1", "site-2")
                                                            for c in ("bad_json", "replay")}
    clock.t += 5
    lim.warning(rec, "handshake_rejected", reason="auth")  # any call writes the due summaries first
    summaries = [f for e, f in rec.lines if "suppressed" in f]
    assert len(summaries) == 4 and all(f["suppressed"] == 4 for f in summaries)
    assert rec.lines[-1] == ("handshake_rejected", {"reason": "auth"})


def test_explicit_key_fields():
    clock, rec = Clock(), Recorder()
    lim = LogLimiter(burst=2, window_s=5.0, clock=clock)
    for port in range(50):
        lim.warning(rec, "zap_denied", key_fields=("reason",), reason="unknown_key", address=f"10.0.0.1:{port}")
    assert len(rec.lines) == 2
    clock.t += 5
    lim.summarize(rec)
    assert rec.lines[-1] == ("zap_denied", {"reason": "unknown_key", "suppressed": 48})


def test_bad_parameters():
    for kw in ({"burst": 0}, {"window_s": 0}, {"max_keys": 0}):
        with pytest.raises(ValueError):
            LogLimiter(**kw)


def test_many_keys_stay_bounded():
    clock, rec = Clock(), Recorder()
    lim = LogLimiter(burst=1, window_s=60.0, clock=clock, max_keys=8)
    for i in range(1000):
        lim.warning(rec, "inbound_rejected", site=f"s{i}", code="x")
    assert len(lim._windows) <= 8


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 3)), max_size=300),
       st.integers(1, 5), st.floats(0.5, 5))
def test_every_event_is_logged_or_counted_exactly_once(events, burst, window):
    """Accounting: logged lines + suppressed counts in summaries == events (after a final flush),
    and within any one window no key gets more than ``burst`` lines."""
    clock, rec = Clock(), Recorder()
    lim = LogLimiter(burst=burst, window_s=window, clock=clock)
    for code, dt in events:
        clock.t += dt
        lim.warning(rec, "ev", code=code)
    clock.t += window + 1  # (+1: float rounding of t + window - t)
    lim.summarize(rec)
    logged = sum(1 for _, f in rec.lines if "suppressed" not in f)
    counted = sum(f["suppressed"] for _, f in rec.lines if "suppressed" in f)
    assert logged + counted == len(events)
    assert counted == lim.suppressed_total
    assert logged <= len(events)


def test_through_a_real_logger():
    stream = io.StringIO()
    setup_logging("INFO", stream=stream)
    try:
        clock = Clock()
        lim = LogLimiter(burst=2, window_s=1.0, clock=clock)
        log = get_logger("secgan.test")
        for _ in range(5000):
            lim.warning(log, "inbound_rejected", site="site-1", code="bad_json", bytes=10)
        clock.t += 1
        lim.summarize(log)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 3
        assert lines[-1].endswith("inbound_rejected site=site-1 code=bad_json suppressed=4998")
    finally:
        logging.getLogger().handlers[:] = []

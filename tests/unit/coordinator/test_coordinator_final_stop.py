"""The linger after the run (coordinator.final_stop): who is owed the final Stop, when the coordinator
may close, and how a real Coordinator answers sites once its run has ended (no sockets: the router
stand-in of test_coordinator_inbound records what it sends)."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from secgan.core.errors import ProtocolError
from secgan.net.schema import ErrorReply, FakeBatch, GradientReply, Heartbeat, Hello, Stop, StopAck, Welcome

from coordinator.final_stop import OWED_STATES, FinalStop
from coordinator.registry import DEAD, EXCLUDED, KNOWN, REMOVED, WELCOMED, Registry
from coordinator.service import Coordinator
from coordinator.stages import check_stage
from tests.unit.coordinator.test_coordinator_inbound import Router, Site, make_coordinator

STATES = (KNOWN, WELCOMED, DEAD, EXCLUDED, REMOVED)


def _registry(states: dict[str, str]) -> Registry:
    reg = Registry(sorted(states))
    for site, state in states.items():
        reg[site].state = state
    return reg


# --- the policy ----------------------------------------------------------------------------------

def test_the_sites_that_joined_are_owed_the_stop_the_others_are_not_waited_for():
    reg = _registry({"a": WELCOMED, "b": DEAD, "c": REMOVED, "d": KNOWN, "e": EXCLUDED})
    final = FinalStop.for_registry(reg, reason="completed", now=100.0, linger_s=30.0)
    assert final.owed == {"a", "b", "c"} and final.pending() == ["a", "b", "c"]
    assert not final.may_close(100.0) and not final.may_close(129.9)
    final.on_ack("d")  # a site that never joined may acknowledge; nobody waited for it
    final.on_ack("a")
    final.on_ack("b")
    assert final.pending() == ["c"] and not final.may_close(110.0)
    final.on_ack("c")
    assert final.pending() == [] and final.may_close(110.0)


def test_the_linger_is_bounded_and_zero_closes_at_once():
    reg = _registry({"a": WELCOMED, "b": DEAD})
    final = FinalStop.for_registry(reg, reason="quorum_lost", now=5.0, linger_s=2.0)
    assert not final.may_close(6.9) and final.may_close(7.0)  # b never answers: closed at the deadline
    final.close(7.0)
    summary = final.summary()
    assert summary == {"reason": "quorum_lost", "linger_s": 2.0, "lingered_s": 2.0, "owed": 2, "told": 0,
                       "acknowledged": 0, "unacknowledged": ["a", "b"], "answered_with_stop": 0}
    assert FinalStop.for_registry(reg, reason="completed", now=5.0, linger_s=0.0).may_close(5.0)


@given(states=st.dictionaries(st.sampled_from([f"site-{k}" for k in range(8)]), st.sampled_from(STATES), max_size=8),
       acked=st.sets(st.sampled_from([f"site-{k}" for k in range(8)])), before=st.floats(0.0, 9.99))
def test_before_the_deadline_it_closes_exactly_when_every_owed_site_acknowledged(states, acked, before):
    final = FinalStop.for_registry(_registry(states), reason="completed", now=0.0, linger_s=10.0)
    for site in acked:
        final.on_ack(site)
    owed = {s for s, state in states.items() if state in OWED_STATES}
    assert final.may_close(before) == owed.issubset(acked)
    assert final.may_close(10.0)
    assert final.pending() == sorted(owed - acked)


# --- the protocol stage --------------------------------------------------------------------------

@pytest.mark.parametrize("state", [KNOWN, WELCOMED, DEAD, EXCLUDED])
def test_a_stop_ack_during_the_run_is_refused_except_from_a_removed_site(state):
    with pytest.raises(ProtocolError) as err:
        check_stage(state=state, msg=StopAck(run_id="r"), run_id="r", current_round=3, in_flight=None)
    assert err.value.code == "unexpected_message"
    check_stage(state=REMOVED, msg=StopAck(run_id="r"), run_id="r", current_round=3, in_flight=None)


@pytest.mark.parametrize("state", STATES)
def test_after_the_end_every_site_message_is_in_stage_and_an_ack_must_name_the_run(state):
    for msg in (StopAck(run_id="r"), Heartbeat(), Hello(versions=(2,), policy={}),
                GradientReply(run_id="r", round=1, step=0, grad=torch.zeros(1)), ErrorReply(code="stale")):
        check_stage(state=state, msg=msg, run_id="r", current_round=3, in_flight=None, ended=True)
    with pytest.raises(ProtocolError) as err:
        check_stage(state=state, msg=StopAck(run_id="other"), run_id="r", current_round=3, in_flight=None, ended=True)
    assert err.value.code == "wrong_run"
    with pytest.raises(ProtocolError) as err:  # what a site never sends stays refused
        check_stage(state=state, msg=Stop(run_id="r", reason="x"), run_id="r", current_round=3, in_flight=None,
                    ended=True)
    assert err.value.code == "unexpected_message"


# --- a real coordinator after its run --------------------------------------------------------------

def _ended(tmp_path, linger_s: float = 30.0) -> tuple[Coordinator, Site, Site]:
    """site-1 welcomed and told Stop; site-2 welcomed, then dead (its connection gone) when the run ended."""
    c = make_coordinator(tmp_path)
    c = Coordinator(dataclasses.replace(c.cfg, settings=dataclasses.replace(c.settings, stop_linger_s=linger_s)))
    c.router = Router()
    one, two = Site(c, "site-1"), Site(c, "site-2")
    one.hello()
    two.hello()
    assert c.registry.mark_dead("site-2", reason="unroutable")
    c._finish("completed", "completed")
    return c, one, two


def test_a_site_that_missed_the_stop_gets_it_on_whatever_it_sends_next(tmp_path):
    c, one, two = _ended(tmp_path)
    assert isinstance(c.router.last(one.rid, Stop), Stop) and c.router.last(two.rid, Stop) is None
    assert c._final.pending() == ["site-1", "site-2"]
    step, rnd, sent = c.scheduler.step, c.scheduler.round_number, len(c.router.sent)
    two.rid = b"site-2-reconnected"  # a new connection after the pause
    two.hello()
    two.send(Heartbeat())
    two.send(GradientReply(run_id="r", round=0, step=0, grad=torch.zeros(2, 4, 16, 16)))  # a late reply
    answers = [m for r, m in c.router.sent[sent:] if r == two.rid]
    assert [type(m) for m in answers] == [Stop, Stop, Stop] and all(m.reason == "completed" for m in answers)
    assert not any(isinstance(m, (Welcome, FakeBatch)) for _r, m in c.router.sent[sent:])
    assert (c.scheduler.step, c.scheduler.round_number, c.scheduler.current) == (step, rnd, None)  # nothing applied
    assert c.registry["site-2"].state == DEAD and c.registry["site-2"].steps_served == 0
    n = len(c.router.sent)
    two.send(ErrorReply(code="wrong_run"))  # logged, never answered: no exchange of errors
    assert len(c.router.sent) == n
    two.send(StopAck(run_id="r"))
    assert c._final.pending() == ["site-1"] and not c._final.may_close(time.monotonic())
    one.send(StopAck(run_id="other"))  # not this run's Stop: refused, still owed
    assert c.router.last(one.rid, ErrorReply).code == "wrong_run" and c._final.pending() == ["site-1"]
    one.send(StopAck(run_id="r"))
    assert c._final.pending() == [] and c._final.may_close(time.monotonic())
    final = c._write_run_json("completed", "completed")["final_stop"]
    assert final["acknowledged"] == 2 and final["told"] == 2 and final["answered_with_stop"] == 3


def test_a_removed_site_that_acknowledged_its_stop_during_the_run_is_not_waited_for(tmp_path):
    c = make_coordinator(tmp_path)
    one, two = Site(c, "site-1"), Site(c, "site-2")
    one.hello()
    two.hello()
    c.registry.remove("site-2", reason="budget_exhausted")
    two.rid = b"site-2-restarted"
    two.hello()  # told Stop again (it stays removed), acknowledges, exits
    assert c.router.last(two.rid, Stop).reason == "budget_exhausted"
    two.send(StopAck(run_id="r"))
    assert c.router.last(two.rid, ErrorReply) is None  # in stage: a removed site was told Stop
    c._finish("completed", "completed")
    assert c._final.owed == {"site-1", "site-2"} and c._final.pending() == ["site-1"]


def test_strangers_get_nothing_new_after_the_end(tmp_path):
    c, _one, _two = _ended(tmp_path)
    n = len(c.router.sent)
    stranger = Site(c, "site-9")  # authenticated by no key of the manifest
    stranger.hello()
    assert len(c.router.sent) == n and c.registry.unattributed_drops["unauthenticated"] == 1


class _IdlePoller:
    def poll(self, timeout_ms):
        time.sleep(timeout_ms / 1000)
        return []


def test_the_linger_ends_at_its_deadline_or_on_a_signal_and_rewrites_run_json(tmp_path):
    c, _one, _two = _ended(tmp_path / "a", linger_s=0.3)
    c._poller = _IdlePoller()
    t0 = time.monotonic()
    final = c._linger("completed", "completed")
    assert 0.25 <= time.monotonic() - t0 < 5.0
    assert final["status"] == "completed" and final["final_stop"]["unacknowledged"] == ["site-1", "site-2"]
    assert final["final_stop"]["lingered_s"] >= 0.25
    c, _one, _two = _ended(tmp_path / "b", linger_s=600.0)
    c._poller = _IdlePoller()
    c._stop_signal = "SIGTERM"
    t0 = time.monotonic()
    c._linger("completed", "completed")
    assert time.monotonic() - t0 < 5.0


def test_an_interrupted_run_sends_no_stop_and_does_not_linger(tmp_path):
    c = make_coordinator(tmp_path)
    site = Site(c, "site-1")
    site.hello()
    c._finish("interrupted", "SIGTERM")
    assert c._final is None and c.router.last(site.rid, Stop) is None

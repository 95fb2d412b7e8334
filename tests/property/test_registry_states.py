"""Hypothesis state machine over the coordinator's Registry: whatever happens to a site after a
final Refusal (Hellos that accept or refuse the condition source, deaths, reaping, direct state
writes), it stays removed for the rest of the run, with the reason it was removed for."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from coordinator.registry import DEAD, EXCLUDED, KNOWN, REMOVED, WELCOMED, Registry

SITES = ("site-1", "site-2", "site-3")
site = st.sampled_from(SITES)


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reg = Registry(list(SITES))
        self.removed: dict[str, str] = {}  # site -> the reason it was first removed for
        self.now = 0.0

    @rule(s=site)
    def hello(self, s):
        self.reg.welcome(s, routing_id=s.encode(), now=self.now, policy={"mode": "off"})

    @rule(s=site)
    def hello_refusing_the_source(self, s):
        self.reg.exclude(s, routing_id=s.encode(), reason="source_refused")

    @rule(s=site, code=st.sampled_from(["budget_exhausted", "policy_changed"]))
    def final_refusal(self, s, code):
        self.reg.remove(s, reason=code)
        self.removed.setdefault(s, code)

    @rule(s=site)
    def unroutable(self, s):
        self.reg.mark_dead(s, reason="unroutable")

    @rule(s=site, dt=st.floats(0, 100))
    def traffic_and_reaping(self, s, dt):
        self.reg.seen(s, now=self.now, nbytes=10)
        self.now += dt
        self.reg.reap(now=self.now, timeout_s=10.0)

    @rule(s=site, state=st.sampled_from([KNOWN, WELCOMED, DEAD, EXCLUDED]))
    def direct_write(self, s, state):
        # any code path that assigns a record's state directly
        self.reg[s].state = state
        self.reg[s].stop_reason = "overwritten"

    @invariant()
    def removed_is_final(self):
        for s, reason in self.removed.items():
            rec = self.reg[s]
            assert rec.state == REMOVED and rec.stop_reason == reason
            assert s not in self.reg.live() and s not in self.reg.able()

    @invariant()
    def live_sites_are_welcomed(self):
        assert all(self.reg[s].state == WELCOMED for s in self.reg.live())


RegistryMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_registry_states = RegistryMachine.TestCase

"""Rounds, quorum, retries and protocol stages of the coordinator, with a real tiny G (no sockets)."""

from __future__ import annotations

import pytest
import torch

from secgan.core.errors import ProtocolError
from secgan.net.schema import GradientReply, Heartbeat, Hello, Refusal, Stop
from secgan.gan.models import build_generator
from secgan.gan.config import ModelConfig
from secgan.core.spec import ImageSpec
from coordinator.core import GeneratorCore

from coordinator.registry import DEAD, REMOVED, WELCOMED, Registry
from coordinator.scheduler import START, STOP, WAIT, QuorumPolicy, Scheduler
from coordinator.stages import check_stage

IMAGE = ImageSpec(size=16)
MODEL = ModelConfig(g_width=8, g_depth=2, d_width=8, d_layers=2, noise_dim=4)


class _Conds:
    def draw(self, n, *, generator):
        return (torch.rand(n, 4, IMAGE.size, IMAGE.size, generator=generator) > 0.5).float()


def _setup(n_sites=3, min_sites=2, max_attempts=2):
    G = build_generator(MODEL, IMAGE)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3)
    core = GeneratorCore(G, opt, _Conds(), batch_size=2, noise_dim=MODEL.noise_dim,
                         generator=torch.Generator().manual_seed(0))
    reg = Registry([f"site-{i}" for i in range(1, n_sites + 1)])
    for s in reg.sites:
        reg.welcome(s, routing_id=s.encode(), now=0.0, policy={"mode": "off"})
    sched = Scheduler(core, reg, QuorumPolicy(min_sites=min_sites, round_deadline_s=5.0, max_attempts=max_attempts,
                                              readmission_wait_s=10.0), run_id="r", total_steps=3)
    return G, core, reg, sched


def _reply(batch, site_sent):
    return GradientReply(run_id="r", round=batch.round, step=batch.step, grad=torch.ones_like(batch.fake))


def test_full_round_steps_g_once():
    G, core, reg, sched = _setup()
    sent = {}
    before = [p.detach().clone() for p in G.parameters()]
    assert sched.readiness(0.0) == (START, None)
    rnd = sched.start_round(0.0, lambda s, m: sent.setdefault(s, m) and 100)
    assert sorted(sent) == ["site-1", "site-2", "site-3"]
    # each site has its own fresh batch
    assert not torch.equal(sent["site-1"].cond, sent["site-2"].cond)
    for s, b in sent.items():
        assert sched.in_flight_for(s) == (rnd.number, 0)
        sched.on_gradient(s, _reply(b, s), 50)
    assert sched.round_done(0.1)
    res = sched.close_round()
    assert res.stepped and res.answered == 3 and sched.step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))
    assert all(reg[s].steps_served == 1 and reg[s].step_bytes_in == [50] for s in reg.sites)


def test_bad_gradient_is_rejected_and_site_stays_in_flight():
    _, _, _, sched = _setup()
    sent = {}
    sched.start_round(0.0, lambda s, m: sent.setdefault(s, m) and 1)
    b = sent["site-1"]
    for grad, code in [
        (torch.ones(1, 4, 16, 16), "bad_shape"),
        (torch.ones_like(b.fake, dtype=torch.float64), "bad_dtype"),
        (torch.full_like(b.fake, float("nan")), "non_finite"),
    ]:
        with pytest.raises(ProtocolError) as err:
            sched.on_gradient("site-1", GradientReply(run_id="r", round=b.round, step=0, grad=grad), 1)
        assert err.value.code == code
    assert sched.in_flight_for("site-1") is not None


def test_a_reply_for_another_batch_is_refused_on_arrival_not_when_the_round_closes():
    # the scheduler asks the core (the one check against what was sent): a reply naming another
    # run, round or step than the batch in flight for this site is refused now, the site stays in
    # flight, and the round still closes and steps G with the right replies
    _, _, _, sched = _setup()
    sent = {}
    sched.start_round(0.0, lambda s, m: sent.setdefault(s, m) and 1)
    b = sent["site-1"]
    for other in (dict(round=b.round + 1), dict(step=b.step + 1), dict(run_id="other")):
        wrong = GradientReply(**{**dict(run_id="r", round=b.round, step=b.step), **other}, grad=torch.ones_like(b.fake))
        with pytest.raises(ProtocolError) as err:
            sched.on_gradient("site-1", wrong, 1)
        assert err.value.code == "unexpected_reply"
        assert sched.in_flight_for("site-1") is not None
    for s, batch in sent.items():
        sched.on_gradient(s, _reply(batch, s), 1)
    assert sched.close_round().stepped


def test_deadline_below_quorum_retries_without_touching_g_then_stops():
    G, core, reg, sched = _setup(min_sites=3, max_attempts=2)
    before = [p.detach().clone() for p in G.parameters()]
    sent = {}
    r1 = sched.start_round(0.0, lambda s, m: sent.__setitem__(s, m) or 1)
    sched.on_gradient("site-1", _reply(sent["site-1"], "site-1"), 1)
    assert not sched.round_done(1.0) and sched.round_done(5.0)
    res = sched.close_round()
    assert not res.stepped and res.stop_reason is None and sched.step == 0 and sched.attempt == 1
    assert all(torch.equal(a, b) for a, b in zip(before, G.parameters()))
    assert all(p.grad is None for p in G.parameters())
    assert reg["site-2"].drops["deadline"] == 1
    sent.clear()
    r2 = sched.start_round(5.0, lambda s, m: sent.__setitem__(s, m) or 1)
    assert r2.number == r1.number + 1 and sent["site-1"].attempt == 1
    # a late reply for round 1 is stale at the stage check
    with pytest.raises(ProtocolError) as err:
        check_stage(state=WELCOMED, msg=GradientReply(run_id="r", round=r1.number, step=0, grad=torch.zeros(1)),
                    run_id="r", current_round=r2.number, in_flight=sched.in_flight_for("site-1"))
    assert err.value.code == "stale"
    res = sched.close_round()
    assert res.stop_reason == "quorum_lost"
    assert [e["event"] for e in sched.quorum_events] == ["retry", "retry"]


def test_final_refusal_removes_site_and_quorum_becomes_impossible():
    _, _, reg, sched = _setup(n_sites=2, min_sites=2)
    sent = {}
    rnd = sched.start_round(0.0, lambda s, m: sent.__setitem__(s, m) or 1)
    sched.on_refusal("site-2", Refusal(run_id="r", round=rnd.number, step=0, code="budget_exhausted",
                                       reason="spent", final=True))
    assert reg["site-2"].state == REMOVED and reg["site-2"].stop_reason == "budget_exhausted"
    sched.on_gradient("site-1", _reply(sent["site-1"], "site-1"), 1)
    assert sched.round_done(0.0)
    assert not sched.close_round().stepped
    assert sched.readiness(1.0) == (STOP, "quorum_impossible")
    # a readmission Hello does not bring a removed site back
    reg.welcome("site-2", routing_id=b"x", now=2.0, policy={})
    assert reg["site-2"].state == REMOVED


def test_dead_sites_wait_for_readmission_then_stop():
    _, _, reg, sched = _setup(n_sites=3, min_sites=2)
    reg.seen("site-1", now=100.0, nbytes=0)
    for s in ("site-2", "site-3"):
        reg.seen(s, now=0.0, nbytes=0)
    assert reg.reap(now=100.0, timeout_s=10.0, busy=frozenset({"site-3"})) == ["site-2"]  # busy: deadline rules
    assert reg.reap(now=100.0, timeout_s=10.0) == ["site-3"]
    assert reg["site-2"].state == DEAD and reg["site-2"].deaths == 1
    assert sched.readiness(100.0) == (WAIT, None)
    reg.welcome("site-2", routing_id=b"n", now=101.0, policy={})
    assert sched.readiness(101.0) == (START, None)
    reg.seen("site-2", now=0.0, nbytes=0)
    reg.reap(now=200.0, timeout_s=10.0)
    assert sched.readiness(200.0) == (WAIT, None)
    assert sched.readiness(211.0) == (STOP, "quorum_lost")
    assert [e["event"] for e in sched.quorum_events] == ["waiting", "readmitted", "waiting"]


@pytest.mark.parametrize(
    "state, msg, in_flight, code",
    [
        ("known", Heartbeat(), None, "not_welcomed"),
        (DEAD, Heartbeat(), None, "not_welcomed"),
        ("known", GradientReply(run_id="r", round=1, step=0, grad=torch.zeros(1)), None, "unexpected_message"),
        (DEAD, Refusal(run_id="r", round=1, step=0, code="x", reason=""), None, "unexpected_message"),
        (WELCOMED, GradientReply(run_id="r", round=3, step=0, grad=torch.zeros(1)), None, "unexpected_message"),
        (WELCOMED, GradientReply(run_id="r", round=3, step=1, grad=torch.zeros(1)), (3, 0), "unexpected_message"),
        (WELCOMED, GradientReply(run_id="r", round=4, step=0, grad=torch.zeros(1)), (3, 0), "unexpected_message"),
        (WELCOMED, GradientReply(run_id="r", round=2, step=0, grad=torch.zeros(1)), (3, 0), "stale"),
        (WELCOMED, GradientReply(run_id="other", round=3, step=0, grad=torch.zeros(1)), (3, 0), "wrong_run"),
        (WELCOMED, Stop(run_id="r", reason="x"), None, "unexpected_message"),
    ],
)
def test_stage_violations(state, msg, in_flight, code):
    with pytest.raises(ProtocolError) as err:
        check_stage(state=state, msg=msg, run_id="r", current_round=3, in_flight=in_flight)
    assert err.value.code == code


def test_stage_accepts_expected_messages():
    check_stage(state="known", msg=Hello(versions=(1,), policy={}), run_id="r", current_round=None, in_flight=None)
    check_stage(state=WELCOMED, msg=Heartbeat(), run_id="r", current_round=3, in_flight=None)
    check_stage(state=WELCOMED, msg=GradientReply(run_id="r", round=3, step=0, grad=torch.zeros(1)),
                run_id="r", current_round=3, in_flight=(3, 0))

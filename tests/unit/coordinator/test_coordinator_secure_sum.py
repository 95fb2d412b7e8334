"""Secure-sum rounds in the coordinator's scheduler and the site node, without sockets: a real tiny
G, real SecureSumClients for the sites, a fake socket for the node."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secgan.net import codec, replay
from secgan.core.errors import ProtocolError
from secgan.keys.agreement import public_hex
from secgan.net.schema import PROTOCOL_VERSION, FakeBatch, GradientReply, Refusal, SecAggAnnounce, SecAggMasked, Welcome
from secgan.gan.models import build_generator
from secgan.gan.config import ModelConfig
from secgan.secagg import SecureSumAggregator, SecureSumClient
from secgan.core.spec import ImageSpec
from coordinator.core import GeneratorCore

from coordinator.registry import Registry
from coordinator.scheduler import START, QuorumPolicy
from coordinator.secure_sum import SecureSumScheduler
from coordinator.stages import check_stage
from tests.unit.sites.fakes import FakeLearner, fake_node

IMAGE = ImageSpec(size=16)
MODEL = ModelConfig(g_width=8, g_depth=2, d_width=8, d_layers=2, noise_dim=4)
IDS = [f"site-{i}" for i in range(1, 5)]
KEYS = {i: X25519PrivateKey.from_private_bytes(hashlib.sha256(i.encode()).digest()) for i in IDS}
ROSTER = {i: public_hex(k) for i, k in KEYS.items()}


class _Conds:
    def draw(self, n, *, generator):
        return (torch.rand(n, 4, IMAGE.size, IMAGE.size, generator=generator) > 0.5).float()


class _SpyCore(GeneratorCore):
    """The real core; remembers the gradients it was asked to apply."""

    applied: list

    def apply(self, reply, *, site=""):
        self.applied.append(reply.grad.clone())
        super().apply(reply, site=site)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _setup(max_attempts=3):
    G = build_generator(MODEL, IMAGE)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3)
    core = _SpyCore(G, opt, _Conds(), batch_size=2, noise_dim=MODEL.noise_dim, generator=torch.Generator().manual_seed(0))
    core.applied = []
    reg = Registry(IDS)
    for s in IDS:
        reg.welcome(s, routing_id=s.encode(), now=0.0, policy={"mode": "off"})
    clock = _Clock()
    sched = SecureSumScheduler(core, reg, QuorumPolicy(min_sites=3, round_deadline_s=5.0, max_attempts=max_attempts),
                               run_id="r", total_steps=3, roster=ROSTER, clock=clock)
    clients = {i: SecureSumClient(site_id=i, agreement_key=KEYS[i], roster=ROSTER, run_id="r") for i in IDS}
    return G, core, reg, sched, clients, clock


def _grads(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {i: torch.randn(batch.fake.shape, generator=g) * 1e-2 for i in IDS}


def _start(sched):
    sent: dict[str, list] = {i: [] for i in IDS}

    def send(site, msg):
        sent[site].append(msg)
        return 1000

    sched.start_round(0.0, send)
    return sent


def test_one_shared_batch_and_one_summed_update():
    G, core, reg, sched, clients, _ = _setup()
    before = [p.detach().clone() for p in G.parameters()]
    assert sched.readiness(0.0) == (START, None)
    sent = _start(sched)
    batches = [sent[i][0] for i in IDS]
    assert all(isinstance(b, FakeBatch) for b in batches)
    assert all(torch.equal(b.fake, batches[0].fake) and torch.equal(b.cond, batches[0].cond) for b in batches)
    ann = sent["site-1"][1]
    assert isinstance(ann, SecAggAnnounce) and [p[0] for p in ann.participants] == IDS
    assert [p[1] for p in ann.participants] == [ROSTER[i] for i in IDS]  # the manifest's keys
    grads = _grads(batches[0])
    for i in IDS:
        assert not sched.round_done(0.1) and sched.in_flight_for(i) == (1, 0)
        masked = clients[i].contribute(sent[i][1], grads[i])
        check_stage(state="welcomed", msg=masked, run_id="r", current_round=1, in_flight=sched.in_flight_for(i))
        sched.on_masked(i, masked, 500)
    assert sched.round_done(0.1)
    res = sched.close_round()
    assert res.stepped and res.answered == 4 and sched.step == 1 and sched.current is None
    assert len(core.applied) == 1  # the sum, applied once
    expected = sum(grads[i] for i in IDS)
    assert torch.allclose(core.applied[0], expected, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))
    s = sched.summary()
    assert s["rounds"] == 1 and s["retried_rounds"] == 0 and s["per_round"][0]["participants"] == 4
    assert s["per_round"][0]["wire_bytes_down"] == 8 * 1000 and s["per_round"][0]["wire_bytes_up"] == 4 * 500
    assert s["threshold"] == 3 and "honest" in s["assumption"]


def test_unmasked_gradient_is_refused():
    _, _, _, sched, _, _ = _setup()
    sent = _start(sched)
    b = sent["site-1"][0]
    with pytest.raises(ProtocolError) as exc:
        sched.on_gradient("site-1", GradientReply(run_id="r", round=b.round, step=b.step, grad=torch.zeros_like(b.fake)), 1)
    assert exc.value.code == "unexpected_message"


def test_deadline_retries_without_the_silent_site_and_late_vectors_are_stale():
    G, core, reg, sched, clients, clock = _setup()
    sent = _start(sched)
    grads = _grads(sent["site-1"][0])
    first = {i: clients[i].contribute(sent[i][1], grads[i]) for i in IDS}
    for i in IDS[:3]:
        sched.on_masked(i, first[i], 500)
    assert not sched.round_done(1.0) and sched.busy() == frozenset({"site-4"})
    clock.t = 5.0
    assert sched.round_done(5.0)
    res = sched.close_round()
    assert not res.stepped and sched.current is not None and core.applied == []  # still the same round
    retry = sent["site-1"][-1]
    assert isinstance(retry, SecAggAnnounce) and retry.attempt == 1 and [p[0] for p in retry.participants] == IDS[:3]
    assert sent["site-4"][-1].TYPE == "secagg_announce" and sent["site-4"][-1].attempt == 0  # not re-invited
    assert reg["site-4"].drops["deadline"] == 1
    with pytest.raises(ProtocolError) as exc:  # site-4's vector for attempt 0 arrives late
        sched.on_masked("site-4", first["site-4"], 500)
    assert exc.value.code == "stale"
    for i in IDS[:3]:
        assert not clients[i].needs_gradient(retry)  # the same value, fresh masks: no new release
        sched.on_masked(i, clients[i].contribute(retry), 500)
    res = sched.close_round()
    assert res.stepped and len(core.applied) == 1
    assert torch.allclose(core.applied[0], sum(grads[i] for i in IDS[:3]), atol=1e-6)
    s = sched.summary()
    assert s["retried_rounds"] == 1 and s["retried_attempts"] == 1
    assert s["per_round"][0]["attempts"] == 2 and s["per_round"][0]["dropped"] == ["site-4"]
    assert [e["event"] for e in sched.quorum_events] == ["secagg_retry"]


def test_round_below_threshold_fails_and_leaves_g_untouched():
    G, core, reg, sched, clients, clock = _setup(max_attempts=2)
    before = [p.detach().clone() for p in G.parameters()]
    sent = _start(sched)
    grads = _grads(sent["site-1"][0])
    for i in IDS[:2]:
        sched.on_masked(i, clients[i].contribute(sent[i][1], grads[i]), 500)
    sched.on_refusal("site-3", Refusal(run_id="r", round=1, step=0, code="secagg_below_threshold", reason="x"))
    sched.on_site_lost("site-4")
    assert sched.round_done(0.5)  # nobody left to wait for
    res = sched.close_round()  # a retry with two sites is below the threshold of 3
    assert not res.stepped and res.stop_reason is None and sched.current is None and sched.attempt == 1
    assert core.applied == [] and all(torch.equal(a, b) for a, b in zip(before, G.parameters()))
    assert sched.summary()["failed_rounds"] == 1 and sched.summary()["per_round"][0]["failed"] == "secagg_quorum_lost"
    _start(sched)  # second round for the same step: a new batch, and the last allowed attempt
    for i in IDS:
        sched.on_site_lost(i)
    assert sched.close_round().stop_reason == "quorum_lost"


# -- the site node -------------------------------------------------------------------------------


class _Learner(FakeLearner):
    def __init__(self) -> None:
        super().__init__()
        self.grads: list = []

    def serve(self, msg, *, distributed_noise: bool = False):
        self.served.append((msg.round, msg.step))
        g = torch.randn(msg.fake.shape, generator=torch.Generator().manual_seed(self.releases)) * 1e-2
        self.grads.append(g)
        return GradientReply(run_id=msg.run_id, round=msg.round, step=msg.step, grad=g)


def _node(tmp_path: Path, *, secure=True):
    factory = (lambda run_id: SecureSumClient(site_id="site-1", agreement_key=KEYS["site-1"], roster=ROSTER,
                                              run_id=run_id)) if secure else None
    node = fake_node(tmp_path, _Learner(), size=IMAGE.size, secure_sum=factory)
    return node, node.sock


class _Coord:
    def __init__(self) -> None:
        self.seq = replay.initial_seq()

    def frames(self, msg, *, round=1, step=0):
        self.seq += 1
        return codec.encode(msg, run_id=getattr(msg, "run_id", "r"), round=getattr(msg, "round", round),
                           step=getattr(msg, "step", step), site="site-1", seq=self.seq)


def _welcome():
    return Welcome(version=PROTOCOL_VERSION, run_id="r", image_size=IMAGE.size, model={},
                   condition_source="procedural", planned_steps=200, aggregation="secure-sum")


def test_node_holds_the_gradient_and_sends_only_masked_vectors(tmp_path):
    node, sock = _node(tmp_path)
    c = _Coord()
    node.handle(c.frames(_welcome(), round=0))
    assert node.welcomed and node.secagg is not None
    shape = (2, 4, IMAGE.size, IMAGE.size)
    batch = FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(shape), fake=torch.zeros(shape))
    node.handle(c.frames(batch))
    assert node.learner.releases == 1 and sock.sent == []  # paid for, held, nothing sent
    agg = SecureSumAggregator(run_id="r", roster=ROSTER)
    ann = agg.begin(round=1, step=0, participants=IDS, shape=shape)
    node.handle(c.frames(ann))
    assert len(sock.sent) == 1 and isinstance(sock.sent[0], SecAggMasked) and sock.sent[0].attempt == 0
    others = {i: SecureSumClient(site_id=i, agreement_key=KEYS[i], roster=ROSTER, run_id="r") for i in IDS[1:]}
    g_other = {i: torch.full(shape, 0.001 * k) for k, i in enumerate(IDS[1:], start=1)}
    agg.accept("site-1", sock.sent[0])
    for i in IDS[1:3]:
        agg.accept(i, others[i].contribute(ann, g_other[i]))
    retry = agg.retry()  # site-4 never delivered
    node.handle(c.frames(retry))
    assert node.learner.releases == 1 and isinstance(sock.sent[-1], SecAggMasked) and sock.sent[-1].attempt == 1
    assert not torch.equal(sock.sent[-1].masked, sock.sent[0].masked)  # fresh masks
    agg.accept("site-1", sock.sent[-1])
    for i in IDS[1:3]:
        agg.accept(i, others[i].contribute(retry))
    total = agg.result()
    expected = sum(g.double() for g in (node.learner.grads[0], g_other["site-2"], g_other["site-3"])).numpy()
    assert np.abs(total - expected).max() <= agg.quantisation_bound()
    assert not any(isinstance(m, GradientReply) for m in sock.sent)
    assert node.counts["masked"] == 1 and node.counts["remasked"] == 1


def test_node_refuses_a_substituted_key_and_small_sets(tmp_path):
    node, sock = _node(tmp_path)
    c = _Coord()
    node.handle(c.frames(_welcome(), round=0))
    shape = (2, 4, IMAGE.size, IMAGE.size)
    node.handle(c.frames(FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(shape), fake=torch.zeros(shape))))
    agg = SecureSumAggregator(run_id="r", roster=ROSTER)
    ann = agg.begin(round=1, step=0, participants=IDS, shape=shape)
    evil = public_hex(X25519PrivateKey.generate())
    parts = [[i, evil if i == "site-2" else k] for i, k in ann.participants]
    node.handle(c.frames(dataclasses.replace(ann, participants=parts)))
    assert isinstance(sock.sent[-1], Refusal) and sock.sent[-1].code == "secagg_key_mismatch"
    small = SecureSumAggregator(run_id="r", roster=ROSTER, threshold=2).begin(round=1, step=0,
                                                                             participants=IDS[:2], shape=shape)
    node.handle(c.frames(small))
    assert isinstance(sock.sent[-1], Refusal) and sock.sent[-1].code == "secagg_below_threshold"
    assert not any(isinstance(m, (GradientReply, SecAggMasked)) for m in sock.sent)


def test_node_without_agreement_key_leaves_a_secure_sum_run(tmp_path):
    node, sock = _node(tmp_path, secure=False)
    node.handle(_Coord().frames(_welcome(), round=0))
    assert not node.welcomed and node.exit_reason == "secure_sum_unavailable" and node.exit_code == 2

"""A live DP site sent a batch of finite values near 3e38 (or conditions outside [0, 1]) refuses it
with ``out_of_range`` before its ledger is charged, and keeps serving normal batches with finite
gradients. The test plays the coordinator (its real keys) against the site process."""

from __future__ import annotations

import json

import pytest
import torch

from secgan.net import codec
from secgan.net.schema import PROTOCOL_VERSION, ErrorReply, FakeBatch, GradientReply, Hello, Stop, Welcome
from tests.integration.net_helpers import free_port, make_kit, site_proc, stand_in_coordinator, update_toml
from tests.integration.test_net_badframes import LIMITS, Peer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_live_site_refuses_a_poisoned_batch_and_keeps_serving(tmp_path, phantom_root):
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=1, port=port)
    update_toml(kit["site-1"], {"policy": {"mode": "dpsgd", "allow_off": False, "target_epsilon": 10.0,
                                           "delta": 1e-5, "planned_steps": 200, "expected_batch_size": 2}})
    with stand_in_coordinator(tmp_path / "kit", port, LIMITS) as router:
        site = site_proc(kit, "site-1", tmp_path / "logs" / "site-1.log")
        run_id = "poison-run"
        state = tmp_path / "kit" / "site-1" / "state"
        try:
            assert router.poll(90_000), site.tail()
            frames = router.recv_multipart()
            me = Peer(router, site="site-1", routing_id=frames[0])
            assert isinstance(codec.decode(frames[1:])[1], Hello)
            me.send(Welcome(version=PROTOCOL_VERSION, run_id=run_id, image_size=32, model={},
                            condition_source="procedural", planned_steps=200), run=run_id)
            site.wait_for(r"welcomed site=site-1", timeout=30)

            shape = (2, 4, 32, 32)
            g = torch.Generator().manual_seed(0)
            cond = (torch.rand(shape, generator=g) > 0.5).float()
            rnd = 0
            for field, value in (("fake", 3e38), ("fake", -3e38), ("cond", 2.0)):
                rnd += 1
                parts = {"cond": cond.clone(), "fake": torch.rand(shape, generator=g) * 2 - 1}
                parts[field][0, 0, 0, 0] = value
                me.send(FakeBatch(run_id=run_id, round=rnd, step=rnd, **parts), run=run_id)
                err = me.expect(ErrorReply, timeout=30)[1]
                assert err.code == "out_of_range", err
                site.wait_for(r"inbound_rejected code=out_of_range", timeout=10, count=rnd)
            ledger = json.loads((state / "ledger.json").read_text())
            assert ledger["releases"] == 0  # refused before anything was charged

            for _ in range(3):  # normal batches afterwards: served, finite, charged
                rnd += 1
                me.send(FakeBatch(run_id=run_id, round=rnd, step=rnd, cond=cond, fake=torch.rand(shape, generator=g) * 2 - 1),
                        run=run_id)
                env, reply = me.expect(GradientReply, timeout=60)
                assert (reply.round, reply.step) == (rnd, rnd) and bool(torch.isfinite(reply.grad).all())
                assert reply.budget_left is not None and 0.0 <= reply.budget_left <= 1.0
            ledger = json.loads((state / "ledger.json").read_text())
            assert ledger["releases"] == 3 and 0 < ledger["epsilon"] < 10.0
            me.send(Stop(run_id=run_id, reason="completed"), run=run_id, round=rnd)
            assert site.wait(timeout=60) == 0, site.tail()
        finally:
            site.close()

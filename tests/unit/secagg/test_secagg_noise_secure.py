"""The secure-sum noise share honours the site's ``policy.secure_noise`` like DP-SGD and sanitize
noise do: 4 draws summed and halved (same std) instead of one draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from secgan.secagg import draw_noise_share


def _gen(seed=3):
    return torch.Generator().manual_seed(seed)


def test_secure_share_is_four_draws_halved_with_the_same_std():
    shape = (200_000,)
    g = _gen()
    secure = draw_noise_share(shape, 0.7, generator=g, secure=True)
    ref = _gen()
    draws = [torch.randn(shape, generator=ref, dtype=torch.float64) for _ in range(4)]
    assert np.allclose(secure, (sum(draws) * (0.7 / 2.0)).numpy())
    assert float(np.std(secure)) == pytest.approx(0.7, rel=0.01)
    # the generator advanced by four draws: the next value is what a fifth draw would be
    assert torch.equal(torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, generator=ref, dtype=torch.float64))


def test_plain_share_is_one_draw_and_secure_is_the_default():
    shape = (1000,)
    plain = draw_noise_share(shape, 0.5, generator=_gen(), secure=False)
    assert np.allclose(plain, (torch.randn(shape, generator=_gen(), dtype=torch.float64) * 0.5).numpy())
    assert np.array_equal(draw_noise_share(shape, 0.5, generator=_gen()),
                          draw_noise_share(shape, 0.5, generator=_gen(), secure=True))
    assert not np.allclose(plain, draw_noise_share(shape, 0.5, generator=_gen(), secure=True))
    assert not draw_noise_share((4,), 0.0, generator=_gen()).any()


def test_the_site_node_passes_its_policy_to_the_noise_share(tmp_path):
    """The masked vector of a sanitize site with secure_noise off differs from one with it on
    (same generator seeds): the flag reaches the share the site draws."""
    from tests.unit.coordinator import test_coordinator_secure_sum as h
    from tests.unit.sites.fakes import FakeSocket

    from secgan.net.schema import FakeBatch, SecAggMasked
    from secgan.secagg import SecureSumAggregator, SecureSumClient
    from sites.node import SiteNode

    class _Policy:
        def __init__(self, secure):
            self.secure_noise = secure

    class _Learner(h._Learner):
        def __init__(self, secure):
            super().__init__()
            self.policy = _Policy(secure)

        def serve(self, msg, *, distributed_noise=False):
            return super().serve(msg)

        def secure_sum_noise(self, *, threshold):
            return 0.01, torch.Generator().manual_seed(11)

    sent = {}
    for secure in (True, False):
        node, _ = h._node(tmp_path / str(secure))
        node = SiteNode(node.cfg, _Learner(secure),
                        secure_sum=lambda run_id: SecureSumClient(site_id="site-1", agreement_key=h.KEYS["site-1"],
                                                                  roster=h.ROSTER, run_id=run_id))
        node.sock = FakeSocket()
        c = h._Coord()
        node.handle(c.frames(h._welcome(), round=0))
        shape = (2, 4, h.IMAGE.size, h.IMAGE.size)
        node.handle(c.frames(FakeBatch(run_id="r", round=1, step=0, cond=torch.zeros(shape), fake=torch.zeros(shape))))
        ann = SecureSumAggregator(run_id="r", roster=h.ROSTER).begin(round=1, step=0, participants=h.IDS, shape=shape)
        node.handle(c.frames(ann))
        assert isinstance(node.sock.sent[-1], SecAggMasked)
        sent[secure] = node.sock.sent[-1].masked
    assert not torch.equal(sent[True], sent[False])

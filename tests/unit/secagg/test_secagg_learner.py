"""The site learner in secure-sum rounds: in sanitize mode the gradient it hands the site is clipped
but not noised (the noise share goes inside the masked vector), the ledger is charged exactly as for
a locally noised release, and it records the distributed-noise statement durably."""

from __future__ import annotations

import json
import math

import pytest
import torch

from secgan.net.schema import GradientReply
from sites.learner import SiteLearner
from secgan.secagg import ASSUMPTION

from tests.unit.privacy.privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy


def _learner(tmp_path, pol, sub):
    return SiteLearner(dataset=dataset(), policy=pol, model=MODEL, image=IMAGE, train=TRAIN,
                       state_dir=tmp_path / sub, generator_seed=1)


def test_sanitize_distributed_noise_release(tmp_path):
    pol = policy("sanitize", noise_multiplier=3.0, clip_norm=0.5, shards=2)
    local = _learner(tmp_path, pol, "local")
    dist = _learner(tmp_path, pol, "dist")
    for msg in batches(2, rows=3):
        a = local.serve(msg)
        b = dist.serve(msg, distributed_noise=True)
        assert isinstance(a, GradientReply) and isinstance(b, GradientReply)
        norms = b.grad.flatten(1).norm(dim=1)
        assert bool((norms <= 0.5 + 1e-5).all())  # clipped rows, no noise
        assert a.grad.flatten(1).norm(dim=1).max() > 5 * 0.5  # the local release carries sigma C noise
        assert a.budget_left == b.budget_left and local.epsilon() == pytest.approx(dist.epsilon())
    assert dist.ledger.history == local.ledger.history and dist.ledger.releases == 2

    std, gen = dist.secure_sum_noise(threshold=3)
    assert std == pytest.approx(3.0 * 0.5 / math.sqrt(3)) and gen is dist._noise
    note = dist.record_distributed_noise(threshold=3, participants=4, first_attempt=True)
    note = dist.record_distributed_noise(threshold=3, participants=3, first_attempt=False)  # a retry
    assert note["releases"] == 1 and note["participants_min"] == 3
    assert note["variance_slack_max"] == pytest.approx(4 / 3) and note["assumption"] == ASSUMPTION
    on_disk = json.loads((tmp_path / "dist" / "ledger.json").read_text())
    assert on_disk["distributed_noise"] == note
    dist.serve(next(iter(batches(1, rows=3, seed=5))), distributed_noise=True)  # the next release keeps it
    assert json.loads((tmp_path / "dist" / "ledger.json").read_text())["distributed_noise"] == note
    # a restarted learner reopens the same ledger, statement included
    again = _learner(tmp_path, pol, "dist")
    assert again.ledger.to_dict()["distributed_noise"] == note


@pytest.mark.parametrize("mode", ["dpsgd", "off"])
def test_other_modes_add_no_share(tmp_path, mode):
    site = _learner(tmp_path, policy(mode), mode)
    assert site.secure_sum_noise(threshold=3) == (0.0, None)
    assert site.record_distributed_noise(threshold=3, participants=3, first_attempt=True) is None
    reply = site.serve(next(iter(batches(1, rows=3))), distributed_noise=True)
    assert isinstance(reply, GradientReply) and torch.isfinite(reply.grad).all()
    assert "distributed_noise" not in json.loads((tmp_path / mode / "ledger.json").read_text())

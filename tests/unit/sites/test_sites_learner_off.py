"""The site learner in privacy mode "off": the one learner serves it too (no second, plain learner).

What the former plain learner promised, now asked of ``sites.learner.SiteLearner``: a reply that is
exactly the gradient through the updated D, no epsilon and no budget figure, a sampling stream
reproducible from the seed, bad batches refused, and a restart that continues where it stopped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from secgan.core.errors import ProtocolError
from secgan.gan.step import generator_gradient
from secgan.net.schema import FakeBatch, GradientReply

from sites.learner import SiteLearner
from tests.unit.privacy.privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy


def _site(state_dir: Path, *, seed: int = 7, n: int = 5) -> SiteLearner:
    return SiteLearner(dataset=dataset(n), policy=policy("off"), model=MODEL, image=IMAGE,
                       train=dataclasses.replace(TRAIN, lr_d=1e-3), state_dir=state_dir, generator_seed=seed)


def test_off_mode_serves_the_gradient_of_its_updated_discriminator(tmp_path: Path) -> None:
    site = _site(tmp_path)
    batch = next(batches(1))
    before = [p.detach().clone() for p in site.discriminator.parameters()]
    reply = site.serve(batch)
    assert isinstance(reply, GradientReply)
    assert reply.budget_left is None and site.epsilon() is None and site.plan(10) is None
    assert (reply.run_id, reply.round, reply.step) == (batch.run_id, batch.round, batch.step)
    assert any(not torch.equal(a, b) for a, b in zip(before, site.discriminator.parameters()))
    torch.testing.assert_close(reply.grad, generator_gradient(site.discriminator, batch.cond, batch.fake, loss="bce"))


def test_off_mode_is_reproducible_from_its_seed_and_refuses_bad_batches(tmp_path: Path) -> None:
    def grads(name: str, seed: int) -> list[torch.Tensor]:
        site = _site(tmp_path / name, seed=seed)
        return [site.serve(b).grad for b in batches(3)]

    same, again, other = grads("a", 1), grads("b", 1), grads("c", 2)
    assert all(torch.equal(x, y) for x, y in zip(same, again))
    assert any(not torch.equal(x, y) for x, y in zip(same, other))
    site = _site(tmp_path / "d")
    wrong_size = FakeBatch(run_id="r", round=0, step=0, cond=torch.zeros(2, 4, 32, 32), fake=torch.zeros(2, 4, 32, 32))
    with pytest.raises(ProtocolError, match="bad_shape"):
        site.serve(wrong_size)
    nan = FakeBatch(run_id="r", round=0, step=0, cond=torch.zeros(2, 4, 16, 16), fake=torch.full((2, 4, 16, 16), float("nan")))
    with pytest.raises(ProtocolError, match="non_finite"):
        site.serve(nan)
    assert site.ledger.releases == 0  # nothing refused was counted


def test_off_mode_restart_continues_its_sampling_stream(tmp_path: Path) -> None:
    """A restart from saved state answers the next batch exactly as the uninterrupted site does."""
    first, second = list(batches(2))
    straight = _site(tmp_path / "straight")
    straight.serve(first)
    expected = straight.serve(second).grad
    split = _site(tmp_path / "split")
    split.serve(first)
    split.save()
    del split
    again = _site(tmp_path / "split")
    assert again.ledger.releases == 1
    torch.testing.assert_close(again.serve(second).grad, expected)

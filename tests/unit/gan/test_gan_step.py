from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule

from secgan.core.errors import ConfigError, ProtocolError
from secgan.net.schema import FakeBatch, GradientReply
from secgan.gan.models import build_discriminator, build_generator
from secgan.gan.config import ModelConfig, TrainConfig
from secgan.core.spec import ImageSpec
from secgan.gan.step import (
    GeneratorCore,
    PlainSiteLearner,
    discriminator_loss,
    discriminator_step,
    generator_gradient,
    generator_loss_rows,
)

M = ModelConfig(g_width=8, d_width=8, noise_dim=4, g_depth=2, d_layers=2)
IM = ImageSpec(size=16)


class RandomConditions:
    """Stand-in condition source: random label maps from the explicit generator."""

    def __init__(self, size: int) -> None:
        self.size = size

    def draw(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 4, self.size, self.size, generator=generator) > 0.5).float()


class ArrayDataset:
    """Minimal PatientSlices-like dataset over random arrays (one slice per patient)."""

    def __init__(self, n: int, size: int, seed: int = 0) -> None:
        r = np.random.default_rng(seed)
        self.img = r.uniform(-1, 1, (n, 4, size, size)).astype(np.float32)
        self.cond = (r.uniform(0, 1, (n, 4, size, size)) > 0.5).astype(np.float32)
        self.n_patients = n
        self.requests: list[list[int]] = []

    def sample_slices(self, idx, *, generator):
        idx = list(idx)
        self.requests.append(idx)
        return self.img[idx], self.cond[idx]


def _batch(b: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    cond = (torch.rand(b, 4, 16, 16, generator=g) > 0.5).float()
    img = torch.rand(b, 4, 16, 16, generator=g) * 2 - 1
    return cond, img


@pytest.mark.parametrize("loss", ["bce", "hinge"])
def test_discriminator_loss_rows_real_first_then_fake(loss: str) -> None:
    D = build_discriminator(M, IM)
    rc, ri = _batch(3, 1)
    fc, fi = _batch(5, 2)
    rows = discriminator_loss(D, rc, ri, fc, fi, loss=loss)
    assert rows.shape == (8,)
    with torch.no_grad():
        lr = D(rc, ri).flatten(1)
        lf = D(fc, fi).flatten(1)
    if loss == "bce":
        exp_real = F.softplus(-lr).mean(1)
        exp_fake = F.softplus(lf).mean(1)
    else:
        exp_real = F.relu(1 - lr).mean(1)
        exp_fake = F.relu(1 + lf).mean(1)
    torch.testing.assert_close(rows[:3].detach(), exp_real, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows[3:].detach(), exp_fake, rtol=1e-5, atol=1e-6)


def test_unknown_loss_is_a_config_error() -> None:
    D = build_discriminator(M, IM)
    c, x = _batch(2, 0)
    with pytest.raises(ConfigError):
        generator_gradient(D, c, x, loss="wgan")


def test_discriminator_step_changes_d_and_moves_real_and_fake_apart() -> None:
    D = build_discriminator(M, IM)
    opt = torch.optim.Adam(D.parameters(), lr=1e-3)
    rc, ri = _batch(4, 1)
    fc, fi = _batch(4, 2)
    before = discriminator_loss(D, rc, ri, fc, fi, loss="bce").mean().item()
    for _ in range(5):
        discriminator_step(D, opt, rc, ri, fc, fi, loss="bce")
    after = discriminator_loss(D, rc, ri, fc, fi, loss="bce").mean().item()
    assert after < before


def test_generator_gradient_takes_no_real_data() -> None:
    params = list(inspect.signature(generator_gradient).parameters)
    assert params == ["D", "fake_cond", "fake_img", "loss"]
    assert inspect.signature(generator_gradient).parameters["loss"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("loss", ["bce", "hinge"])
def test_generator_gradient_leaves_d_grads_untouched_and_matches_autograd(loss: str) -> None:
    D = build_discriminator(M, IM)
    rc, ri = _batch(3, 1)
    fc, fi = _batch(3, 2)
    # give D some existing .grad to make sure it is not modified
    discriminator_loss(D, rc, ri, fc, fi, loss=loss).sum().backward()
    saved = {n: p.grad.clone() for n, p in D.named_parameters()}
    g = generator_gradient(D, fc, fi, loss=loss)
    assert g.shape == fi.shape and g.dtype == torch.float32
    for n, p in D.named_parameters():
        assert torch.equal(p.grad, saved[n]), n
    x = fi.clone().requires_grad_(True)
    generator_loss_rows(D, fc, x, loss=loss).sum().backward()
    torch.testing.assert_close(g, x.grad)
    assert float(g.abs().sum()) > 0


def test_generator_gradient_rows_are_independent_of_batch_size() -> None:
    D = build_discriminator(M, IM)
    fc, fi = _batch(4, 2)
    g4 = generator_gradient(D, fc, fi, loss="bce")
    g1 = generator_gradient(D, fc[:1], fi[:1], loss="bce")
    torch.testing.assert_close(g4[:1], g1, rtol=1e-4, atol=1e-7)


def test_generator_gradient_does_not_record_opacus_grad_samples() -> None:
    D = GradSampleModule(build_discriminator(M, IM), loss_reduction="mean")
    fc, fi = _batch(3, 2)
    generator_gradient(D, fc, fi, loss="bce")
    assert D.hooks_enabled
    for p in D.parameters():
        assert getattr(p, "grad_sample", None) is None
        assert p.grad is None


def _core(seed: int = 0, batch: int = 3) -> GeneratorCore:
    G = build_generator(M, IM, seed=seed)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3)
    return GeneratorCore(G, opt, RandomConditions(16), batch_size=batch, noise_dim=M.noise_dim,
                         generator=torch.Generator().manual_seed(seed))


def test_summing_two_site_replies_equals_backward_of_summed_mean_losses() -> None:
    core = _core()
    D1 = build_discriminator(M, IM, seed=1)
    D2 = build_discriminator(M, IM, seed=2)
    b1 = core.make_batch(run_id="r", round=0, step=0, site="a")
    b2 = core.make_batch(run_id="r", round=0, step=0, site="b")
    assert not torch.equal(b1.cond, b2.cond)  # each site gets fresh conditions
    for site in ("a", "b"):  # both in flight
        with pytest.raises(ProtocolError, match="duplicate_batch"):
            core.make_batch(run_id="r", round=0, step=0, site=site)
    g1 = generator_gradient(D1, b1.cond, b1.fake, loss="bce")
    g2 = generator_gradient(D2, b2.cond, b2.fake, loss="bce")
    core.apply(GradientReply(run_id="r", round=0, step=0, grad=g2), site="b")
    core.apply(GradientReply(run_id="r", round=0, step=0, grad=g1), site="a")
    got = {n: p.grad.clone() for n, p in core.G.named_parameters()}
    # the sites' D parameters received nothing from G's backward
    assert all(p.grad is None for p in (*D1.parameters(), *D2.parameters()))

    # reference: regenerate the same fakes from the same seed, backprop the summed loss directly
    ref = _core()
    gen = torch.Generator().manual_seed(0)
    total = 0
    for D in (D1, D2):
        c = RandomConditions(16).draw(3, generator=gen)
        z = torch.randn(3, M.noise_dim, generator=gen)
        fake = ref.G(c, z)
        total = total + generator_loss_rows(D, c, fake, loss="bce").mean()
    total.backward()
    for n, p in ref.G.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-7)

    before = [p.detach().clone() for p in core.G.parameters()]
    info = core.finish_step()
    assert info["applied"] == 2 and info["dropped"] == 0 and info["stepped"]
    assert any(not torch.equal(a, b) for a, b in zip(before, core.G.parameters()))
    assert all(p.grad is None for p in core.G.parameters())


@pytest.mark.parametrize(
    "bad,code",
    [
        (torch.zeros(3, 4, 16, 8), "bad_shape"),
        (torch.zeros(3, 4, 16, 16, dtype=torch.float64), "bad_dtype"),
        (torch.full((3, 4, 16, 16), float("nan")), "non_finite"),
        (torch.full((3, 4, 16, 16), float("inf")), "non_finite"),
    ],
)
def test_apply_rejects_malformed_gradients_and_keeps_the_batch(bad: torch.Tensor, code: str) -> None:
    core = _core()
    core.make_batch(run_id="r", round=0, step=0)
    with pytest.raises(ProtocolError) as ei:
        core.apply(GradientReply(run_id="r", round=0, step=0, grad=bad))
    assert ei.value.code == code
    assert all(p.grad is None for p in core.G.parameters())
    # the batch is still in flight; a good reply is accepted afterwards
    core.apply(GradientReply(run_id="r", round=0, step=0, grad=torch.zeros(3, 4, 16, 16)))


def test_apply_rejects_unknown_and_duplicate_replies() -> None:
    core = _core()
    core.make_batch(run_id="r", round=0, step=0)
    g = torch.zeros(3, 4, 16, 16)
    with pytest.raises(ProtocolError) as ei:
        core.apply(GradientReply(run_id="r", round=0, step=1, grad=g))
    assert ei.value.code == "unexpected_reply"
    core.apply(GradientReply(run_id="r", round=0, step=0, grad=g))
    with pytest.raises(ProtocolError):
        core.apply(GradientReply(run_id="r", round=0, step=0, grad=g))
    with pytest.raises(ProtocolError, match="duplicate_batch"):
        core.make_batch(run_id="r", round=0, step=1)
        core.make_batch(run_id="r", round=0, step=1)


def test_finish_step_without_replies_does_not_step_and_drops_pending() -> None:
    core = _core()
    core.make_batch(run_id="r", round=0, step=0, site="a")
    before = [p.detach().clone() for p in core.G.parameters()]
    info = core.finish_step()
    assert info == {"applied": 0, "dropped": 1, "grad_norm": 0.0, "stepped": False}
    assert all(torch.equal(a, b) for a, b in zip(before, core.G.parameters()))
    assert not core.drop(run_id="r", round=0, step=0, site="a")  # nothing left in flight


def test_plain_site_learner_serves_a_reply_and_updates_its_discriminator() -> None:
    data = ArrayDataset(5, 16)
    train = TrainConfig(batch_size=3, lr_d=1e-3)
    site = PlainSiteLearner(dataset=data, model=M, image=IM, train=train, generator_seed=7)
    core = _core()
    batch = core.make_batch(run_id="r", round=0, step=0)
    d_before = [p.detach().clone() for p in site.discriminator.parameters()]
    reply = site.serve(batch)
    assert isinstance(reply, GradientReply)
    assert reply.budget_left is None and site.epsilon() is None
    assert (reply.run_id, reply.round, reply.step) == ("r", 0, 0)
    assert reply.grad.shape == batch.fake.shape
    assert len(data.requests) == 1 and len(set(data.requests[0])) == 3
    assert any(not torch.equal(a, b) for a, b in zip(d_before, site.discriminator.parameters()))
    # the reply is exactly the gradient of the updated D for these fakes
    torch.testing.assert_close(reply.grad, generator_gradient(site.discriminator, batch.cond, batch.fake, loss="bce"))
    core.apply(reply)
    assert core.finish_step()["stepped"]


def test_plain_site_learner_is_reproducible_from_its_seed_and_rejects_bad_batches() -> None:
    def run(seed: int) -> list[list[int]]:
        data = ArrayDataset(6, 16)
        site = PlainSiteLearner(dataset=data, model=M, image=IM, train=TrainConfig(batch_size=2), generator_seed=seed)
        core = _core()
        for s in range(3):
            site.serve(core.make_batch(run_id="r", round=0, step=s))
        return data.requests

    assert run(1) == run(1)
    assert run(1) != run(2)
    site = PlainSiteLearner(dataset=ArrayDataset(2, 16), model=M, image=IM, train=TrainConfig(), generator_seed=0)
    bad = FakeBatch(run_id="r", round=0, step=0, cond=torch.zeros(2, 4, 32, 32), fake=torch.zeros(2, 4, 32, 32))
    with pytest.raises(ProtocolError, match="bad_shape"):
        site.serve(bad)
    nan = FakeBatch(run_id="r", round=0, step=0, cond=torch.zeros(2, 4, 16, 16), fake=torch.full((2, 4, 16, 16), float("nan")))
    with pytest.raises(ProtocolError, match="non_finite"):
        site.serve(nan)
    assert dataclasses.is_dataclass(bad)


def test_generator_average_follows_the_exponential_moving_average_of_g() -> None:
    """avg_t = d * avg_{t-1} + (1 - d) * G_t after every G step, starting from G's initial weights;
    it never receives gradients and a step with no reply leaves it alone."""
    G = build_generator(M, IM, seed=0)
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    core = GeneratorCore(G, opt, RandomConditions(16), batch_size=2, noise_dim=M.noise_dim,
                         generator=torch.Generator().manual_seed(0), average=0.5)
    D = build_discriminator(M, IM, seed=1)
    expected = [p.detach().clone() for p in G.parameters()]
    for step in range(3):
        b = core.make_batch(run_id="r", round=step, step=step)
        core.apply(GradientReply(run_id="r", round=step, step=step, grad=generator_gradient(D, b.cond, b.fake, loss="bce")))
        core.finish_step()
        expected = [0.5 * e + 0.5 * p.detach() for e, p in zip(expected, G.parameters())]
    for e, a in zip(expected, core.G_average.parameters()):
        torch.testing.assert_close(a, e)
        assert a.grad is None and not a.requires_grad
    frozen = [a.clone() for a in core.G_average.parameters()]
    core.make_batch(run_id="r", round=9, step=9)
    assert not core.finish_step()["stepped"]
    assert all(torch.equal(a, b) for a, b in zip(frozen, core.G_average.parameters()))
    assert _core().G_average is None  # off by default


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_generator_average_decay_is_checked(bad: float) -> None:
    G = build_generator(M, IM, seed=0)
    with pytest.raises(ConfigError, match="g_average"):
        GeneratorCore(G, torch.optim.Adam(G.parameters()), RandomConditions(16), batch_size=2, noise_dim=M.noise_dim,
                      generator=torch.Generator(), average=bad)

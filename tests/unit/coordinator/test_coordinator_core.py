"""The coordinator's generator core: fakes in flight, replies summed into G, one step per step."""

from __future__ import annotations

import pytest
import torch

from secgan.core.errors import ConfigError, ProtocolError
from secgan.core.spec import ImageSpec
from secgan.gan.config import ModelConfig
from secgan.gan.models import build_discriminator, build_generator
from secgan.gan.step import generator_gradient, generator_loss_rows
from secgan.net.schema import GradientReply

from coordinator.core import GeneratorCore

M = ModelConfig(g_width=8, d_width=8, noise_dim=4, g_depth=2, d_layers=2)
IM = ImageSpec(size=16)


class RandomConditions:
    """Stand-in condition source: random label maps from the explicit generator."""

    def __init__(self, size: int) -> None:
        self.size = size

    def draw(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 4, self.size, self.size, generator=generator) > 0.5).float()


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


def test_make_batch_sets_training_mode_once_not_per_site_and_step():
    """At 71 sites the coordinator makes 71 batches a step: G's mode walk (every module) runs only
    when G is not already training, yet a G left in eval (a preview) trains again."""
    core = _core()
    core.G.eval()
    calls = []
    train = core.G.train
    core.G.train = lambda mode=True: (calls.append(mode), train(mode))[1]
    for site in ("a", "b", "c"):
        core.make_batch(run_id="r", round=1, step=0, site=site)
    assert core.G.training and all(m.training for m in core.G.modules())
    assert calls == [True]

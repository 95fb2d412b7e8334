"""AsynDGAN's 1-D sanity experiment: three sites each hold one component of a Gaussian mixture.

Components (mean, std), equal weights: N(-3, 2), N(1, 1), N(3, 0.5); site j holds samples of
component j only. Compared:
- Syn-Subset-j: a GAN trained on site j's data alone (learns one component);
- Syn-All: one GAN on the pooled data (what centralising the data would give);
- AsynDGAN: one generator, three site discriminators; G's gradient is the sum of the sites'
  ``generator_gradient`` outputs, through the same ``GeneratorCore`` the image runs use;
- AsynDGAN-bce (ablation): the same with the non-saturating generator loss.

Loss: the original minimax loss (``loss = "minimax"``: G minimises log(1 - D_j(fake)) summed over
sites). With optimal discriminators D_j = p_j / (p_j + q) its fixed point is the mixture of the
sites' distributions. The popular non-saturating loss (-log D_j(fake)) is mode-seeking instead:
summed over sites it behaves like sum_j KL(q || p_j), whose minimiser sits where all sites'
distributions overlap, and it collapses onto the middle component here (the ablation shows it).

The networks are tiny MLPs behind the step core's (condition, x) interface with a constant dummy
condition, so nothing here is special-cased. Metrics (fixed seeds):
- W1: ``scipy.stats.wasserstein_distance`` between generated samples and a large sample of the
  true mixture;
- modes covered: a component (mu, sigma) counts as covered if at least ``COVER_FRACTION`` (15%)
  of generated samples fall in [mu - sigma, mu + sigma]. The true mixture puts at least 23% in
  each window, while the widest component alone puts 6% in its neighbour's (and a GAN of it, which
  overshoots its tails, about 10%), so a 5% rule would credit it with a mode it never learnt.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from secgan.net.schema import GradientReply
from secgan.gan.step import discriminator_step, generator_gradient

from coordinator.core import GeneratorCore

MIXTURE: tuple[tuple[float, float], ...] = ((-3.0, 2.0), (1.0, 1.0), (3.0, 0.5))
COVER_FRACTION = 0.15
SCALE = 4.0  # data are divided by this inside the networks


@dataclass(frozen=True)
class GmmConfig:
    steps: int = 1500
    batch_size: int = 128
    samples_per_site: int = 4000
    noise_dim: int = 4
    hidden: int = 32
    lr_g: float = 2e-3
    lr_d: float = 2e-3
    loss: str = "minimax"
    eval_samples: int = 5000
    truth_samples: int = 100_000
    seed: int = 0


class _MLPGenerator(nn.Module):
    def __init__(self, noise_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(noise_dim, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class _MLPDiscriminator(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(1, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, cond: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _NullConditions:
    """The unconditional case: a constant dummy condition of one zero per row."""

    def draw(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(n, 1)


def _init(module: nn.Module, generator: torch.Generator) -> nn.Module:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features**0.5
                m.weight.uniform_(-bound, bound, generator=generator)
                m.bias.uniform_(-bound, bound, generator=generator)
    return module


def site_data(cfg: GmmConfig) -> list[np.ndarray]:
    rng = np.random.default_rng([cfg.seed, 1])
    return [rng.normal(mu, sd, cfg.samples_per_site).astype(np.float32) for mu, sd in MIXTURE]


def true_mixture_sample(n: int, *, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 2])
    comp = rng.integers(0, len(MIXTURE), n)
    mu = np.array([m for m, _ in MIXTURE])[comp]
    sd = np.array([s for _, s in MIXTURE])[comp]
    return rng.normal(mu, sd).astype(np.float32)


def train_gan(sites: list[np.ndarray], cfg: GmmConfig, *, seed: int, loss: str | None = None) -> nn.Module:
    """One generator against one discriminator per entry of ``sites`` (AsynDGAN when there are several)."""
    loss = loss or cfg.loss
    gen = torch.Generator().manual_seed(seed)
    G = _init(_MLPGenerator(cfg.noise_dim, cfg.hidden), gen)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999), foreach=True)
    core = GeneratorCore(G, opt_g, _NullConditions(), batch_size=cfg.batch_size, noise_dim=cfg.noise_dim, generator=gen)
    Ds = [_init(_MLPDiscriminator(cfg.hidden), gen) for _ in sites]
    opts = [torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999), foreach=True) for D in Ds]
    data = [torch.from_numpy(d / SCALE).view(-1, 1) for d in sites]
    rng = np.random.default_rng([seed, 3])
    zeros = torch.zeros(cfg.batch_size, 1)
    for step in range(cfg.steps):
        for j, (D, opt, real_all) in enumerate(zip(Ds, opts, data)):
            batch = core.make_batch(run_id="gmm", round=step, step=step, site=str(j))
            real = real_all[rng.integers(0, real_all.shape[0], cfg.batch_size)]
            discriminator_step(D, opt, zeros, real, batch.cond, batch.fake, loss=loss)
            grad = generator_gradient(D, batch.cond, batch.fake, loss=loss)
            core.apply(GradientReply(run_id="gmm", round=step, step=step, grad=grad), site=str(j))
        core.finish_step()
    return G


def sample(G: nn.Module, n: int, *, noise_dim: int, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = G(torch.zeros(n, 1), torch.randn(n, noise_dim, generator=gen))
    return (x.view(-1).numpy() * SCALE).astype(np.float64)


def mode_fractions(x: np.ndarray) -> list[float]:
    return [float(np.mean(np.abs(x - mu) <= sd)) for mu, sd in MIXTURE]


def evaluate(x: np.ndarray, truth: np.ndarray) -> dict:
    from scipy.stats import wasserstein_distance

    fr = mode_fractions(x)
    return {
        "w1": float(wasserstein_distance(x, truth)),
        "mode_fractions": [round(f, 4) for f in fr],
        "modes_covered": int(sum(f >= COVER_FRACTION for f in fr)),
        "mean": float(np.mean(x)),
        "std": float(np.std(x)),
    }


def run_gmm(cfg: GmmConfig, *, methods: tuple[str, ...] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Train every method, return (results JSON, generated samples per method)."""
    sites = site_data(cfg)
    plan = {f"syn-subset-{j + 1}": [sites[j]] for j in range(len(sites))}
    plan["syn-all"] = [np.concatenate(sites)]
    plan["asyndgan"] = sites
    plan["asyndgan-bce"] = sites
    seeds = {name: cfg.seed * 100 + k for k, name in enumerate(plan)}  # independent of which methods run
    if methods is not None:
        unknown = sorted(set(methods) - set(plan))
        if unknown:
            raise ValueError(f"unknown methods {unknown} (known: {', '.join(plan)})")
        plan = {k: v for k, v in plan.items() if k in methods}
    truth = true_mixture_sample(cfg.truth_samples, seed=cfg.seed)
    results: dict = {
        "config": asdict(cfg),
        "mixture": [{"mean": m, "std": s} for m, s in MIXTURE],
        "cover_rule": f"a component counts as covered if >= {COVER_FRACTION:.0%} of samples lie within one std of its mean",
        "reference": evaluate(true_mixture_sample(cfg.eval_samples, seed=cfg.seed + 1).astype(np.float64), truth),
        "methods": {},
    }
    samples: dict[str, np.ndarray] = {}
    for name, data in plan.items():
        t0 = time.perf_counter()
        G = train_gan(data, cfg, seed=seeds[name], loss="bce" if name == "asyndgan-bce" else None)
        samples[name] = sample(G, cfg.eval_samples, noise_dim=cfg.noise_dim, seed=cfg.seed + 10_000)
        results["methods"][name] = evaluate(samples[name], truth) | {"sites": len(data), "loss": "bce" if name == "asyndgan-bce" else cfg.loss,
                                                                     "seconds": round(time.perf_counter() - t0, 2)}
    return results, samples


def plot_gmm(path: Path, samples: dict[str, np.ndarray], results: dict) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    from secgan.core.fsio import atomic_write_bytes

    xs = np.linspace(-10, 7, 400)
    density = sum(norm.pdf(xs, m, s) for m, s in MIXTURE) / len(MIXTURE)
    names = list(samples)
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 2.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        r = results["methods"][name]
        ax.hist(samples[name], bins=80, range=(-10, 7), density=True, color="tab:blue", alpha=0.6)
        ax.plot(xs, density, color="black", lw=1.2, label="true mixture")
        ax.set_title(f"{name}\nW1 {r['w1']:.2f}, modes {r['modes_covered']}/3", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())

"""GS-WGAN-style gradient sanitisation (mode ``sanitize``; Chen, Orekondy, Fritz, NeurIPS 2020).

The site keeps K discriminators, one per disjoint patient shard (``sampling.patient_shards``). Each
step picks one uniformly at random, trains it *non-privately* on its shard, and releases only

    g~ = clip_rows(g, C) + N(0, sigma^2 C^2 I),   g = dL_G/d(fake) through that D,

where each row of g (one fake sample) is clipped to L2 norm C. The discriminators are never
released; everything sent is g~.

Sensitivity, stated honestly. Adding or removing one patient changes exactly one shard, hence one
discriminator D_k, and it may change it arbitrarily (D_k is trained without privacy). Every one of
the B released rows is computed through that same D_k, so *every* row may move, each by at most
2C (two vectors in the C-ball). The L2 sensitivity of the whole released tensor is therefore
Delta = 2 C sqrt(B), not C: GS-WGAN's per-sample bound covers one row, not a batch of rows that all
depend on one D. We account each release as a Gaussian mechanism with sensitivity Delta, i.e.
with effective noise multiplier sigma_eff = sigma C / Delta = sigma / (2 sqrt(B))
(``effective_noise_multiplier``), which is what the ledger records.

Amplification: proven by default, assumed only on request. Each release is a Gaussian
mechanism of sensitivity Delta whatever shard was picked and whatever state the discriminators are
in: for every fixed value of the hidden picks, neighbouring data sets move the released mean by at
most Delta, and a mixture over picks that do not depend on the data has Renyi divergence at most
the worst component's. So the default accounting charges q = 1 per release (no amplification):
a theorem, independent of K.

GS-WGAN instead charges q = 1/K ("with probability 1 - 1/K the chosen D does not hold the patient").
The standard argument that this amplification survives composition needs each step's state to
depend only on what was released; here the discriminators that were not picked carry state that
depends on which shard was picked earlier, a history that stays hidden, and removing a patient
substitutes one mixture component rather than removing it. That figure is therefore an assumption,
not a proof. A site may opt into it with ``policy.assume_shard_amplification = true``; the ledger
then records the assumption ``sanitize_shard_amplification`` (a bound field: a restart that flips it
is refused), the audit report names it and SECURITY.md states it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from secgan.core.errors import PrivacyError
from secgan.gan.step import discriminator_step, generator_gradient


def effective_noise_multiplier(noise_multiplier: float, *, rows: int) -> float:
    """Noise std over the released tensor's L2 sensitivity 2 C sqrt(rows) (std is sigma C)."""
    if rows < 1:
        raise PrivacyError(f"a release has at least one row, got {rows}")
    return float(noise_multiplier) / (2.0 * math.sqrt(rows))


def gaussian_noise(shape: torch.Size, *, std: float, generator: torch.Generator, secure: bool) -> torch.Tensor:
    """N(0, std^2) from the generator passed in; ``secure`` sums 4 draws / 2 (same std) so the
    low-order bits of one float draw do not reveal the noise (Opacus's secure_mode recipe)."""
    if not secure:
        return torch.normal(0.0, std, size=tuple(shape), generator=generator)
    out = torch.zeros(tuple(shape))
    for _ in range(4):
        out += torch.normal(0.0, std, size=tuple(shape), generator=generator)
    return out / 2.0


def clip_rows(g: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """Scale each row (dim 0) to L2 norm at most ``clip_norm``. A row holding a non-finite entry
    becomes zero: it stays inside the C-ball, so the sensitivity argument above is unchanged and
    the release is never NaN."""
    finite = torch.isfinite(g.flatten(1)).all(dim=1)
    if not bool(finite.all()):
        g = torch.where(finite.view(-1, *([1] * (g.dim() - 1))), g, torch.zeros((), dtype=g.dtype, device=g.device))
    norms = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (clip_norm / norms).clamp(max=1.0)
    return g * factor.view(-1, *([1] * (g.dim() - 1)))


def sanitized_gradient(
    D: nn.Module,
    fake_cond: torch.Tensor,
    fake_img: torch.Tensor,
    *,
    loss: str,
    clip_norm: float,
    noise_multiplier: float,
    generator: torch.Generator,
    secure: bool = True,
) -> torch.Tensor:
    """The released gradient: row-clipped dL_G/d(fake) through D plus Gaussian noise. No real data."""
    g = generator_gradient(D, fake_cond, fake_img, loss=loss).cpu()
    noise = gaussian_noise(g.shape, std=noise_multiplier * clip_norm, generator=generator, secure=secure)
    return (clip_rows(g, clip_norm) + noise).to(torch.float32)


class ShardedDiscriminators:
    """K discriminators, one per disjoint patient shard, each with its own optimiser."""

    def __init__(self, discriminators: list[nn.Module], shard_of: np.ndarray, *, lr: float, betas: tuple[float, float]) -> None:
        self.discriminators = discriminators
        self.optimizers = [torch.optim.Adam(D.parameters(), lr=lr, betas=betas) for D in discriminators]
        self.shard_of = np.asarray(shard_of, dtype=np.int64)
        self.members = [np.flatnonzero(self.shard_of == k) for k in range(len(discriminators))]

    @property
    def k(self) -> int:
        return len(self.discriminators)

    def pick(self, generator: np.random.Generator) -> int:
        """Uniform choice of a discriminator (q = 1/K for every patient)."""
        return int(generator.integers(self.k))

    def train_step(self, k: int, real_cond, real_img, fake_cond, fake_img, *, loss: str) -> None:
        """Non-private step of D_k on its own shard's rows (nothing of D_k is released)."""
        discriminator_step(self.discriminators[k], self.optimizers[k], real_cond, real_img, fake_cond, fake_img, loss=loss)

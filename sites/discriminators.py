"""A site's discriminator(s) for its privacy mode, built fresh (from ``train.init_from``'s pretrained
D when there is no saved state yet), with the policy's frozen stages.

- "off": one D with a plain Adam;
- "dpsgd": one D wrapped for DP-SGD (``secgan.privacy.dpsgd``: Opacus, per-sample clipping, noise);
- "sanitize": one non-private D per disjoint patient shard (``secgan.privacy.sanitize``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from secgan.core.logs import get_logger
from secgan.core.spec import ImageSpec
from secgan.gan.config import ModelConfig, TrainConfig
from secgan.gan.models import build_discriminator
from secgan.privacy.policy import PrivacyPolicy
from secgan.privacy.sampling import patient_shards

log = get_logger("sites.learner")

Modules = list[tuple[torch.nn.Module, torch.optim.Optimizer]]


def derive_seed(*parts: int | str) -> int:
    h = hashlib.sha256("\0".join(str(p) for p in parts).encode())
    return int.from_bytes(h.digest()[:8], "big") >> 1


def build_discriminators(
    *,
    policy: PrivacyPolicy,
    model: ModelConfig,
    image: ImageSpec,
    train: TrainConfig,
    dataset: Any,
    seed: int,
    device: torch.device,
    fresh: bool,
    noise_multiplier: float | None,
    sample_rate: float | None,
    noise_generator: torch.Generator,
) -> tuple[Any, Any, Modules]:
    """(the DP-SGD wrapper or None, the shard set or None, [(module, optimiser)] in save order)."""
    betas = (train.beta1, train.beta2)

    def prepare(D: torch.nn.Module) -> torch.nn.Module:
        if train.init_from and fresh:
            from secgan.gan.pretrained import init_discriminator

            init_discriminator(train.init_from, D, model=model, image=image)
        if policy.freeze_d_stages:
            from secgan.gan.models import freeze_discriminator_stages

            freeze_discriminator_stages(D, policy.freeze_d_stages)
        return D

    if policy.mode == "sanitize":
        from secgan.privacy.sanitize import ShardedDiscriminators

        Ds = [prepare(build_discriminator(model, image, seed=derive_seed(seed, "D", k)).to(device))
              for k in range(policy.shards)]
        shards = ShardedDiscriminators(Ds, patient_shards(dataset, shards=policy.shards, seed=seed), lr=train.lr_d,
                                       betas=betas)
        if any(len(m) == 0 for m in shards.members):
            log.warning("sanitize_empty_shard", shards=policy.shards, patient_count=dataset.n_patients)
        return None, shards, list(zip(Ds, shards.optimizers))
    D = prepare(build_discriminator(model, image, seed=seed).to(device))
    if policy.mode == "dpsgd":
        from secgan.privacy.dpsgd import DPSGDDiscriminator

        dp = DPSGDDiscriminator(D, lr=train.lr_d, betas=betas, noise_multiplier=noise_multiplier,
                                clip_norm=policy.clip_norm, expected_batch_size=policy.expected_batch_size,
                                sample_rate=sample_rate, noise_generator=noise_generator,
                                secure_noise=policy.secure_noise, grad_sample_mode=policy.grad_sample_mode)
        return dp, None, [(dp.module, dp.optimizer)]
    return None, None, [(D, torch.optim.Adam(D.parameters(), lr=train.lr_d, betas=betas))]

"""Distributed Gaussian noise for secure-sum rounds with the ``sanitize`` mode.

Each site adds a share N(0, s^2) with s = sigma_total / sqrt(t), t the round threshold, so any t
honest sites together contribute at least the full N(0, sigma_total^2); with n >= t participants
the sum carries sigma_total * sqrt(n / t) (the slack, paid in utility, that lets the round survive
n - t dropouts). The guarantee rests on an assumption that the ledger and the reports must state:
the coordinator follows the protocol (in particular it does not claim a false dropout to obtain two
sums over nested sets) and at least t participants of each round are honest (they add their share
and do not reveal it).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from secgan.core.errors import ConfigError

ASSUMPTION = (
    "distributed noise: the coordinator follows the secure-sum protocol (relays keys from the "
    "signed manifest, does not fake dropouts) and at least the threshold of sites in every round "
    "is honest and adds its noise share"
)


def noise_share_std(sigma_total: float, *, threshold: int) -> float:
    """Per-site noise standard deviation so that any `threshold` shares sum to sigma_total."""
    if not (math.isfinite(sigma_total) and sigma_total >= 0):
        raise ConfigError(f"secure-sum: sigma_total must be finite and >= 0, got {sigma_total}")
    if threshold < 1:
        raise ConfigError(f"secure-sum: threshold must be >= 1, got {threshold}")
    return sigma_total / math.sqrt(threshold)


def draw_noise_share(shape: tuple[int, ...], std: float, *, generator: torch.Generator,
                     secure: bool = True) -> np.ndarray:
    """float64 Gaussian share N(0, std^2) from the caller's generator (never the global RNG).

    ``secure`` (the site's ``policy.secure_noise``, as for DP-SGD and sanitize noise): the sum of
    4 draws halved, same std, so the low-order bits of one draw do not reveal it."""
    if std == 0:
        return np.zeros(shape, dtype=np.float64)
    if not secure:
        return (torch.randn(shape, generator=generator, dtype=torch.float64) * std).numpy()
    out = torch.zeros(shape, dtype=torch.float64)
    for _ in range(4):
        out += torch.randn(shape, generator=generator, dtype=torch.float64)
    return (out * (std / 2.0)).numpy()


def distributed_noise_statement(*, sigma_total: float, threshold: int, participants: int) -> dict:
    """What the ledger and the audit report record about a distributed-noise release."""
    if participants < threshold:
        raise ConfigError("secure-sum: participants below threshold")
    share = noise_share_std(sigma_total, threshold=threshold)
    return {
        "noise": "distributed",
        "sigma_total": sigma_total,
        "sigma_share": share,
        "threshold": threshold,
        "participants": participants,
        "sigma_effective": share * math.sqrt(participants),
        "variance_slack": participants / threshold,  # >= 1: extra noise kept for dropouts
        "assumption": ASSUMPTION,
    }

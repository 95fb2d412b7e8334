"""Projecting real images into a generator (GAN inversion by optimisation).

For each image x with its own condition c, find the noise vector z under which the frozen G best
reconstructs it: Adam on z alone from ``restarts`` random starts, ``steps`` steps each, minimising
the mean squared error of G(c, z) to x; the best start is kept. G is never updated: it runs in eval
mode with every weight's ``requires_grad`` off, and both are restored afterwards.

Every start is drawn up front from the ``torch.Generator`` passed in (``[restarts, N, noise_dim]``,
standard normal), so the result depends on that generator's state and the images, not on the batch
size. The one loop the audits' projection attack and the authenticity check of
:mod:`secgan.evaluation.projection` share.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

DEFAULT_STEPS = 30
DEFAULT_RESTARTS = 2
DEFAULT_LR = 0.1
DEFAULT_BATCH = 128


@contextmanager
def frozen(G: nn.Module) -> Iterator[nn.Module]:
    """G in eval mode with no gradient to its weights; its modes and flags restored on exit."""
    modes = [(m, m.training) for m in G.modules()]
    flags = [(p, p.requires_grad) for p in G.parameters()]
    G.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield G
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def invert(
    G: nn.Module,
    images,
    conds,
    *,
    noise_dim: int,
    generator: torch.Generator,
    restarts: int = DEFAULT_RESTARTS,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    batch: int = DEFAULT_BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """(best MSE per image ``[N]`` float64, its z ``[N, noise_dim]`` float32) (module doc).

    ``images`` ``[N, C, H, W]`` and ``conds`` ``[N, K, h, w]`` as G takes them; the caller checks
    them (shapes, ranges) against its image spec."""
    x_all = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    c_all = torch.as_tensor(np.asarray(conds), dtype=torch.float32)
    n_all = len(x_all)
    starts = torch.randn((restarts, n_all, noise_dim), generator=generator)
    best = np.full(n_all, np.inf)
    best_z = np.zeros((n_all, noise_dim), dtype=np.float32)
    with frozen(G), torch.enable_grad():
        for i in range(0, n_all, batch):
            x, c = x_all[i : i + batch], c_all[i : i + batch]
            n = len(x)
            xr, cr = x.repeat(restarts, 1, 1, 1), c.repeat(restarts, 1, 1, 1)
            z = starts[:, i : i + n].reshape(restarts * n, noise_dim).clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            for _ in range(steps):
                err = ((G(cr, z) - xr) ** 2).flatten(1).mean(1)
                opt.zero_grad(set_to_none=True)
                err.sum().backward()
                opt.step()
            with torch.no_grad():
                err = ((G(cr, z) - xr) ** 2).flatten(1).mean(1).reshape(restarts, n)
                pick = err.argmin(0)
                best[i : i + n] = err.min(0).values.double().numpy()
                best_z[i : i + n] = z.detach().reshape(restarts, n, noise_dim)[pick, torch.arange(n)].numpy()
    return best, best_z

"""The pure step functions of AsynDGAN, both halves. Pure: no I/O, no globals, no role state.

Site half (runs next to the data):
- ``discriminator_loss`` / ``discriminator_step`` update D_j on real pairs against received fakes;
- ``generator_gradient`` computes g_j = dL_G/d(fake) through D_j. It takes no real data, by its
  signature, so everything it returns is post-processing of D_j and the received fakes.
The site's learner (every privacy mode) that calls them is ``sites.learner.SiteLearner``; the
coordinator's half, G with its optimiser and the fakes in flight, is ``coordinator.core.GeneratorCore``.

Loss scaling (why summing at the coordinator is right): a site returns the gradient of the
*sum over rows* of the per-row generator loss (each row's loss is the mean over its patches). Row i
of g_j is then exactly d loss_i / d fake_i, independent of the batch size, which is what per-row
clipping in ``sanitize`` mode needs. The coordinator divides by the batch's row count before
``fake.backward``, so each site contributes the *mean* loss over its batch and G minimises
sum_j mean_rows(L_G through D_j): the AsynDGAN objective with equal site weights. Summing replies
(several routed batches, or one secure-sum total of the same batch) is thus just gradient summation.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from secgan.core.errors import ConfigError
from secgan.gan.config import LOSSES


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def _patch_mean(logits: torch.Tensor) -> torch.Tensor:
    return logits.flatten(1).mean(dim=1)


def _semantic_rows(logits: torch.Tensor, cond: torch.Tensor, *, fake_target: bool) -> torch.Tensor:
    """Per-row class-balanced pixel cross-entropy of a semantic D (OASIS), shape ``[B]``.

    Targets: the condition's class per pixel, or the extra "fake" class. Each pixel is weighted by
    the inverse frequency of its condition class *within its own row* (weights average to 1 over
    the row), so a few tumour pixels count as much as the whole background. Row-local on purpose:
    a batch-level weight would make one patient's loss depend on the other rows, breaking
    per-patient clipping.
    """
    from secgan.gan.models import semantic_labels

    lab = semantic_labels(cond)
    n_cls = logits.shape[1] - 1
    counts = F.one_hot(lab.flatten(1), n_cls).sum(dim=1).to(logits.dtype)  # [B, n_cls]
    present = (counts > 0).sum(dim=1, keepdim=True).to(logits.dtype)
    weight = torch.where(counts > 0, (lab.shape[1] * lab.shape[2]) / (present * counts.clamp(min=1)), torch.zeros_like(counts))
    pix_w = weight.gather(1, lab.flatten(1)).view_as(lab)
    target = torch.full_like(lab, n_cls) if fake_target else lab
    ce = F.cross_entropy(logits, target, reduction="none")
    return (pix_w * ce).flatten(1).mean(dim=1)


def discriminator_loss(
    D: nn.Module,
    real_cond: torch.Tensor,
    real_img: torch.Tensor,
    fake_cond: torch.Tensor,
    fake_img: torch.Tensor,
    *,
    loss: str,
) -> torch.Tensor:
    """Per-row D losses, shape ``[n_real + n_fake]``: real rows first, then fake rows.

    One forward pass over cat(real, fake), so with Opacus row k of the batch is sample k: each real
    patient is exactly one row (one slice per sampled patient) and is clipped as one unit.
    Each row's loss is the mean over its patches. ``fake_img`` is detached: D's step never
    reaches G.
    """
    _check_loss(loss)
    n_real = real_img.shape[0]
    cond = torch.cat([real_cond, fake_cond.detach()], dim=0)
    img = torch.cat([real_img, fake_img.detach()], dim=0)
    logits = D(cond, img)
    if loss == "semantic":
        return torch.cat([
            _semantic_rows(logits[:n_real], cond[:n_real], fake_target=False),
            _semantic_rows(logits[n_real:], cond[n_real:], fake_target=True),
        ])
    target_real = torch.ones(n_real, dtype=torch.bool, device=logits.device)
    target = torch.cat([target_real, torch.zeros(img.shape[0] - n_real, dtype=torch.bool, device=logits.device)])
    sign = torch.where(target, -1.0, 1.0).to(logits.dtype).view(-1, *([1] * (logits.dim() - 1)))
    if loss in ("bce", "minimax"):
        # real: -log sigmoid(l) = softplus(-l); fake: -log(1 - sigmoid(l)) = softplus(l)
        per_patch = F.softplus(sign * logits)
    else:
        # hinge: real relu(1 - l), fake relu(1 + l)
        per_patch = F.relu(1.0 + sign * logits)
    return _patch_mean(per_patch)


def discriminator_step(
    D: nn.Module,
    optimizer: torch.optim.Optimizer,
    real_cond: torch.Tensor,
    real_img: torch.Tensor,
    fake_cond: torch.Tensor,
    fake_img: torch.Tensor,
    *,
    loss: str,
    reduction: str = "mean",
) -> None:
    """zero_grad, backward of the reduced per-row loss, optimiser step.

    ``reduction`` ("mean" over all rows, or "sum") must match the ``loss_reduction`` an Opacus
    wrapper of D was made with, so its per-sample gradients come out unscaled. Returns nothing on
    purpose: the loss on real rows is a real-data statistic and must not leave the site.
    """
    if reduction not in ("mean", "sum"):
        raise ConfigError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    optimizer.zero_grad(set_to_none=True)
    per_row = discriminator_loss(D, real_cond, real_img, fake_cond, fake_img, loss=loss)
    total = per_row.mean() if reduction == "mean" else per_row.sum()
    total.backward()
    optimizer.step()


@contextlib.contextmanager
def _hooks_off(D: nn.Module) -> Iterator[None]:
    """Switch off Opacus's per-sample hooks while G's gradient flows through D.

    Otherwise a GradSampleModule would record grad_sample for this backward pass and mix it into
    D's next private step.
    """
    if hasattr(D, "hooks_enabled") and hasattr(D, "disable_hooks"):
        was = D.hooks_enabled
        D.disable_hooks()
        try:
            yield
        finally:
            if was:
                D.enable_hooks()
    else:
        yield


def generator_loss_rows(D: nn.Module, fake_cond: torch.Tensor, fake_img: torch.Tensor, *, loss: str) -> torch.Tensor:
    """Per-row generator loss ``[B]`` (mean over patches).

    - "bce": non-saturating, -log D(fake) = softplus(-l). Strong early gradients, but against several
      site discriminators it is mode-seeking: G drifts to where *all* sites' data overlap;
    - "minimax": the original saturating log(1 - D(fake)) = -softplus(l). Against several sites its
      fixed point is the mixture of the sites' distributions (AsynDGAN's theorem), see ``secgan.simulation.gmm``;
    - "hinge": -D(fake);
    - "semantic" (with the semantic D): class-balanced cross-entropy of each fake pixel against the
      class its label map asks for, i.e. "look like an enhancing rim here", pixel by pixel.
    """
    _check_loss(loss)
    logits = D(fake_cond, fake_img)
    if loss == "semantic":
        return _semantic_rows(logits, fake_cond, fake_target=False)
    if loss == "bce":
        per_patch = F.softplus(-logits)
    elif loss == "minimax":
        per_patch = -F.softplus(logits)
    else:
        per_patch = -logits
    return _patch_mean(per_patch)


def generator_gradient(D: nn.Module, fake_cond: torch.Tensor, fake_img: torch.Tensor, *, loss: str) -> torch.Tensor:
    """g = d(sum over rows of the generator loss)/d(fake), same shape as ``fake_img``.

    Differentiates with respect to a detached copy of the fakes only (``torch.autograd.grad``), so
    D's parameters' ``.grad`` and any Opacus per-sample state are left exactly as they were. Takes
    no real data.
    """
    x = fake_img.detach().clone().requires_grad_(True)
    c = fake_cond.detach()
    with torch.enable_grad(), _hooks_off(D):
        total = generator_loss_rows(D, c, x, loss=loss).sum()
        (grad,) = torch.autograd.grad(total, [x])
    return grad.detach()

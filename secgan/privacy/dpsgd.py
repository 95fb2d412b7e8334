"""DP-SGD on a site's discriminator with Opacus (mode ``dpsgd``).

Accounting choice (why the fakes do not change q or the sensitivity). One D step is one forward
pass over cat(real rows, fake rows), where the real rows are one slice per Poisson-sampled
patient and the fake rows are the coordinator's batch. Opacus clips every row's gradient to C and
adds N(0, sigma^2 C^2) to the sum. Adding or removing one patient adds or removes at most one real
row, so the sum moves by at most C: the sampled Gaussian mechanism with rate q = E / patients and
noise multiplier sigma, exactly what ``accounting.epsilon_rdp`` computes. The fake rows are
functions of the coordinator's G, i.e. of earlier (already accounted) releases and public noise;
their clipped gradients are a data-independent shift of the sum and cost nothing. An empty sample
(no real rows) still runs the step with the fake rows: the noise is added and the step is
accounted like any other.

Several slices per patient (``PrivacyPolicy.slices_per_patient`` = k): real rows come in
patient-major, ``[patients, k, 4, H, W]``; all ``patients * k`` rows go through one forward pass,
then each patient's k per-sample gradients are averaged into ONE row before Opacus clips
(``secgan.privacy.multislice.group_patient_rows``), so the argument above holds unchanged. A 4-D
real batch is one slice per patient (k = 1). Expanded weights ("ew") keep no per-sample gradient
to group, so k > 1 is refused with it (the policy refuses it at config time too).

Per-sample state hygiene: ``zero_grad`` before every step (Opacus keeps grad_sample across
backward passes otherwise), and G's gradient is computed with the per-sample hooks off
(``secgan.gan.step.generator_gradient`` does that) so it never leaks into the next private step.
Noise is drawn from the ``torch.Generator`` passed in, never the global RNG.
"""

from __future__ import annotations

import warnings

import torch
from opacus.accountants import RDPAccountant
from opacus.grad_sample.utils import wrap_model
from opacus.optimizers import DPOptimizer
from torch import nn

from secgan.core.errors import PrivacyError
from secgan.gan.step import discriminator_loss
from secgan.privacy.multislice import group_patient_rows
from secgan.privacy.policy import GRAD_SAMPLE_MODES


class DPSGDDiscriminator:
    """D wrapped for per-sample gradients, its DP optimiser, and Opacus's own accountant as a witness.

    ``accountant`` is stepped by the optimiser itself on every noisy step; the site's ledger must
    agree with it (a test checks that it does).
    """

    def __init__(
        self,
        D: nn.Module,
        *,
        lr: float,
        betas: tuple[float, float],
        noise_multiplier: float,
        clip_norm: float,
        expected_batch_size: int,
        sample_rate: float,
        noise_generator: torch.Generator,
        secure_noise: bool = True,
        grad_sample_mode: str = "hooks",
    ) -> None:
        if grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise PrivacyError(f"grad_sample_mode must be one of {', '.join(GRAD_SAMPLE_MODES)}, got {grad_sample_mode!r}")
        if not isinstance(noise_generator, torch.Generator):
            raise PrivacyError("DP noise needs an explicit torch.Generator")
        self.grad_sample_mode = grad_sample_mode
        self.last_rows = 0  # rows the last step clipped: sampled patients + fakes
        # loss_reduction "sum": the per-row losses are summed, so per-sample gradients come out
        # unscaled; the optimiser divides the noisy sum by the expected row count afterwards.
        self.module = wrap_model(D, grad_sample_mode, batch_first=True, loss_reduction="sum")
        self.expected_real = int(expected_batch_size)
        self.sample_rate = float(sample_rate)
        self.optimizer = DPOptimizer(
            torch.optim.Adam(self.module.parameters(), lr=lr, betas=betas),
            noise_multiplier=float(noise_multiplier),
            max_grad_norm=float(clip_norm),
            expected_batch_size=self.expected_real,
            loss_reduction="mean",
            generator=noise_generator,
            secure_mode=secure_noise,
        )
        self.accountant = RDPAccountant()
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))

    @property
    def plain(self) -> nn.Module:
        """The wrapped discriminator itself (for saving, audits and G's gradient)."""
        return self.module._module

    @property
    def for_gradient(self) -> nn.Module:
        """What G's gradient is computed through: the hooked wrapper (its hooks get switched off by
        ``generator_gradient``) or, for expanded weights, the plain module."""
        return self.module if hasattr(self.module, "disable_hooks") else self.plain

    def step(
        self,
        real_cond: torch.Tensor,
        real_img: torch.Tensor,
        fake_cond: torch.Tensor,
        fake_img: torch.Tensor,
        *,
        loss: str,
    ) -> None:
        """One DP-SGD step on D: real patients (possibly none) and fake rows in one clipped batch.

        ``real_cond`` / ``real_img``: ``[patients, 4, H, W]`` (one slice each) or
        ``[patients, k, 4, H, W]`` (k slices each, averaged into one clipped row per patient).
        """
        if real_img.dim() != real_cond.dim() or tuple(real_img.shape[:-3]) != tuple(real_cond.shape[:-3]):
            raise PrivacyError("real images and label maps must have the same patient (and slice) dimensions")
        if real_img.dim() == 5:
            patients, k = int(real_img.shape[0]), int(real_img.shape[1])
            real_img, real_cond = real_img.flatten(0, 1), real_cond.flatten(0, 1)
        elif real_img.dim() == 4:
            patients, k = int(real_img.shape[0]), 1
        else:
            raise PrivacyError(f"real rows must be [patients, 4, H, W] or [patients, k, 4, H, W], got {tuple(real_img.shape)}")
        if k > 1 and self.grad_sample_mode == "ew":
            raise PrivacyError("slices_per_patient > 1 needs per-sample gradients: grad_sample_mode 'hooks' or "
                               "'functorch', not 'ew'")
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        per_row = discriminator_loss(self.module, real_cond, real_img, fake_cond, fake_img, loss=loss)
        with warnings.catch_warnings():
            # Opacus's hooks fire on D's first layer although its inputs need no gradient: expected.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            per_row.sum().backward()
        if k > 1:  # each patient's k per-sample gradients -> their mean, ONE row (before the clip)
            group_patient_rows(self.optimizer.params, patients=patients, k=k,
                               flat_grad_sample=self.optimizer._get_flat_grad_sample)
        self.last_rows = len(self.optimizer.grad_samples[0]) if self.grad_sample_mode != "ew" else patients + int(fake_img.shape[0])
        # Mean over the rows expected in a batch (E real + the public fake count), a data-independent
        # normaliser; the realised real count would leak the sample size.
        self.optimizer.expected_batch_size = self.expected_real + int(fake_img.shape[0])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

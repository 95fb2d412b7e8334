"""One AsynDGAN step, split into its site half and its coordinator half. Pure: no I/O, no globals.

Site side (runs next to the data):
- ``discriminator_loss`` / ``discriminator_step`` update D_j on real pairs against received fakes;
- ``generator_gradient`` computes g_j = dL_G/d(fake) through D_j. It takes no real data, by its
  signature, so everything it returns is post-processing of D_j and the received fakes.

Coordinator side: ``GeneratorCore`` draws conditions, computes fake = G(c, z), keeps the graph,
back-propagates each returned g_j and steps G's optimiser once per step.

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
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from secgan.core.errors import ConfigError, DataError, ProtocolError
from secgan.net.codec import all_finite, check_tensors
from secgan.net.schema import FakeBatch, GradientReply, Refusal
from secgan.gan.config import LOSSES, ModelConfig, TrainConfig
from secgan.core.spec import ImageSpec


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


# ---------------------------------------------------------------------------------------------
# coordinator side


class ConditionSource(Protocol):
    def draw(self, n: int, *, generator: torch.Generator) -> torch.Tensor: ...


def _frozen_copy(G: nn.Module) -> nn.Module:
    import copy

    avg = copy.deepcopy(G)
    for p in avg.parameters():
        p.requires_grad_(False)
    return avg.eval()


def moment_loss(fake: torch.Tensor, cond: torch.Tensor, moments: dict[str, torch.Tensor]) -> torch.Tensor:
    """Squared distance between the fakes' per-class, per-modality mean and std (over the batch's
    pixels of each class of ``cond``) and the target ``moments`` ([classes, 4] ``mean`` and ``std``,
    classes ``secgan.privacy.stats.STATS_CLASSES``); classes absent from the batch are left out."""
    from secgan.gan.models import semantic_labels

    lab = semantic_labels(cond)
    total = fake.new_zeros(())
    for c in range(moments["mean"].shape[0]):
        mask = lab == c + 1  # class c of the statistics is SEMANTIC_CLASSES[c + 1] (no background)
        if int(mask.sum()) < 2:
            continue
        px = fake.permute(1, 0, 2, 3)[:, mask]  # [4, n]
        total = total + ((px.mean(dim=1) - moments["mean"][c]) ** 2).sum()
        total = total + ((px.std(dim=1) - moments["std"][c]) ** 2).sum()
    return total


class GeneratorCore:
    """G, its optimiser and the fakes in flight for the current step.

    Several batches can be in flight in one step, one per site (each with its own fresh
    conditions and noise), told apart by ``site``. ``apply`` back-propagates a reply's gradient into
    G's ``.grad`` (accumulating); ``finish_step`` steps the optimiser once and forgets the step.
    """

    def __init__(
        self,
        G: nn.Module,
        optimizer: torch.optim.Optimizer,
        conditions: ConditionSource,
        *,
        batch_size: int,
        noise_dim: int,
        generator: torch.Generator,
        device: str | torch.device = "cpu",
        average: float = 0.0,
        moments: dict[str, Any] | None = None,
        moment_weight: float = 0.0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= average < 1.0:
            raise ConfigError(f"g_average must be in [0, 1), got {average}")
        self.G = G
        # exponential moving average of G's weights (None when off); updated after every G step
        self.average_decay = float(average)
        self.G_average = _frozen_copy(G) if average > 0 else None
        self.optimizer = optimizer
        self.conditions = conditions
        self.batch_size = batch_size
        self.noise_dim = noise_dim
        self.generator = generator
        self.device = torch.device(device)
        self._pending: dict[tuple[str, int, int, str], torch.Tensor] = {}
        self._applied = 0
        # target per-class per-modality mean and std of the fakes (the sites' DP statistics, averaged)
        self.moment_weight = float(moment_weight)
        self.moments = None
        if moments is not None and self.moment_weight > 0:
            self.moments = {k: torch.as_tensor(np.asarray(moments[k]), dtype=torch.float32, device=self.device)
                            for k in ("mean", "std")}
        self.optimizer.zero_grad(set_to_none=True)

    def restore_average(self, state: dict[str, torch.Tensor] | None) -> None:
        """On resume, after G's weights are loaded: the moving average from the checkpoint, or, when
        the checkpoint kept none, a fresh one from G's current weights. No-op when it is off."""
        if self.G_average is not None:
            self.G_average.load_state_dict(state if state is not None else self.G.state_dict())

    def make_batch(self, *, run_id: str, round: int, step: int, site: str = "") -> FakeBatch:
        """Fresh conditions and noise, fake = G(c, z) with its graph kept until the reply arrives."""
        key = (run_id, round, step, site)
        if key in self._pending:
            raise ProtocolError("duplicate_batch", f"a batch for round {round} step {step} is already in flight")
        self.G.train()
        cond = self.conditions.draw(self.batch_size, generator=self.generator).to(torch.float32)
        z = torch.randn(self.batch_size, self.noise_dim, generator=self.generator, dtype=torch.float32)
        fake = self.G(cond.to(self.device), z.to(self.device))
        if self.moments is not None:  # accumulates into G's grads; stepped with the replies in finish_step
            (self.moment_weight * moment_loss(fake, cond.to(self.device), self.moments)).backward(retain_graph=True)
        self._pending[key] = fake
        return FakeBatch(run_id=run_id, round=round, step=step, cond=cond.cpu(), fake=fake.detach().cpu())

    def drop(self, *, run_id: str, round: int, step: int, site: str = "") -> bool:
        """Forget a batch whose site refused or timed out (frees its graph)."""
        return self._pending.pop((run_id, round, step, site), None) is not None

    def check(self, reply: GradientReply, *, site: str = "") -> torch.Tensor:
        """The one check of a reply against what was sent (ProtocolError; the batch stays in flight):
        a batch of this (run, round, step, site) is in flight and the gradient is a float32 tensor of
        the fake's shape with finite values (the codec's own ``all_finite``: on the in-process path,
        and for the toy GMM's fakes that are not images, no codec ran). Returns the fake."""
        fake = self._pending.get((reply.run_id, reply.round, reply.step, site))
        if fake is None:
            raise ProtocolError("unexpected_reply", f"no batch in flight for round {reply.round} step {reply.step}")
        grad = reply.grad
        if not isinstance(grad, torch.Tensor):
            raise ProtocolError("bad_type", "gradient is not a tensor")
        if grad.dtype != torch.float32:
            raise ProtocolError("bad_dtype", f"gradient dtype {grad.dtype} is not float32")
        if tuple(grad.shape) != tuple(fake.shape):
            raise ProtocolError("bad_shape", f"gradient shape {tuple(grad.shape)} != fake shape {tuple(fake.shape)}")
        if not all_finite(grad):
            raise ProtocolError("non_finite", "gradient has NaN or infinite entries")
        return fake

    def apply(self, reply: GradientReply, *, site: str = "") -> None:
        fake = self.check(reply, site=site)
        grad = reply.grad
        del self._pending[(reply.run_id, reply.round, reply.step, site)]
        fake.backward(grad.to(fake.device) / fake.shape[0])
        self._applied += 1

    def finish_step(self) -> dict[str, Any]:
        """Step G once if any reply was applied; drop whatever is still in flight."""
        dropped = len(self._pending)
        self._pending.clear()
        applied = self._applied
        grad_norm = 0.0
        if applied:
            sq = [p.grad.pow(2).sum() for p in self.G.parameters() if p.grad is not None]
            grad_norm = float(torch.sqrt(torch.stack(sq).sum())) if sq else 0.0
            self.optimizer.step()
            if self.G_average is not None:
                with torch.no_grad():
                    for avg, p in zip(self.G_average.parameters(), self.G.parameters()):
                        avg.lerp_(p.detach(), 1.0 - self.average_decay)
        self.optimizer.zero_grad(set_to_none=True)
        self._applied = 0
        return {"applied": applied, "dropped": dropped, "grad_norm": grad_norm, "stepped": bool(applied)}


# ---------------------------------------------------------------------------------------------
# the plain (mode "off") site learner


# The values a site accepts in a FakeBatch, checked before anything is charged or trained on.
# fake: G ends in tanh (secgan.gan.models.ConditionalGenerator), like the real images in [-1, 1];
# cond: one-hot label maps (secgan.core.spec), resampled ones stay in [0, 1].
VALUE_RANGES: dict[str, tuple[float, float]] = {"fake": (-1.0, 1.0), "cond": (0.0, 1.0)}


def check_fake_batch(msg: FakeBatch, image: ImageSpec, *, max_batch: int = 4096) -> None:
    """The checks a site runs on a received batch before anything is charged (ProtocolError).

    First the schema's tensor checks (float32, cond and fake both the same [B, 4, H, W], finite:
    ``codec.check_tensors``, the codec's own, for the in-process path where no codec ran), then what
    only the site knows: its image size, a batch size in [1, max_batch], and the value ranges.
    Finite values far outside the generator's range (e.g. 3e38) would overflow D's update and
    poison it, so they are refused (``out_of_range``) like NaN (``non_finite``)."""
    check_tensors(msg)
    b, _, h, w = msg.fake.shape
    if h != image.size or w != image.size:
        raise ProtocolError("bad_shape", f"batch shape {tuple(msg.fake.shape)} is not [B, 4, {image.size}, {image.size}]")
    if not 1 <= b <= max_batch:
        raise ProtocolError("bad_shape", f"batch size {b} out of range")
    for name in ("cond", "fake"):
        t = getattr(msg, name)
        lo, hi = VALUE_RANGES[name]
        if bool((t < lo).any()) or bool((t > hi).any()):
            raise ProtocolError("out_of_range", f"{name} has values outside [{lo:g}, {hi:g}]")


class PlainSiteLearner:
    """A site without differential privacy (policy mode "off"): no ledger, epsilon None.

    Samples ``train.batch_size`` distinct patients per step (all of them if it has fewer), one
    tumour-bearing slice each, updates D, returns the gradient for the received fakes.
    """

    def __init__(
        self,
        *,
        dataset: Any,
        model: ModelConfig,
        image: ImageSpec,
        train: TrainConfig,
        generator_seed: int,
        device: str = "cpu",
        state_dir: Path | None = None,
    ) -> None:
        from secgan.gan.models import build_discriminator

        if dataset.n_patients < 1:
            raise ConfigError("the site has no patients to train on")
        self.dataset = dataset
        self.image = image
        self.train = train
        self.device = torch.device(device)
        self.rng = np.random.default_rng(generator_seed)
        self.discriminator = build_discriminator(model, image).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=train.lr_d, betas=(train.beta1, train.beta2)
        )
        self.steps_served = 0
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if self.state_dir is not None and (self.state_dir / self.STATE_FILE).is_file():
            self._load()
        elif train.init_from:  # only a fresh D starts from the pretrained one
            from secgan.gan.pretrained import init_discriminator

            init_discriminator(train.init_from, self.discriminator, model=model, image=image)

    STATE_FILE = "discriminator.safetensors"

    def _load(self) -> None:
        from secgan.gan.checkpoint import load_module_state

        path = self.state_dir / self.STATE_FILE
        meta = load_module_state(path, self.discriminator, self.optimizer)
        try:
            self.rng.bit_generator.state = meta["rng"]
            self.steps_served = int(meta["steps_served"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: site state is malformed ({exc})") from None

    def refuses_source(self, name: str) -> str | None:
        return None

    def epsilon(self) -> float | None:
        return None

    def save(self) -> None:
        """Persist D, its optimiser and the sampling RNG (if a state_dir was given); no ledger in mode "off"."""
        if self.state_dir is None:
            return
        from secgan.gan.checkpoint import save_module_state

        save_module_state(
            self.state_dir / self.STATE_FILE,
            self.discriminator,
            self.optimizer,
            {"rng": self.rng.bit_generator.state, "steps_served": self.steps_served, "mode": "off"},
        )

    def serve(self, msg: FakeBatch) -> GradientReply | Refusal:
        check_fake_batch(msg, self.image)
        n = min(self.train.batch_size, self.dataset.n_patients)
        idx = self.rng.choice(self.dataset.n_patients, size=n, replace=False)
        real_img, real_cond = self.dataset.sample_slices([int(i) for i in idx], generator=self.rng)
        real_img = torch.as_tensor(np.ascontiguousarray(real_img), dtype=torch.float32, device=self.device)
        real_cond = torch.as_tensor(np.ascontiguousarray(real_cond), dtype=torch.float32, device=self.device)
        cond = msg.cond.to(self.device)
        fake = msg.fake.to(self.device)
        self.discriminator.train()
        discriminator_step(self.discriminator, self.optimizer, real_cond, real_img, cond, fake, loss=self.train.loss)
        grad = generator_gradient(self.discriminator, cond, fake, loss=self.train.loss).cpu()
        self.steps_served += 1
        return GradientReply(run_id=msg.run_id, round=msg.round, step=msg.step, grad=grad, budget_left=None, attempt=msg.attempt)


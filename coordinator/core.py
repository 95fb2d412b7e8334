"""The coordinator's half of an AsynDGAN step: G, its optimiser and the fakes in flight.

``GeneratorCore`` draws conditions, computes fake = G(c, z), keeps the graph until the site's
gradient arrives, back-propagates each returned g_j (``apply``) and steps G's optimiser once per
step (``finish_step``). The site half and the loss scaling it relies on are
:mod:`secgan.gan.step`. The one way to build (or resume) a core is
:func:`coordinator.build.build_generator_core`, used by the coordinator service and by the
in-process runner alike.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from secgan.core.errors import ConfigError, ProtocolError
from secgan.net.codec import all_finite
from secgan.core.spec import ImageSpec
from secgan.net.schema import Batch, GradientReply, batch_message


class StepCore(Protocol):
    """The seam between the round schedulers and the generator core, typed: what
    ``coordinator.scheduler.Scheduler`` and ``coordinator.secure_sum.SecureSumScheduler`` ask of
    it. ``GeneratorCore`` is the implementation."""

    def make_batch(self, *, run_id: str, round: int, step: int, site: str = "") -> Batch: ...

    def drop(self, *, run_id: str, round: int, step: int, site: str = "") -> bool: ...

    def check(self, reply: GradientReply, *, site: str = "") -> torch.Tensor: ...

    def apply(self, reply: GradientReply, *, site: str = "") -> None: ...

    def finish_step(self) -> dict[str, Any]: ...


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
        image: ImageSpec | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= average < 1.0:
            raise ConfigError(f"g_average must be in [0, 1), got {average}")
        self.G = G
        # what the batches carry (the message type of its condition kind); None: the brain spec
        self.image = image if image is not None else ImageSpec(size=int(getattr(G, "image_size", 64)))
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

    def make_batch(self, *, run_id: str, round: int, step: int, site: str = "") -> Batch:
        """Fresh conditions and noise, fake = G(c, z) with its graph kept until the reply arrives."""
        key = (run_id, round, step, site)
        if key in self._pending:
            raise ProtocolError("duplicate_batch", f"a batch for round {round} step {step} is already in flight")
        if not self.G.training:  # (train() walks every module: once, not once per site and step)
            self.G.train()
        cond = self.conditions.draw(self.batch_size, generator=self.generator).to(torch.float32)
        z = torch.randn(self.batch_size, self.noise_dim, generator=self.generator, dtype=torch.float32)
        fake = self.G(cond.to(self.device), z.to(self.device))
        if self.moments is not None:  # accumulates into G's grads; stepped with the replies in finish_step
            (self.moment_weight * moment_loss(fake, cond.to(self.device), self.moments)).backward(retain_graph=True)
        self._pending[key] = fake
        return batch_message(self.image, run_id=run_id, round=round, step=step, cond=cond.cpu(), fake=fake.detach().cpu())

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

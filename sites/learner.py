"""The site learner for every privacy mode: what a site runs for each FakeBatch it is sent.

One ``serve`` call, in this order (the order is the privacy argument):
1. validate the batch against the site's image spec (ProtocolError otherwise);
2. account the release in the ledger and write it durably (``reserve_step``); past the budget,
   answer ``Refusal(code="budget_exhausted", final=True)`` and do nothing else. Reserving *before*
   the D update means every D state the site ever holds is already paid for, so a crash anywhere
   after this point can only over-count;
3. sample patients with the site's private generator and update D (mode-specific: Opacus DP-SGD,
   one non-private shard discriminator, or a plain step for "off");
4. compute the gradient for the fakes with a function that takes no real data
   (``secgan.gan.step.generator_gradient`` / ``sanitize.sanitized_gradient``);
5. append the release to the hash-chained log (fsynced), then return ``GradientReply`` carrying only
   that gradient and the coarse budget left (``secgan.privacy.disclosure``: the exact epsilon would
   reveal the cohort size). No loss, score or count computed on real data leaves.

D/G balance (``policy.gradient_only_rounds``, ``policy.d_steps``): from its own durable count of
batches served (the ledger's release count, so a restart keeps the schedule; the coordinator has no
say), the site makes each batch either a D update of n_D private steps, charged n_D steps, or a
gradient-only release through the current D, charged nothing (post-processing of an already-charged
D). Both are reserved in the ledger (the latter at zero steps) and logged with their
``charged_steps``, so the log stays a complete record and a rebuild from it prices them exactly.

Numerical safety: a batch outside the generator's value range is refused before step 2
(``sites.checks.check_fake_batch``), so it is never charged. If D (or its optimiser state) or the gradient is
not finite after the update anyway, D and its optimiser are rolled back to their state before the
step, so a poisoned D is never kept, saved or restored. In ``dpsgd`` and ``off`` modes the step is
then answered ``Refusal(code="non_finite")``: that refusal is a function of the private update,
so the step stays charged (the ledger over-counts by the discarded step, never under-counts).
In ``sanitize`` mode a refusal would be a function of the non-private shard discriminator, which
no charge covers, so the release goes ahead through the rolled-back D_k (rows that are not finite
become zero before clipping), a release like any other.

D and its optimiser are saved every ``train.checkpoint_every`` releases and on ``save()`` (always
after the ledger write they depend on) and restored from ``state_dir`` on construction.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from secgan.core.errors import BudgetExhausted, PrivacyError
from secgan.core.logs import get_logger
from secgan.net.schema import Batch, GradientReply, Refusal, batch_conditions
from secgan.privacy.disclosure import EXHAUSTED_REASON, budget_left
from secgan.privacy.guards import check_policy, source_refusal
from secgan.privacy.policy import PrivacyPolicy
from secgan.privacy.sampling import poisson_patients, sample_rate
from secgan.privacy.sanitize import effective_noise_multiplier
from secgan.gan.config import ModelConfig, TrainConfig
from secgan.core.spec import ImageSpec

from sites.checks import check_fake_batch
from sites.discriminators import build_discriminators, derive_seed
from sites.last_good import State, is_finite, roll_back, snapshot
from sites.saved_state import restore_discriminators, save_discriminators

log = get_logger(__name__)

FINGERPRINT_SALT = b"secgan.privacy.ledger.v1"


class SiteLearner:
    """Serves one site's FakeBatches under its own PrivacyPolicy (modes off, dpsgd, sanitize)."""

    def __init__(
        self,
        *,
        dataset: Any,
        policy: PrivacyPolicy,
        model: ModelConfig,
        image: ImageSpec,
        train: TrainConfig,
        state_dir: str | Path,
        generator_seed: int,
        device: str = "cpu",
        on_reserved: Callable[[int], None] | None = None,
    ) -> None:
        from secgan.privacy.ledger import LedgerParams  # Opacus is imported only when needed

        check_policy(policy, l1_weight=train.l1_weight)
        if dataset.n_patients < 1:
            raise PrivacyError("the site has no patients to train on")
        self.dataset = dataset
        self.policy = policy
        self.image = image
        self.train = train
        self.device = torch.device(device)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._on_reserved = on_reserved
        mode = policy.mode

        # --- what one release costs --------------------------------------------------------
        if mode == "dpsgd":
            self.sample_rate: float | None = sample_rate(
                expected_batch_size=policy.expected_batch_size, n_patients=dataset.n_patients
            )
        elif mode == "sanitize":
            # q = 1 (proven) unless the site's policy opts into the shard-amplification assumption
            self.sample_rate = 1.0 / policy.shards if policy.assume_shard_amplification else 1.0
        else:
            self.sample_rate = None
        self.noise_multiplier = self._noise_multiplier()

        # --- durable state: one writer (the state lock), ledger cross-checked with the log -----
        from secgan.privacy.recovery import open_state
        from secgan.privacy.statelock import StateLock

        self._lock = StateLock.acquire(self.state_dir)

        def cost(rows: int) -> tuple[float | None, float | None]:  # what the ledger charges a release of `rows` rows
            return self._accounted_noise(rows), self.sample_rate

        stats_price = self._stats_prior()
        self.ledger, self.release_log = open_state(
            self.state_dir,
            params=LedgerParams(
                mode=mode,
                delta=policy.delta,
                target_epsilon=policy.target_epsilon,
                clip_norm=policy.clip_norm,
                dataset_fingerprint=dataset.fingerprint(salt=FINGERPRINT_SALT),
                policy_hash=policy.accounting_hash(),
                accountant=policy.accountant,
                assumptions=policy.assumptions(),
            ),
            cost=cost,
            stats_price=(stats_price[0][0], 1.0) if stats_price else None,
        )

        # --- private randomness (sampling + noise) -------------------------------------------
        # Fresh streams at every (re)start, keyed by the release count, so a restart never replays
        # the noise of earlier steps; from OS entropy unless the policy asks for reproducibility.
        base = generator_seed if (policy.reproducible_noise or mode == "off") else secrets.randbits(63)
        epoch = self.ledger.releases
        self._rng = np.random.default_rng([base % 2**63, epoch, 1])
        self._noise = torch.Generator(device=self.device)
        self._noise.manual_seed(derive_seed(base, epoch, "noise"))
        self._stats_rng = np.random.default_rng([base % 2**63, epoch, 2])

        # --- discriminator(s): one (off, dpsgd: Opacus-wrapped) or one per patient shard (sanitize) ---
        fresh = not any(self._state_file(i).exists() for i in range(policy.shards if mode == "sanitize" else 1))
        self._dp, self._shards, self._modules = build_discriminators(
            policy=policy, model=model, image=image, train=train, dataset=dataset, seed=generator_seed,
            device=self.device, fresh=fresh, noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate,
            noise_generator=self._noise)
        from secgan.privacy.recovery import cover_saved_state, saved_releases

        cover_saved_state(self.ledger, saved_releases=saved_releases(self._state_files()),
                          cost=cost, rows=max(self.release_log.max_rows, train.batch_size), what="discriminator state",
                          steps_per_release=policy.max_steps_per_release)
        self._restore()
        self._since_save = 0
        log.info(
            "site_learner_ready",
            mode=mode,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            epsilon=self.ledger.epsilon,
            releases=self.ledger.releases,
            assumptions=",".join(self.ledger.assumptions) or "none",
        )

    # ------------------------------------------------------------------ interface

    @property
    def discriminator(self) -> torch.nn.Module:
        """The site's D (for local audits only; never sent). In sanitize mode, shard 0's."""
        return self.discriminators[0]

    @property
    def discriminators(self) -> list[torch.nn.Module]:
        if self._dp is not None:
            return [self._dp.plain]
        return [m for m, _ in self._modules]

    def refuses_source(self, name: str) -> str | None:
        return source_refusal(self.policy, name)

    def epsilon(self) -> float | None:
        return self.ledger.epsilon

    @property
    def releases(self) -> int:
        """Batches served so far: the ledger's durable release count."""
        return self.ledger.releases

    def budget_left(self) -> float | None:
        """What the coordinator is told: the coarse fraction of the budget left (None if DP is off)."""
        return budget_left(epsilon=self.ledger.epsilon, target_epsilon=self.ledger.target_epsilon)

    def plan(self, run_steps: int) -> dict[str, Any] | None:
        """The run's steps against this site's plan (``sites.plan.run_plan``); None in mode "off"
        (nothing is accounted). Exact figures: for the site's own log."""
        if self.policy.mode == "off":
            return None
        from sites.plan import run_plan

        return run_plan(self.policy, run_steps=run_steps, noise_multiplier=self._accounted_noise(self.train.batch_size),
                        sample_rate=self.sample_rate, delta=self.ledger.delta, target_epsilon=self.ledger.target_epsilon,
                        accountant=self.ledger.accountant)

    def save(self) -> None:
        save_discriminators(self._modules, self._state_files(), mode=self.policy.mode, releases=self.ledger.releases,
                            rng=self._rng)
        self._since_save = 0

    def serve(self, msg: Batch, *, distributed_noise: bool = False) -> GradientReply | Refusal:
        """One release (accounted and logged before it is returned).

        ``distributed_noise`` (secure-sum rounds): in sanitize mode the returned gradient is clipped
        but NOT noised; the caller must add this site's share (``secure_sum_noise``) inside the
        masked contribution and must never send the returned tensor itself. The ledger is charged
        exactly as for a locally noised release: the sum carries at least the full noise as long as
        the threshold of participants is honest (``record_distributed_noise`` writes that down).
        """
        check_fake_batch(msg, self.image)
        rows = int(msg.fake.shape[0])
        sigma_acc = self._accounted_noise(rows)
        # the site's own durable count of batches served decides whether this one updates D
        served = self.ledger.releases
        update = self.policy.d_update(served)
        charged = self.policy.steps_for_release(served)
        try:
            eps = self.ledger.reserve_step(noise_multiplier=sigma_acc, sample_rate=self.sample_rate, steps=charged)
        except BudgetExhausted as exc:
            # the exact figures stay here (the site's own log); the coordinator gets no number
            log.warning("budget_exhausted", epsilon=self.ledger.epsilon, epsilon_after=exc.epsilon_after,
                        target=self.ledger.target_epsilon)
            return Refusal(run_id=msg.run_id, round=msg.round, step=msg.step, code="budget_exhausted",
                           reason=EXHAUSTED_REASON, final=True)
        if self._on_reserved is not None:
            self._on_reserved(self.ledger.releases)
        grad = self._update_and_release(msg, distributed_noise=distributed_noise, update=update)
        if grad is None:  # D rolled back, nothing released; the step stays charged (see the module doc)
            log.warning("update_discarded", step=msg.step, round=msg.round, reason="non_finite",
                        releases=self.ledger.releases)
            return Refusal(run_id=msg.run_id, round=msg.round, step=msg.step, code="non_finite",
                           reason="the discriminator update of this step was not finite and was discarded; "
                                  "the site keeps serving from its last good state")
        self.release_log.append(step=msg.step, round=msg.round, run_id=msg.run_id, tensors={"grad": grad}, epsilon_after=eps,
                                charged_steps=charged)
        self._since_save += 1
        if self._since_save >= self.train.checkpoint_every:
            self.save()
        log.info("site_release", step=msg.step, round=msg.round, epsilon=eps, releases=self.ledger.releases,
                 d_update=update, charged_steps=charged)
        return GradientReply(run_id=msg.run_id, round=msg.round, step=msg.step, grad=grad,
                             budget_left=self.budget_left(), attempt=msg.attempt)

    # ------------------------------------------------------------------ internals

    def _noise_multiplier(self) -> float | None:
        """sigma relative to C: from the policy, or calibrated so planned_steps rounds land on the target.

        In sanitize mode the ledger is charged sigma / (2 sqrt(B)) per release (see sanitize.py), so
        calibration targets that effective value at B = train.batch_size and scales it back.
        """
        p = self.policy
        if p.mode == "off":
            return None
        if p.noise_multiplier is not None:
            return float(p.noise_multiplier)
        from secgan.privacy.accounting import calibrate_noise

        # planned_steps counts rounds; the steps they charge are the policy's (n_D, gradient-only rounds)
        sigma = calibrate_noise(target_epsilon=p.target_epsilon, delta=p.delta, sample_rate=self.sample_rate,
                                steps=p.charged_steps(p.planned_steps), accountant=p.accountant, prior=self._stats_prior())
        if p.mode == "sanitize":
            sigma = sigma / effective_noise_multiplier(1.0, rows=self.train.batch_size)
        return sigma

    def _stats_prior(self) -> list[tuple[float, float, int]]:
        """The one-shot statistics release as a history entry ([] when the policy does not release them)."""
        if not (self.policy.release_stats and self.policy.mode == "dpsgd"):
            return []
        from secgan.privacy.stats import stats_noise_multiplier

        p = self.policy
        return [(stats_noise_multiplier(stats_epsilon=p.stats_epsilon, delta=p.delta, accountant=p.accountant), 1.0, 1)]

    def release_stats(self) -> dict[str, Any] | None:
        """The site's DP summary statistics (``secgan.privacy.stats``), released at most once
        (``sites.stats_release``): the first call charges the ledger, durably, before the noised sum
        is computed; later calls (and restarts) return the kept release, which costs nothing. None
        when the policy does not release statistics; a budget too small for it raises BudgetExhausted."""
        prior = self._stats_prior()
        if not prior:
            return None
        from sites.stats_release import release_stats_once

        return release_stats_once(self.state_dir, ledger=self.ledger, release_log=self.release_log, dataset=self.dataset,
                                  noise_multiplier=prior[0][0], clip_norm=self.policy.stats_clip_norm,
                                  generator=self._stats_rng)

    def _accounted_noise(self, rows: int) -> float | None:
        if self.policy.mode == "dpsgd":
            return self.noise_multiplier
        if self.policy.mode == "sanitize":
            return effective_noise_multiplier(self.noise_multiplier, rows=rows)
        return None

    def _real_rows(self, idx: np.ndarray, *, per_patient: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(conds, images) of ``policy.slices_per_patient`` slices of each sampled patient:
        ``[patients, k, *shape]`` with ``per_patient`` (dpsgd: one clipped row per patient), else
        ``[patients * k, *shape]`` plain rows (off, sanitize: D is not the private mechanism there);
        shapes from the image spec (``image_shape``, ``cond_shape``)."""
        from secgan.privacy.multislice import patient_rows

        img, cond = patient_rows(self.dataset, [int(i) for i in idx], k=self.policy.slices_per_patient,
                                 size=self.image.size, augmented=self.policy.slice_augment, generator=self._rng,
                                 image=self.image)
        lead = (len(idx), self.policy.slices_per_patient) if per_patient else (-1,)
        return (
            torch.as_tensor(np.ascontiguousarray(cond.reshape(lead + self.image.cond_shape)), device=self.device),
            torch.as_tensor(np.ascontiguousarray(img.reshape(lead + self.image.image_shape)), device=self.device),
        )

    def secure_sum_noise(self, *, threshold: int) -> tuple[float, torch.Generator | None]:
        """This site's Gaussian noise share for a secure-sum round: (std, the learner's noise
        generator) in sanitize mode, (0, None) otherwise (dpsgd noise is inside D's training)."""
        if self.policy.mode != "sanitize":
            return 0.0, None
        from secgan.secagg import noise_share_std

        return noise_share_std(self.noise_multiplier * self.policy.clip_norm, threshold=threshold), self._noise

    def record_distributed_noise(self, *, threshold: int, participants: int, first_attempt: bool) -> dict | None:
        """Write the distributed-noise statement into the ledger, durably, before the masked
        contribution it describes is sent (``sites.secure_noise``). Sanitize mode only."""
        if self.policy.mode != "sanitize":
            return None
        from sites.secure_noise import record_distributed_noise

        return record_distributed_noise(self.ledger, sigma_total=self.noise_multiplier * self.policy.clip_norm,
                                        threshold=threshold, participants=participants, first_attempt=first_attempt)

    def _update_and_release(self, msg: Batch, *, distributed_noise: bool = False, update: bool = True) -> torch.Tensor | None:
        """D update (mode-specific) and the gradient to send; returns a CPU float32 tensor, or None
        when the update (or the gradient through it) was not finite and D was rolled back.

        dpsgd and off: ``update`` False is a gradient-only release (G's gradient through the current
        D, D untouched); True runs ``policy.d_steps`` D steps, each on a fresh sample of patients
        against the batch's fakes, before the gradient."""
        from secgan.gan.step import discriminator_step, generator_gradient

        cond = batch_conditions(msg, self.image).to(self.device)
        fake = msg.fake.to(self.device)
        loss = self.train.loss
        mode = self.policy.mode
        n = self.dataset.n_patients
        if mode == "dpsgd":
            good = self._snapshot(0) if update else None
            for _ in range(self.policy.d_steps if update else 0):
                idx = poisson_patients(n, rate=self.sample_rate, generator=self._rng)
                real_cond, real_img = self._real_rows(idx, per_patient=True)
                self._dp.step(real_cond, real_img, cond, fake, loss=loss)
                if not self._finite(0):
                    return self._roll_back(0, good)
            grad = generator_gradient(self._dp.for_gradient, cond, fake, loss=loss)
            if good is None and not bool(torch.isfinite(grad).all()):
                return None  # a gradient-only release through a finite D that is not finite: nothing released
            if not bool(torch.isfinite(grad).all()):
                return self._roll_back(0, good)
        elif mode == "sanitize":
            from secgan.privacy.sanitize import sanitized_gradient

            k = self._shards.pick(self._rng)
            members = self._shards.members[k]
            take = min(self.train.batch_size, len(members))
            idx = self._rng.choice(members, size=take, replace=False) if take else np.zeros(0, np.int64)
            real_cond, real_img = self._real_rows(idx)
            good = self._snapshot(k)
            self._shards.train_step(k, real_cond, real_img, cond, fake, loss=loss)
            if not self._finite(k):  # release through the last good D_k (no data-dependent refusal)
                self._roll_back(k, good)
            if distributed_noise:  # clipped only: the noise share is added inside the masked vector
                from secgan.privacy.sanitize import clip_rows

                g = generator_gradient(self._shards.discriminators[k], cond, fake, loss=loss).cpu()
                return clip_rows(g, self.policy.clip_norm).detach().to(torch.float32).contiguous()
            grad = sanitized_gradient(
                self._shards.discriminators[k],
                cond,
                fake,
                loss=loss,
                clip_norm=self.policy.clip_norm,
                noise_multiplier=self.noise_multiplier,
                generator=self._noise,
                secure=self.policy.secure_noise,
            )
        else:
            D, opt = self._modules[0]
            good = self._snapshot(0) if update else None
            for _ in range(self.policy.d_steps if update else 0):
                idx = self._rng.choice(n, size=min(self.train.batch_size, n), replace=False)
                real_cond, real_img = self._real_rows(idx)
                D.train()
                discriminator_step(D, opt, real_cond, real_img, cond, fake, loss=loss)
                if not self._finite(0):
                    return self._roll_back(0, good)
            grad = generator_gradient(D, cond, fake, loss=loss)
            if good is None and not bool(torch.isfinite(grad).all()):
                return None
            if not bool(torch.isfinite(grad).all()):
                return self._roll_back(0, good)
        return grad.detach().to("cpu", torch.float32).contiguous()

    # ------------------------------------------------------------------ last good state (sites.last_good)

    def _finite(self, i: int) -> bool:
        return is_finite(*self._modules[i])

    def _snapshot(self, i: int) -> State:
        return snapshot(*self._modules[i])

    def _roll_back(self, i: int, state: State) -> None:
        return roll_back(*self._modules[i], state, index=i)

    def _state_file(self, i: int) -> Path:
        name = "discriminator.safetensors" if self.policy.mode != "sanitize" else f"discriminator-{i}.safetensors"
        return self.state_dir / name

    def _state_files(self) -> list[Path]:
        return [self._state_file(i) for i in range(len(self._modules))]

    def _restore(self) -> None:
        restore_discriminators(self._modules, self._state_files(), mode=self.policy.mode, releases=self.ledger.releases,
                               rng=self._rng)

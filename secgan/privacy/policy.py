"""A site's privacy policy. It lives in the site's own config; the coordinator may read a summary
(``summary()``) but can never change it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from secgan.core.config import choices, rng, to_dict
from secgan.gan.config import CONDITION_SOURCES
from secgan.privacy.accounting import ACCOUNTANT, ACCOUNTANTS

MODES = ("off", "dpsgd", "sanitize")
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ew")
# Fields a ledger is bound to (a restart that changes any of them is refused). accept_sources and
# secure_sum_threshold are left out: they change what the site serves, not what a release costs.
ACCOUNTED_FIELDS = (
    "mode", "target_epsilon", "delta", "clip_norm", "noise_multiplier", "planned_steps",
    "expected_batch_size", "shards", "secure_noise",
)
# Bound to the ledger too, but added since: the D/G schedule (how many steps a run of planned_steps
# rounds charges), the accountant and the statistics release. Each is hashed only when it differs
# from its default (the behaviour before it existed), so ledgers written before keep their hash.
ADDED_ACCOUNTED_DEFAULTS = {
    "gradient_only_rounds": 0, "d_steps": 1, "accountant": "rdp", "release_stats": False, "stats_epsilon": 1.0,
    "stats_clip_norm": 3.0,
}


@dataclass(frozen=True)
class PrivacyPolicy:
    # off: nothing (needs allow_off); dpsgd: Opacus DP-SGD on D; sanitize: GS-WGAN clipped and noised gradient
    mode: str = field(default="dpsgd", metadata=choices(*MODES))
    allow_off: bool = False  # mode "off" is refused unless this is true
    # the site refuses any release that would take its epsilon above this
    target_epsilon: float = field(default=10.0, metadata=rng(min=0.0, min_exclusive=True))
    # the delta of the (epsilon, delta) guarantee; keep it below 1 / patients
    delta: float = field(default=1e-5, metadata=rng(min=0.0, max=0.1, min_exclusive=True))
    # C: per-patient clipping norm (dpsgd) or per-row gradient clip (sanitize)
    clip_norm: float = field(default=1.0, metadata=rng(min=0.0, min_exclusive=True))
    # None: calibrate sigma from target_epsilon, delta, q and planned_steps.
    noise_multiplier: float | None = field(default=None, metadata=rng(min=0.0))
    # steps the noise is calibrated for when noise_multiplier is not given
    planned_steps: int = field(default=200, metadata=rng(min=1))
    # a run whose steps (the coordinator's train.steps) differ from planned_steps: warn or refuse it
    on_steps_mismatch: str = field(default="warn", metadata=choices("warn", "refuse"))
    # patients sampled per step on average (Poisson rate q = this / patients)
    expected_batch_size: int = field(default=8, metadata=rng(min=1))
    # condition sources this site serves; 'site' discloses label maps and is refused with DP
    accept_sources: tuple[str, ...] = ("procedural", "bank")
    # sanitize mode: number of disjoint patient shards (one discriminator each)
    shards: int = field(default=4, metadata=rng(min=1))
    # sanitize mode: charge q = 1/shards per release (GS-WGAN's amplification by shard choice). This is
    # an ASSUMPTION, not a proof (the unpicked discriminators' state depends on the hidden history of
    # picks); the default charges q = 1, the proven figure. Recorded in the ledger, which refuses a flip.
    assume_shard_amplification: bool = False
    # secure-sum: the smallest participant set this site will mask for (0: strict majority, >= 3)
    secure_sum_threshold: int = field(default=0, metadata=rng(min=0))
    # how epsilon is computed (calibration, budget checks, the ledger): rdp (Rényi DP, closed form) or prv
    # (numerical PRV composition, its upper bound; tighter). Recorded in the ledger, which refuses a switch
    accountant: str = field(default=ACCOUNTANT, metadata=choices(*ACCOUNTANTS))
    # dpsgd mode: release once, under DP and charged to the ledger, per-class per-modality intensity means
    # and spreads of the training patients (secgan.privacy.stats); the coordinator may match G to them
    release_stats: bool = False
    # the share of target_epsilon the statistics release spends (DP-SGD is calibrated on what is left)
    stats_epsilon: float = field(default=1.0, metadata=rng(min=0.0, min_exclusive=True))
    # per-patient L2 clip of the statistics vector (its sensitivity; unclipped vectors are at most 6)
    stats_clip_norm: float = field(default=3.0, metadata=rng(min=0.0, min_exclusive=True))
    # Opacus's noise that resists floating-point attacks (Mironov 2012): 4 draws per value
    secure_noise: bool = True
    # True: Poisson sampling and DP noise are seeded from the site's generator_seed (tests, benchmarks).
    # False (default): they are seeded from the OS's entropy, so nobody who learns the config can
    # replay the noise or the sample.
    reproducible_noise: bool = False
    # how Opacus computes per-sample gradients of D ("dpsgd" mode); "hooks" is the fastest at the demo's and
    # the sweep's D (bench_dp: 1.87x a plain step, "ew" 2.03x, "functorch" 2.26x; "ew" wins on a 64 px PatchGAN)
    grad_sample_mode: str = field(default="hooks", metadata=choices(*GRAD_SAMPLE_MODES))
    # freeze the first N stages of this site's D (e.g. pretrained ones, train.init_from): they are
    # not trained, so DP-SGD clips and noises only the rest
    freeze_d_stages: int = field(default=0, metadata=rng(min=0, max=16))
    # slices of each sampled patient per D step; dpsgd averages their gradients into ONE clipped row
    # (same q, sigma and epsilon); off and sanitize use them as plain rows of the non-private D
    slices_per_patient: int = field(default=1, metadata=rng(min=1))
    # random flips and integer shifts (up to 2 px) of each sampled slice, label map and image alike
    slice_augment: bool = False
    # after each private D update, this many batches are served gradient-only (G's gradient through the
    # current D; D not updated, nothing charged). The site counts its own batches (dpsgd and off modes)
    gradient_only_rounds: int = field(default=0, metadata=rng(min=0))
    # n_D: D steps per D update, each on a fresh Poisson sample against the batch's fakes, each charged
    # as one sampled-Gaussian step in dpsgd mode (dpsgd and off modes)
    d_steps: int = field(default=1, metadata=rng(min=1))

    def __post_init__(self) -> None:
        for s in self.accept_sources:
            if s not in CONDITION_SOURCES:
                raise ValueError(f"accept_sources: unknown source {s!r} (allowed: {', '.join(CONDITION_SOURCES)})")
        if self.mode == "off" and not self.allow_off:
            raise ValueError("mode = 'off' needs allow_off = true in the site's own policy")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant: unknown accountant {self.accountant!r} (allowed: {', '.join(ACCOUNTANTS)})")
        if self.release_stats and self.mode != "dpsgd":
            raise ValueError("release_stats applies to mode = 'dpsgd' only")
        if self.release_stats and not self.stats_epsilon < self.target_epsilon:
            raise ValueError(f"stats_epsilon ({self.stats_epsilon:g}) must be below target_epsilon ({self.target_epsilon:g})")
        if self.assume_shard_amplification and self.mode != "sanitize":
            raise ValueError("assume_shard_amplification applies to mode = 'sanitize' only")
        if self.slices_per_patient > 1 and self.mode == "dpsgd" and self.grad_sample_mode == "ew":
            raise ValueError("slices_per_patient > 1 averages per-sample gradients, which grad_sample_mode 'ew' "
                             "(expanded weights) does not keep: use 'hooks' or 'functorch'")
        if self.mode == "sanitize" and (self.gradient_only_rounds, self.d_steps) != (0, 1):
            raise ValueError("gradient_only_rounds and d_steps apply to modes 'dpsgd' and 'off': in 'sanitize' mode "
                             "every release is itself a noised (charged) gradient of a non-private discriminator")

    def d_update(self, served: int) -> bool:
        """Whether the batch this site serves after ``served`` earlier ones updates D (else it is
        gradient-only). Decided by the site's own durable count, never by the coordinator."""
        return int(served) % (self.gradient_only_rounds + 1) == 0

    def steps_for_release(self, served: int) -> int:
        """Sampled-Gaussian steps the ledger charges the batch served after ``served`` earlier ones."""
        if self.mode == "off":
            return 0
        if self.mode == "sanitize":
            return 1
        return self.d_steps if self.d_update(served) else 0

    def charged_steps(self, rounds: int) -> int:
        """Steps the ledger charges for a run of ``rounds`` batches from a fresh ledger (a pure function
        of the policy; calibration and the run plan use it): the sum of ``steps_for_release``."""
        rounds = int(rounds)
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        if self.mode == "off":
            return 0
        if self.mode == "sanitize":
            return rounds
        return math.ceil(rounds / (self.gradient_only_rounds + 1)) * self.d_steps

    @property
    def max_steps_per_release(self) -> int:
        """The most steps one release can charge (prices a release whose kind is not known)."""
        return self.d_steps if self.mode == "dpsgd" else 1

    def assumptions(self) -> tuple[str, ...]:
        """Accounting assumptions this policy opts into (recorded in, and bound by, the ledger)."""
        from secgan.privacy.ledger_file import SHARD_AMPLIFICATION

        return (SHARD_AMPLIFICATION,) if self.mode == "sanitize" and self.assume_shard_amplification else ()

    def accounting_hash(self) -> str:
        """SHA-256 over the fields a privacy ledger is bound to (``ACCOUNTED_FIELDS``)."""
        d = to_dict(self)
        bound = {k: d[k] for k in ACCOUNTED_FIELDS}
        bound.update({k: d[k] for k, default in ADDED_ACCOUNTED_DEFAULTS.items() if d[k] != default})
        blob = json.dumps(bound, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def summary(self) -> dict:
        """What the site tells the coordinator at the handshake (no secrets, no data statistics)."""
        return {
            "mode": self.mode,
            "target_epsilon": self.target_epsilon if self.mode != "off" else None,
            "delta": self.delta if self.mode != "off" else None,
            "accept_sources": list(self.accept_sources),
        }

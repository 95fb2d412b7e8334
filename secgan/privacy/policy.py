"""A site's privacy policy. It lives in the site's own config; the coordinator may read a summary
(``summary()``) but can never change it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from secgan.core.config import choices, rng, to_dict
from secgan.gan.config import CONDITION_SOURCES

MODES = ("off", "dpsgd", "sanitize")
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ew")
# Fields a ledger is bound to (a restart that changes any of them is refused). accept_sources and
# secure_sum_threshold are left out: they change what the site serves, not what a release costs.
ACCOUNTED_FIELDS = (
    "mode", "target_epsilon", "delta", "clip_norm", "noise_multiplier", "planned_steps",
    "expected_batch_size", "shards", "secure_noise",
)


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
    # Opacus's noise that resists floating-point attacks (Mironov 2012): 4 draws per value
    secure_noise: bool = True
    # True: Poisson sampling and DP noise are seeded from the site's generator_seed (tests, benchmarks).
    # False (default): they are seeded from the OS's entropy, so nobody who learns the config can
    # replay the noise or the sample.
    reproducible_noise: bool = False
    # how Opacus computes per-sample gradients of D ("dpsgd" mode)
    grad_sample_mode: str = field(default="hooks", metadata=choices(*GRAD_SAMPLE_MODES))

    def __post_init__(self) -> None:
        for s in self.accept_sources:
            if s not in CONDITION_SOURCES:
                raise ValueError(f"accept_sources: unknown source {s!r} (allowed: {', '.join(CONDITION_SOURCES)})")
        if self.mode == "off" and not self.allow_off:
            raise ValueError("mode = 'off' needs allow_off = true in the site's own policy")
        if self.assume_shard_amplification and self.mode != "sanitize":
            raise ValueError("assume_shard_amplification applies to mode = 'sanitize' only")

    def assumptions(self) -> tuple[str, ...]:
        """Accounting assumptions this policy opts into (recorded in, and bound by, the ledger)."""
        from secgan.privacy.ledger import SHARD_AMPLIFICATION

        return (SHARD_AMPLIFICATION,) if self.mode == "sanitize" and self.assume_shard_amplification else ()

    def accounting_hash(self) -> str:
        """SHA-256 over the fields a privacy ledger is bound to (``ACCOUNTED_FIELDS``)."""
        d = to_dict(self)
        blob = json.dumps({k: d[k] for k in ACCOUNTED_FIELDS}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def summary(self) -> dict:
        """What the site tells the coordinator at the handshake (no secrets, no data statistics)."""
        return {
            "mode": self.mode,
            "target_epsilon": self.target_epsilon if self.mode != "off" else None,
            "delta": self.delta if self.mode != "off" else None,
            "accept_sources": list(self.accept_sources),
        }

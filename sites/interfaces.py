"""The seam between the site node and its learner, typed: what ``sites.node.SiteNode`` asks of it.

``sites.learner.SiteLearner`` (every privacy mode) is the implementation; a test may stand in with
anything that has these members. The node never probes for a member: each is always there.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from secgan.net.schema import FakeBatch, GradientReply, Refusal
from secgan.privacy.policy import PrivacyPolicy


class Learner(Protocol):
    policy: PrivacyPolicy

    @property
    def releases(self) -> int:
        """Batches served so far, by the learner's own durable count (its ledger's)."""

    def serve(self, msg: FakeBatch, *, distributed_noise: bool = False) -> GradientReply | Refusal:
        """One release: checked, accounted and logged before it is returned."""

    def epsilon(self) -> float | None:
        """The site's epsilon so far (None when nothing is accounted, mode "off")."""

    def save(self) -> None:
        """Persist what the learner keeps (always after the ledger write it depends on)."""

    def refuses_source(self, name: str) -> str | None:
        """Why this site refuses condition source ``name`` (None: it accepts it)."""

    def plan(self, run_steps: int) -> dict[str, Any] | None:
        """The run's steps against this site's privacy plan (None when nothing is accounted)."""

    def secure_sum_noise(self, *, threshold: int) -> tuple[float, torch.Generator | None]:
        """This site's noise share for a secure-sum round: (std, generator), (0, None) if it adds none."""

    def record_distributed_noise(self, *, threshold: int, participants: int, first_attempt: bool) -> dict | None:
        """Write the distributed-noise statement durably before the masked contribution it describes."""

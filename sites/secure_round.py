"""The site's part of a secure-sum round: the gradient of a FakeBatch is HELD (released by the
learner, so paid for, but never sent as is); each SecAggAnnounce is checked against this site's own
verified manifest and policy threshold by its SecureSumClient, and only the masked vector goes out
(or a Refusal naming the check that failed). A retry of the same step re-masks the held value with
fresh masks: no new release, no new ledger charge. In sanitize mode the learner leaves the gradient
un-noised and the site adds its noise share inside the masked vector.

A part of :class:`sites.node.SiteNode` (its attributes are the node's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from secgan.core.errors import ProtocolError, SecganError
from secgan.core.logs import get_logger
from secgan.net.schema import Refusal, SecAggAnnounce

log = get_logger("sites.node")


@dataclass(frozen=True)
class Held:
    """A gradient released by the learner (paid for) and kept for this step's masked contributions."""

    key: tuple[int, int]  # (round, step)
    grad: Any  # torch.Tensor; never sent as is
    budget_left: float | None


class SecureSumSide:
    """Announcements of secure-sum rounds, answered with masked contributions or refusals."""

    def _on_announce(self, ann: SecAggAnnounce) -> None:
        from secgan.secagg import SecAggRefusal

        if not self.welcomed:
            raise ProtocolError("not_welcomed", "announcement before Welcome")
        if self.aggregation != "secure-sum" or self.secagg is None:
            raise ProtocolError("unexpected_message", "secure-sum announcement in a routed run")
        if ann.run_id != self.run_id:
            raise ProtocolError("wrong_run", "announcement for another run")
        self.last_round, self.last_step = ann.round, ann.step
        client = self.secagg
        key = (ann.round, ann.step)
        try:
            client.check(ann)  # manifest keys, threshold, digest, attempt order: refuse before anything else
            first = client.needs_gradient(ann)
            held = self._held if self._held is not None and self._held.key == key else None
            noise_std, generator = 0.0, None
            if first and held is not None:
                noise_std, generator = self.learner.secure_sum_noise(threshold=client.threshold)
            if held is not None:
                self.learner.record_distributed_noise(threshold=client.threshold, participants=len(ann.participants),
                                                      first_attempt=first)
            masked = client.contribute(ann, held.grad if (first and held is not None) else None,
                                       noise_std=noise_std, generator=generator,
                                       secure_noise=self.learner.policy.secure_noise,
                                       budget_left=held.budget_left if held is not None else None)
        except SecAggRefusal as exc:
            self._refuse_attempt(ann, exc.code, exc.detail or exc.code)
            return
        except SecganError as exc:  # e.g. a non-finite held gradient: refuse this attempt, keep serving
            log.error("secagg_failed", error=type(exc).__name__)
            self._refuse_attempt(ann, "site_error", type(exc).__name__)
            return
        self.counts["masked" if first else "remasked"] += 1
        self._send(masked)
        log.info("masked_sent", round=ann.round, step=ann.step, attempt=ann.attempt,
                 participants=len(ann.participants), budget_left=masked.budget_left)

    def _refuse_attempt(self, ann: SecAggAnnounce, code: str, reason: str) -> None:
        self.counts[f"refused_{code}"] += 1
        log.warning("secagg_refused", code=code, round=ann.round, attempt=ann.attempt)
        self._send(Refusal(run_id=ann.run_id, round=ann.round, step=ann.step, code=code, reason=reason[:200]))

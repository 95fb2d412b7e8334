"""A sanitize site's part in a secure-sum round: its noise share and the ledger's statement of it.

Only in sanitize mode does the site add noise of its own to a masked contribution (dpsgd's noise is
inside D's training, "off" has none). The statement that the sum carries the full noise as long as
the threshold of participants is honest is written into the ledger, durably, before the masked
contribution it describes is sent.
"""

from __future__ import annotations

from typing import Any

from secgan.secagg import distributed_noise_statement

DISTRIBUTED_NOISE_KEY = "distributed_noise"  # ledger.json: secure-sum noise statement (sanitize mode)


def record_distributed_noise(ledger: Any, *, sigma_total: float, threshold: int, participants: int,
                             first_attempt: bool) -> dict[str, Any]:
    """Annotate the ledger with the distributed-noise statement (assumption, threshold, slack),
    counting releases (first attempts) and the worst participation and slack seen."""
    stmt = distributed_noise_statement(sigma_total=sigma_total, threshold=threshold, participants=participants)
    prev = ledger.to_dict().get(DISTRIBUTED_NOISE_KEY) or {}
    note = {
        **stmt,
        "releases": int(prev.get("releases", 0)) + (1 if first_attempt else 0),
        "participants_min": min(participants, int(prev.get("participants_min", participants))),
        "variance_slack_max": max(stmt["variance_slack"], float(prev.get("variance_slack_max", 0.0))),
    }
    ledger.annotate(DISTRIBUTED_NOISE_KEY, note)
    return note

"""The two secure-sum protocol messages. They are defined in ``secgan.messages`` (the one schema
module the wire codec reads) and re-exported here for the protocol code.

Round flow (attempt a of step s of round r):
  coordinator -> every participant: FakeBatch (same cond/fake to all, sent once per round) and
                                    SecAggAnnounce (participant set, keys as relayed, codec, digest)
  site -> coordinator:              SecAggMasked (masked fixed-point vector, same digest) or Refusal
On a missed deadline the coordinator sends a new SecAggAnnounce (attempt a + 1, smaller set);
sites re-mask the gradient they already computed for (r, s) with fresh masks.
"""

from __future__ import annotations

from secgan.messages import SecAggAnnounce, SecAggMasked

SECAGG_MESSAGE_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (SecAggAnnounce, SecAggMasked)}

__all__ = ["SECAGG_MESSAGE_TYPES", "SecAggAnnounce", "SecAggMasked"]

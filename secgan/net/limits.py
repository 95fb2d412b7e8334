"""Wire limits, and whether one training batch fits them.

:class:`WireLimits` bounds every message before anything is allocated. :func:`batch_wire_problem`
is checked when a configuration is loaded, so a batch too large for ``wire.max_tensor_bytes`` is
refused at start, never in the middle of a round.

The frames of a round (see :mod:`secgan.net.schema`): the coordinator's FakeBatch carries ``cond``
``[B, cond_channels, H, W]`` and ``fake`` ``[B, image_channels, H, W]`` float32 (a ClassBatch
``labels`` ``[B]`` int64 instead of ``cond``, a FreeBatch ``fake`` alone); a routed site answers
a float32 gradient of ``fake``'s shape, a secure-sum site the same shape as int64 ring elements.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from secgan.core.config import rng


@dataclass(frozen=True)
class WireLimits:
    """Upper bounds enforced before anything is allocated. Defaults fit [64, 4, 64, 64] float32
    (4 MiB a tensor) with room to spare; raise them for larger images or batches."""

    # frames in one message (header + tensors)
    max_frames: int = field(default=8, metadata=rng(min=1, max=64))
    # size of the JSON header frame
    max_header_bytes: int = field(default=64 * 1024, metadata=rng(min=256, max=16 * 2**20))
    # size of one tensor frame; also sets ZMQ_MAXMSGSIZE on the sockets
    max_tensor_bytes: int = field(default=16 * 2**20, metadata=rng(min=1, max=2**31))
    # all frames of one message together
    max_total_bytes: int = field(default=48 * 2**20, metadata=rng(min=1, max=2**33))
    # rank of a tensor
    max_dims: int = field(default=4, metadata=rng(min=1, max=8))
    # length of any one tensor dimension
    max_dim: int = field(default=4096, metadata=rng(min=1, max=2**31))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f.name} must be a positive integer")
        if self.max_total_bytes < self.max_header_bytes:
            raise ValueError("max_total_bytes must be >= max_header_bytes")


def max_message_bytes(limits: WireLimits) -> int:
    """The largest single frame :func:`secgan.net.codec.encode` produces (and ``decode`` accepts)
    under ``limits``; the total of all frames is enforced by both. ZMQ_MAXMSGSIZE is this plus the
    transport's per-frame overhead (:func:`secgan.net.transport.max_message_bytes`)."""
    return max(limits.max_header_bytes, limits.max_tensor_bytes)


FLOAT32_BYTES = 4
INT64_BYTES = 8
HEADER_ALLOWANCE = 4096  # what a round's JSON header frame takes, generously


def batch_frames(*, image: Any, batch_size: int, aggregation: str = "routed") -> dict[str, list[int]]:
    """Message type -> the sizes in bytes of its tensor frames for one batch (the batch message of
    the spec's condition kind: a spatial map, one int64 label per row, or no condition)."""
    plane = image.size * image.size
    fake = batch_size * image.image_channels * plane * FLOAT32_BYTES
    kind = getattr(image, "condition", "labelmap")
    if kind == "class":
        batch = {"class_batch": [batch_size * INT64_BYTES, fake]}
    elif kind == "none":
        batch = {"free_batch": [fake]}
    else:
        batch = {"fake_batch": [batch_size * image.cond_channels * plane * FLOAT32_BYTES, fake]}
    # secure-sum: words packed to the ring's k <= 63 bits (protocol 3), so 8 bytes a word bound them
    reply = batch_size * image.image_channels * plane * (INT64_BYTES if aggregation == "secure-sum" else FLOAT32_BYTES)
    return {**batch, "gradient" if aggregation != "secure-sum" else "secagg_masked": [reply]}


def batch_wire_problem(*, image: Any, batch_size: int, limits: Any, aggregation: str = "routed") -> str | None:
    """None when every message of a round fits ``limits``; else a sentence naming the keys to change."""
    if batch_size > limits.max_dim or image.size > limits.max_dim:
        return (f"train.batch_size = {batch_size} or image.size = {image.size} exceeds "
                f"wire.max_dim = {limits.max_dim}")
    for mtype, frames in batch_frames(image=image, batch_size=batch_size, aggregation=aggregation).items():
        largest, total = max(frames), sum(frames) + HEADER_ALLOWANCE
        if largest > limits.max_tensor_bytes:
            return (f"train.batch_size = {batch_size} at image.size = {image.size} makes a {mtype} tensor of "
                    f"{largest} bytes, above wire.max_tensor_bytes = {limits.max_tensor_bytes}: lower "
                    f"train.batch_size or raise wire.max_tensor_bytes (and wire.max_total_bytes) on every party")
        if total > limits.max_total_bytes:
            return (f"train.batch_size = {batch_size} at image.size = {image.size} makes a {mtype} message of "
                    f"about {total} bytes, above wire.max_total_bytes = {limits.max_total_bytes}: lower "
                    f"train.batch_size or raise wire.max_total_bytes on every party")
    return None

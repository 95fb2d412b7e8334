"""Whether one training batch fits the wire limits: checked when a configuration is loaded, so a
batch too large for ``wire.max_tensor_bytes`` is refused at start, never in the middle of a round.

The frames of a round (see :mod:`secgan.messages`): the coordinator's FakeBatch carries ``cond``
``[B, cond_channels, H, W]`` and ``fake`` ``[B, image_channels, H, W]`` float32; a routed site answers
a float32 gradient of ``fake``'s shape, a secure-sum site the same shape as int64 ring elements.
"""

from __future__ import annotations

from typing import Any

FLOAT32_BYTES = 4
INT64_BYTES = 8
HEADER_ALLOWANCE = 4096  # what a round's JSON header frame takes, generously


def batch_frames(*, image: Any, batch_size: int, aggregation: str = "routed") -> dict[str, list[int]]:
    """Message type -> the sizes in bytes of its tensor frames for one batch."""
    plane = image.size * image.size
    fake = batch_size * image.image_channels * plane * FLOAT32_BYTES
    cond = batch_size * image.cond_channels * plane * FLOAT32_BYTES
    reply = batch_size * image.image_channels * plane * (INT64_BYTES if aggregation == "secure-sum" else FLOAT32_BYTES)
    return {"fake_batch": [cond, fake], "gradient" if aggregation != "secure-sum" else "secagg_masked": [reply]}


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

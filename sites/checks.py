"""What a site checks on a received FakeBatch before anything is charged or trained on."""

from __future__ import annotations

from secgan.core.errors import ProtocolError
from secgan.core.spec import ImageSpec
from secgan.net.codec import check_tensors
from secgan.net.schema import FakeBatch


# The values a site accepts in a FakeBatch, checked before anything is charged or trained on.
# fake: G ends in tanh (secgan.gan.models.ConditionalGenerator), like the real images in [-1, 1];
# cond: one-hot label maps (secgan.core.spec), resampled ones stay in [0, 1].
VALUE_RANGES: dict[str, tuple[float, float]] = {"fake": (-1.0, 1.0), "cond": (0.0, 1.0)}


def check_fake_batch(msg: FakeBatch, image: ImageSpec, *, max_batch: int = 4096) -> None:
    """The checks a site runs on a received batch before anything is charged (ProtocolError).

    First the schema's tensor checks (float32, cond and fake both the same [B, 4, H, W], finite:
    ``codec.check_tensors``, the codec's own, for the in-process path where no codec ran), then what
    only the site knows: its image size, a batch size in [1, max_batch], and the value ranges.
    Finite values far outside the generator's range (e.g. 3e38) would overflow D's update and
    poison it, so they are refused (``out_of_range``) like NaN (``non_finite``)."""
    check_tensors(msg)
    b, _, h, w = msg.fake.shape
    if h != image.size or w != image.size:
        raise ProtocolError("bad_shape", f"batch shape {tuple(msg.fake.shape)} is not [B, 4, {image.size}, {image.size}]")
    if not 1 <= b <= max_batch:
        raise ProtocolError("bad_shape", f"batch size {b} out of range")
    for name in ("cond", "fake"):
        t = getattr(msg, name)
        lo, hi = VALUE_RANGES[name]
        if bool((t < lo).any()) or bool((t > hi).any()):
            raise ProtocolError("out_of_range", f"{name} has values outside [{lo:g}, {hi:g}]")

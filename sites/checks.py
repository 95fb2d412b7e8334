"""What a site checks on a received batch before anything is charged or trained on."""

from __future__ import annotations

from secgan.core.errors import ProtocolError
from secgan.core.spec import ImageSpec
from secgan.net.codec import check_tensors
from secgan.net.schema import Batch, batch_problem

# The values a site accepts for a spatial condition: one-hot label maps (secgan.core.spec),
# resampled ones stay in [0, 1]. The fakes' range is the spec's own (G ends in tanh mapped onto
# image.value_range, secgan.gan.models.ConditionalGenerator), like the real images.
COND_RANGE: tuple[float, float] = (0.0, 1.0)


def value_ranges(image: ImageSpec) -> dict[str, tuple[float, float]]:
    """Tensor field -> the closed range its values must lie in, for ``image``'s batch message."""
    lo, hi = (float(v) for v in image.value_range)
    return {"fake": (lo, hi), "cond": COND_RANGE} if image.spatial else {"fake": (lo, hi)}


def check_fake_batch(msg: Batch, image: ImageSpec, *, max_batch: int = 4096) -> None:
    """The checks a site runs on a received batch before anything is charged (ProtocolError).

    First the schema's tensor checks (dtypes, the shape agreement of the message's tensors, finite:
    ``codec.check_tensors``, the codec's own, for the in-process path where no codec ran), then what
    only the site knows: the message type, channels and size of its image spec
    (``schema.batch_problem``), a batch size in [1, max_batch], class labels in range and the value
    ranges. Finite values far outside the generator's range (e.g. 3e38) would overflow D's update
    and poison it, so they are refused (``out_of_range``) like NaN (``non_finite``)."""
    check_tensors(msg)
    b = msg.fake.shape[0]
    if not 1 <= b <= max_batch:
        raise ProtocolError("bad_shape", f"batch size {b} out of range")
    problem = batch_problem(msg, image)
    if problem is not None:
        code = "out_of_range" if problem.startswith("class labels") else "bad_shape"
        raise ProtocolError(code, problem)
    for name, (lo, hi) in value_ranges(image).items():
        t = getattr(msg, name)
        if bool((t < lo).any()) or bool((t > hi).any()):
            raise ProtocolError("out_of_range", f"{name} has values outside [{lo:g}, {hi:g}]")


def image_spec_differs(size: int, wire: object, ours: ImageSpec) -> str:
    """"" when the Welcome's image spec (``size`` + ``ImageSpec.wire_form``) is this site's own,
    else the names of the fields that differ (or why it cannot be read): the site then refuses the run."""
    from secgan.core.config import to_dict
    from secgan.core.errors import ConfigError
    from secgan.core.spec import spec_from_wire

    try:
        theirs = spec_from_wire(size, wire)
    except ConfigError as exc:
        return f"unreadable image spec ({str(exc)[:120]})"
    a, b = to_dict(theirs), to_dict(ours)
    return ", ".join(f"image.{k}" for k in a if a[k] != b[k])

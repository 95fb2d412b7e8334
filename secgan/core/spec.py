"""Shared conventions for images and conditions. Everything that crosses a module boundary uses these.

One owner: :class:`ImageSpec` says what an image and its condition are for a run. Its defaults are
the brain MRI layout, and every part that reads a shape (G and D, the step, the wire's tensor
specs, the sites' checks, the checkpoint, the audits) reads it from the spec:

- An image is float32 ``[C, H, W]`` (batched ``[B, C, H, W]``), ``C = image_channels`` named by
  ``channel_names``, values in ``value_range``. Brain default: ``IMAGE_CHANNELS`` (t1, t1ce, t2,
  flair), intensities normalised per volume to roughly ``[-1, 1]`` (background exactly -1); RGB
  images (histology, dermoscopy) are ``[0, 1]``.
- A condition depends on ``condition`` (its kind, ``CONDITION_KINDS``):

  - ``labelmap``: a one-hot-ish float32 label map ``[K, H, W]``, ``K = cond_channels`` named by
    ``cond_names``. Brain default ``COND_CHANNELS``: ``brain`` (1 inside the head, tumour included),
    ``ncr`` (BraTS label 1, necrotic core), ``ed`` (label 2, oedema), ``et`` (label 4, enhancing
    tumour); tumour channels disjoint.
  - ``instances``: the same float32 ``[K, H, W]`` layout for an instance/boundary map (nuclei:
    ``background, nucleus, boundary``), derived from an instance map by the data reader.
  - ``class``: one class of ``cond_channels`` classes (``cond_names`` the class names), held as a
    one-hot float32 ``[K, 1, 1]`` (so batching, sampling and D's input handle it like a map);
    the wire carries it as one int64 label per row (:mod:`secgan.net.schema`).
  - ``none``: unconditional; the condition is the empty float32 ``[0, 1, 1]`` and the wire carries
    no condition tensor at all.

- A segmentation (brain) is an int label map ``[H, W]`` with BraTS values ``{0, 1, 2, 4}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from secgan.core.config import choices, rng

IMAGE_CHANNELS: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
COND_CHANNELS: tuple[str, ...] = ("brain", "ncr", "ed", "et")
BRATS_LABELS: tuple[int, ...] = (0, 1, 2, 4)
# Tumour regions scored downstream, as sets of BraTS labels.
REGIONS: dict[str, tuple[int, ...]] = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}
# the kinds of condition a run can have (spatial kinds first)
CONDITION_KINDS: tuple[str, ...] = ("labelmap", "instances", "class", "none")
SPATIAL_KINDS: tuple[str, ...] = ("labelmap", "instances")
# the channels of an instance/boundary condition derived from a nuclei instance map
INSTANCE_CHANNELS: tuple[str, ...] = ("background", "nucleus", "boundary")
RGB_CHANNELS: tuple[str, ...] = ("r", "g", "b")
MAX_CHANNELS = 64


@dataclass(frozen=True)
class ImageSpec:
    """What one training image and its condition are: size, channels, value range, condition kind."""

    # in-plane size of the training slices, a multiple of 16
    size: int = field(default=64, metadata=rng(min=16, max=512))
    # channels of an image: 4 for BraTS (t1, t1ce, t2, flair), 3 for RGB, 1 for grey
    image_channels: int = field(default=4, metadata=rng(min=1, max=MAX_CHANNELS))
    # one name per image channel
    channel_names: tuple[str, ...] = IMAGE_CHANNELS
    # [low, high] of image values: [-1, 1] for normalised MRI, [0, 1] for RGB; G's output spans it
    value_range: tuple[float, float] = (-1.0, 1.0)
    # kind of condition: "labelmap" (per-pixel classes), "instances" (nuclei mask + boundary map),
    # "class" (one class label per image) or "none" (unconditional)
    condition: str = field(default="labelmap", metadata=choices(*CONDITION_KINDS))
    # channels of a labelmap/instances condition, or number of classes of a class condition; 0 for none
    cond_channels: int = field(default=4, metadata=rng(min=0, max=MAX_CHANNELS))
    # one name per condition channel (labelmap, instances) or per class (class); empty for none
    cond_names: tuple[str, ...] = COND_CHANNELS
    # class condition only: relative frequency of each class the coordinator draws labels with
    # (empty: uniform)
    class_prior: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """None for a valid spec, else a sentence naming the key that is wrong."""
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 16 or self.size % 16:
            return f"image.size must be a multiple of 16 (>= 16), got {self.size!r}"
        ch = self.image_channels
        if isinstance(ch, bool) or not isinstance(ch, int) or not 1 <= ch <= MAX_CHANNELS:
            return f"image.image_channels must be an integer in 1..{MAX_CHANNELS}, got {ch!r}"
        bad = _names_problem("image.channel_names", self.channel_names, ch, "image.image_channels")
        if bad:
            return bad
        vr = self.value_range
        if (not isinstance(vr, tuple) or len(vr) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vr)
                or not vr[0] < vr[1]):
            return f"image.value_range must be two finite numbers [low, high] with low < high, got {vr!r}"
        if self.condition not in CONDITION_KINDS:
            return f"image.condition must be one of {', '.join(CONDITION_KINDS)}, got {self.condition!r}"
        k = self.cond_channels
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_CHANNELS:
            return f"image.cond_channels must be an integer in 0..{MAX_CHANNELS}, got {k!r}"
        if self.condition == "none":
            if k != 0 or self.cond_names:
                return ("image.condition = 'none' takes no condition: set image.cond_channels = 0 and "
                        f"image.cond_names = [] (got {k} and {len(self.cond_names)} names)")
        elif self.condition == "class":
            if k < 2:
                return f"image.condition = 'class' needs at least 2 classes in image.cond_channels, got {k}"
        elif k < 1:
            return f"image.condition = {self.condition!r} needs at least 1 condition channel, got cond_channels = {k}"
        if self.condition != "none":
            what = "class" if self.condition == "class" else "channel"
            bad = _names_problem("image.cond_names", self.cond_names, k, "image.cond_channels", what=what)
            if bad:
                return bad
        prior = self.class_prior
        if prior:
            if self.condition != "class":
                return f"image.class_prior is for image.condition = 'class' only (this spec is {self.condition!r})"
            if len(prior) != k:
                return f"image.class_prior lists {len(prior)} frequencies for {k} classes (image.cond_channels)"
            if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p > 0
                       for p in prior):
                return f"image.class_prior frequencies must be finite and > 0, got {prior!r}"
        return None

    # ------------------------------------------------------------------ derived facts

    @property
    def spatial(self) -> bool:
        """True when the condition is a map over the image (labelmap, instances)."""
        return self.condition in SPATIAL_KINDS

    @property
    def cond_shape(self) -> tuple[int, int, int]:
        """Shape of one condition as the models and datasets hold it (module doc)."""
        if self.spatial:
            return (self.cond_channels, self.size, self.size)
        return (self.cond_channels, 1, 1)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_channels, self.size, self.size)

    @property
    def prior(self) -> tuple[float, ...]:
        """Class condition: the normalised class frequencies the coordinator draws from."""
        if self.condition != "class":
            return ()
        raw = self.class_prior or (1.0,) * self.cond_channels
        total = float(sum(raw))
        return tuple(float(p) / total for p in raw)

    def wire_form(self) -> dict:
        """The spec as plain data without ``size`` (the Welcome carries the size on its own)."""
        from secgan.core.config import to_dict

        return {k: v for k, v in to_dict(self).items() if k != "size"}


def _names_problem(key: str, names: object, n: int, count_key: str, *, what: str = "channel") -> str | None:
    if not isinstance(names, tuple) or not all(isinstance(s, str) for s in names):
        return f"{key} must be a list of names, got {names!r}"
    if len(names) != n:
        shown = ", ".join(names[:8])
        return f"{key} lists {len(names)} names ({shown}) for {count_key} = {n}: give one name per {what}"
    if len(set(names)) != n or not all(0 < len(s) <= 32 and s.isprintable() for s in names):
        return f"{key} must be distinct printable names of 1..32 characters, got {names!r}"
    return None


def rgb_spec(size: int, *, condition: str, cond_names: tuple[str, ...] = (),
             class_prior: tuple[float, ...] = ()) -> ImageSpec:
    """An RGB spec in [0, 1]: ``condition`` "instances" (default names ``INSTANCE_CHANNELS``),
    "class" (``cond_names`` the class names) or "none"."""
    names = cond_names or (INSTANCE_CHANNELS if condition in SPATIAL_KINDS else ())
    return ImageSpec(size=size, image_channels=3, channel_names=RGB_CHANNELS, value_range=(0.0, 1.0),
                     condition=condition, cond_channels=len(names), cond_names=names, class_prior=class_prior)


def spec_from_wire(size: int, data: object) -> ImageSpec:
    """The inverse of :meth:`ImageSpec.wire_form` (ConfigError naming what is wrong)."""
    from secgan.core.config import load_dataclass
    from secgan.core.errors import ConfigError

    if not isinstance(data, dict) or "size" in data:
        raise ConfigError("the image spec must be a table without 'size'")
    return load_dataclass(ImageSpec, {**data, "size": size}, prefix="image.")


def one_hot_classes(labels: np.ndarray, n: int) -> np.ndarray:
    """Class labels ``[N]`` (ints in 0..n-1) -> class conditions ``[N, n, 1, 1]`` float32."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"class labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise ValueError(f"class labels must lie in 0..{n - 1}")
    out = np.zeros((labels.shape[0], n, 1, 1), dtype=np.float32)
    out[np.arange(labels.shape[0]), labels, 0, 0] = 1.0
    return out


def encode_condition(seg: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """BraTS label map + brain mask (both ``[H, W]``) -> condition ``[4, H, W]`` float32."""
    if seg.shape != brain.shape or seg.ndim != 2:
        raise ValueError(f"seg {seg.shape} and brain {brain.shape} must be equal 2-D shapes")
    out = np.zeros((4,) + seg.shape, dtype=np.float32)
    out[0] = (brain.astype(bool) | (seg > 0)).astype(np.float32)
    out[1] = seg == 1
    out[2] = seg == 2
    out[3] = seg == 4
    return out


def decode_condition(cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Condition ``[4, H, W]`` -> (BraTS label map ``[H, W]`` int16, brain mask bool)."""
    if cond.ndim != 3 or cond.shape[0] != 4:
        raise ValueError(f"condition must be [4, H, W], got {cond.shape}")
    seg = np.zeros(cond.shape[1:], dtype=np.int16)
    seg[cond[2] > 0.5] = 2
    seg[cond[1] > 0.5] = 1
    seg[cond[3] > 0.5] = 4
    return seg, cond[0] > 0.5

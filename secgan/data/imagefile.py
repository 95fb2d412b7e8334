"""Checked reading of 2-D image files (PNG, TIFF, JPEG) through Pillow, for the tile and ISIC readers.

Every check happens before the pixels are used and every failure is a :class:`DataError` that names
the file. What is accepted (:func:`read_rgb`):

- formats: PNG, TIFF, JPEG (what Pillow identifies; anything else, or a file Pillow cannot decode,
  is refused: there is no TIFF fallback, a TIFF Pillow cannot read, e.g. a tiled or JPEG2000 one, is
  "unreadable");
- bit depth: 8 bits per channel, read from the file's own header (Pillow silently narrows a 16-bit
  RGB PNG to 8 bits, which would hide a different intensity scale);
- colour mode: ``RGB`` as is; ``P`` (palette) converted to RGB (lossless, the palette holds the
  colours); ``RGBA`` only when every pixel is opaque (alpha dropped), otherwise refused (a
  transparent pixel has no colour); grey (``L``, ``LA``, ``1``, ``I``, ``I;16``, ``F``), ``CMYK``,
  ``YCbCr`` and the rest are refused: stain and skin colour are what these domains are about;
- size: between ``min_side`` and ``max_side`` pixels a side, at most ``max_pixels`` pixels (checked
  from the header, before decoding);
- damage: the whole file is decoded (``load``), so a truncated or corrupt file is an error, never a
  partly grey image (``ImageFile.LOAD_TRUNCATED_IMAGES`` is not honoured: it is forced off here).

Label maps (:func:`read_labels`): one integer channel, ``1``/``L`` (8 bit), ``I;16`` (16 bit) or
``I`` (32 bit signed), returned as int32; negative ids are refused. Colour or float masks are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from secgan.core.errors import DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LABEL_MODES = frozenset({"1", "L", "I;16", "I"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_BITS_PER_SAMPLE = 258


@dataclass(frozen=True)
class ImageLimits:
    """What one image file may look like before its pixels are decoded."""

    min_side: int = 8
    max_side: int = 8192
    max_pixels: int = 64 << 20


def _open(path: Path, limits: ImageLimits):
    from PIL import Image, ImageFile, UnidentifiedImageError

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: unreadable image (not a PNG, TIFF or JPEG Pillow can decode, or damaged)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable image ({exc.__class__.__name__})") from None
    w, h = im.size
    if not (limits.min_side <= w <= limits.max_side and limits.min_side <= h <= limits.max_side):
        im.close()
        raise DataError(f"{path}: size {w}x{h} outside {limits.min_side}..{limits.max_side} pixels a side")
    if w * h > limits.max_pixels:
        im.close()
        raise DataError(f"{path}: {w}x{h} pixels exceeds the limit of {limits.max_pixels}")
    return im


def _load(im, path: Path) -> None:
    from PIL import Image

    try:
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: truncated or corrupt image data ({exc.__class__.__name__})") from None


def header_bit_depth(im, path: Path) -> int:
    """Bits per channel as the file declares them (PNG IHDR, TIFF BitsPerSample; JPEG: 8)."""
    if im.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(33)
        if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
            raise DataError(f"{path}: PNG header is damaged")
        return int(head[24])
    if im.format == "TIFF":
        bits = im.tag_v2.get(_TIFF_BITS_PER_SAMPLE, (1,))
        bits = tuple(bits) if isinstance(bits, (tuple, list)) else (bits,)
        if len(set(bits)) != 1:
            raise DataError(f"{path}: TIFF channels have different bit depths {bits}")
        return int(bits[0])
    return 8


def read_rgb(path: Path, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """An 8-bit colour image as ``uint8 [H, W, 3]`` after the checks of the module docstring."""
    path = Path(path)
    im = _open(path, limits)
    try:
        bits = header_bit_depth(im, path)
        mode = im.mode
        if mode not in ("RGB", "RGBA", "P"):
            raise DataError(f"{path}: colour mode {mode!r} refused (RGB needed; grey, CMYK and other modes are not converted)")
        if mode != "P" and bits != 8:
            raise DataError(f"{path}: {bits} bits per channel refused (8 needed)")
        _load(im, path)
        if mode == "RGBA":
            rgba = np.asarray(im)
            if (rgba[..., 3] != 255).any():
                raise DataError(f"{path}: RGBA image with transparent pixels refused (a transparent pixel has no colour)")
            return np.ascontiguousarray(rgba[..., :3])
        if mode == "P":
            return np.asarray(im.convert("RGB"))
        return np.asarray(im)
    finally:
        im.close()


def read_labels(path: Path, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """A one-channel integer label map as ``int32 [H, W]`` (ids >= 0)."""
    path = Path(path)
    im = _open(path, limits)
    try:
        if im.mode not in LABEL_MODES:
            raise DataError(f"{path}: label map mode {im.mode!r} refused (one integer channel needed: "
                            f"{', '.join(sorted(LABEL_MODES))})")
        header_bit_depth(im, path)  # a damaged PNG header is said as such
        _load(im, path)
        arr = np.asarray(im).astype(np.int32)
    finally:
        im.close()
    if (arr < 0).any():
        raise DataError(f"{path}: label map has negative ids")
    return arr


def files_by_stem(folder: Path, what: str) -> dict[str, Path]:
    """The image files of ``folder`` (suffixes of :data:`IMAGE_SUFFIXES`, hidden files skipped) by stem;
    two files with one stem are an error. ``what`` names a stem in messages ("tile", "image id")."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder is missing")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in found:
            raise DataError(f"{path}: a second file for {what} {path.stem!r} (also {found[path.stem].name})")
        found[path.stem] = path
    return found


def to_chw_unit(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` -> ``float32 [3, H, W]`` in [0, 1] (value / 255)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(rgb, dtype=np.float32) / np.float32(255.0), -1, 0))

"""Synthetic data sets: sampling a trained generator, writing and reading its output.

A synthetic folder holds
- ``synthetic.safetensors``: tensors ``images`` [N,4,H,W] float32 in [-1,1] and ``conds`` [N,4,H,W]
  float32 (the label maps they were generated from); the authoritative copy;
- ``nifti/``: the same samples in BraTS layout (``syn-XXXX/syn-XXXX_{t1,t1ce,t2,flair,seg}.nii.gz``
  plus ``split.json`` listing every case under "train"), so anything that reads a site folder can
  read it. Consecutive samples are stacked along the last axis, ``slices_per_case`` per case; a
  case shorter than 8 slices is padded with empty background slices (no brain, no tumour), which
  slice loaders drop;
- ``previews/``: PNG grids of a few samples.

The safetensors file is written byte for byte reproducibly (tensors and header keys in sorted order),
so equal samples give an equal SHA-256, and its metadata records the SHA-256 of the generator
checkpoint that drew them (``generator_sha256``), so an audit can check that a folder and a
generator belong to the same release.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from secgan.core.errors import DataError
from secgan.core.fsio import atomic_write_bytes, atomic_write_json
from secgan.core.spec import COND_CHANNELS, IMAGE_CHANNELS, ImageSpec, decode_condition

SYNTHETIC_FILE = "synthetic.safetensors"
MIN_CASE_SLICES = 8
MAX_SAMPLES = 1_000_000


def _as_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    if a.ndim != 4:
        raise DataError(f"{name}: expected [N, C, H, W], got shape {a.shape}")
    return np.ascontiguousarray(a)


def write_synthetic(
    out_dir: str | Path,
    images,
    conds,
    *,
    previews: bool = True,
    nifti: bool = True,
    slices_per_case: int = 16,
    meta: dict | None = None,
    generator_checkpoint: str | Path | None = None,
    pixel_mm: float | None = None,
) -> Path:
    """Write a synthetic folder (see module doc). Returns ``out_dir``.

    ``generator_checkpoint``: the checkpoint the samples were drawn from; its SHA-256 is recorded.
    ``pixel_mm``: the in-plane pixel size the NIfTI copies state (None: unknown, said so in the header)."""
    out_dir = Path(out_dir)
    images = _as_array(images, "images")
    conds = _as_array(conds, "conds")
    if images.ndim != 4 or conds.ndim != 4 or conds.shape[0] != images.shape[0] or conds.shape[2:] not in (
            images.shape[2:], (1, 1)):
        raise DataError(f"images {images.shape} and conds {conds.shape} must be [N, C, H, W] and [N, K, H, W] "
                        f"(or [N, K, 1, 1] for a class or no condition)")
    brain = images.shape[1] == len(IMAGE_CHANNELS) and conds.shape[1:] == (len(COND_CHANNELS),) + images.shape[2:]
    if images.shape[0] < 1:
        raise DataError("no samples to write")
    if not np.isfinite(images).all() or not np.isfinite(conds).all():
        raise DataError("samples contain NaN or infinite values")
    if slices_per_case < 1:
        raise ValueError("slices_per_case must be >= 1")
    if pixel_mm is not None and not (isinstance(pixel_mm, (int, float)) and 0.01 <= pixel_mm <= 100.0):
        raise ValueError(f"pixel_mm must be a number in 0.01..100 (mm), got {pixel_mm!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {"format": "secgan-synthetic/1", "n": str(images.shape[0]), "meta": json.dumps(meta or {}, sort_keys=True)}
    if generator_checkpoint is not None:
        from secgan.gan.checkpoint import checkpoint_file

        header[GENERATOR_SHA256] = file_sha256(checkpoint_file(generator_checkpoint))
    atomic_write_bytes(out_dir / SYNTHETIC_FILE, safetensors_bytes({"images": images, "conds": conds}, header))
    if nifti and brain:  # the NIfTI copies are BraTS cases (4 modalities + seg): brain layout only
        _write_nifti_cases(out_dir / "nifti", images, conds, slices_per_case, pixel_mm)
    if previews:
        k = min(8, images.shape[0])
        save_grid(out_dir / "previews" / "samples.png", None, images[:k], conds[:k])
    return out_dir


GENERATOR_SHA256 = "generator_sha256"
_ST_DTYPES = {np.dtype(np.float32): "F32"}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file with tensors and header keys in sorted order: the same inputs always give
    the same bytes (the library's writer orders its metadata map differently from run to run)."""
    entries, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype not in _ST_DTYPES:
            raise DataError(f"{name}: dtype {a.dtype} cannot be written (float32 only)")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        entries[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **entries}
    text = json.dumps(head, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def read_synthetic_metadata(folder: str | Path) -> dict[str, str]:
    """The header metadata of ``folder/synthetic.safetensors`` (``generator_sha256`` when recorded)."""
    path = Path(folder)
    if path.is_dir():
        path = path / SYNTHETIC_FILE
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({type(exc).__name__})") from None


# NIfTI xform code 2, "aligned anatomical": RAS+ axes, but not a scanner's coordinates (code 1 would claim them)
SYNTHETIC_XFORM_CODE = 2


def synthetic_affine(pixel_mm: float | None) -> np.ndarray:
    """The affine of a synthetic case: RAS+ axes (the slices are canonical, as the reader makes real
    ones), ``pixel_mm`` in every direction (1 when unknown; the header then says it is unknown)."""
    p = 1.0 if pixel_mm is None else float(pixel_mm)
    return np.diag([p, p, p, 1.0])


def _write_nifti_cases(folder: Path, images: np.ndarray, conds: np.ndarray, per_case: int,
                       pixel_mm: float | None = None) -> None:
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    n, _, h, w = images.shape
    affine = synthetic_affine(pixel_mm)
    # what the geometry is, in the header's own words (80 bytes at most)
    descrip = "secgan synthetic: independent 2-D slices; " + (
        f"pixel {pixel_mm:g} mm" if pixel_mm is not None else "pixel size unknown")
    ids = []
    for k, start in enumerate(range(0, n, per_case)):
        img = images[start : start + per_case]
        cnd = conds[start : start + per_case]
        segs = np.stack([decode_condition(c)[0] for c in cnd])  # [s, H, W]
        pad = max(0, MIN_CASE_SLICES - img.shape[0])
        if pad:
            img = np.concatenate([img, np.full((pad, 4, h, w), -1.0, np.float32)])
            segs = np.concatenate([segs, np.zeros((pad, h, w), np.int16)])
        cid = f"syn-{k:04d}"
        case_dir = folder / cid
        case_dir.mkdir(exist_ok=True)
        for c, name in enumerate(IMAGE_CHANNELS):
            vol = np.ascontiguousarray(np.moveaxis(img[:, c], 0, 2), dtype=np.float32)  # [H, W, s]
            _save_nifti(case_dir / f"{cid}_{name}.nii.gz", vol, affine, nib, descrip, pixel_mm is not None)
        _save_nifti(case_dir / f"{cid}_seg.nii.gz", np.ascontiguousarray(np.moveaxis(segs, 0, 2), dtype=np.int16),
                    affine, nib, descrip, pixel_mm is not None)
        ids.append(cid)
    atomic_write_json(folder / "split.json", {"train": ids, "test": []})


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, nib, descrip: str, known_size: bool) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm" if known_size else "unknown", "unknown")
    img.header["descrip"] = descrip.encode("ascii")[:79]
    img.set_qform(affine, code=SYNTHETIC_XFORM_CODE)
    img.set_sform(affine, code=SYNTHETIC_XFORM_CODE)
    atomic_write_bytes(path, img.to_bytes() if not str(path).endswith(".gz") else _gz(img.to_bytes()))


def _gz(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=6, mtime=0)


def read_synthetic(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images, conds) from ``folder/synthetic.safetensors``, validated; DataError names the file."""
    path = Path(folder)
    if path.is_dir():
        path = path / SYNTHETIC_FILE
    if not path.is_file():
        raise DataError(f"{path}: synthetic data file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = set(fh.keys())
            if keys != {"images", "conds"}:
                raise DataError(f"{path}: expected tensors 'images' and 'conds', found {sorted(keys)}")
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in keys}
            s = shapes["images"]
            if len(s) != 4 or not 1 <= s[1] <= 64 or s[2] != s[3] or not 16 <= s[2] <= 1024 or not 1 <= s[0] <= MAX_SAMPLES:
                raise DataError(f"{path}: 'images' has shape {s}, expected [N, C, H, H] with 16 <= H <= 1024")
            c = shapes["conds"]
            if len(c) != 4 or c[0] != s[0] or c[2:] not in (s[2:], (1, 1)):
                raise DataError(f"{path}: conds {c} differ from images {s} (need [N, K, H, W] or [N, K, 1, 1])")
            images = fh.get_tensor("images")
            conds = fh.get_tensor("conds")
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({type(exc).__name__})") from None
    for name, t in (("images", images), ("conds", conds)):
        if t.dtype != torch.float32:
            raise DataError(f"{path}: '{name}' has dtype {t.dtype}, expected float32")
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"{path}: '{name}' contains NaN or infinite values")
    if images.numel() and (float(images.min()) < -1.001 or float(images.max()) > 1.001):
        raise DataError(f"{path}: 'images' values outside [-1, 1] (no image spec has a wider range)")
    if conds.numel() and (float(conds.min()) < 0.0 or float(conds.max()) > 1.0):
        raise DataError(f"{path}: 'conds' values outside [0, 1]")
    return images.numpy(), conds.numpy()


def sample_generator(
    checkpoint_path: str | Path,
    *,
    n: int,
    seed: int,
    source: str = "procedural",
    bank_dir: str | Path | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """n samples from a checkpoint's generator, conditions from ``source``; reproducible from ``seed``."""
    from secgan.gan.checkpoint import load_checkpoint
    from secgan.gan.conditions import build_condition_source

    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"n must be in 1..{MAX_SAMPLES}, got {n}")
    ck = load_checkpoint(checkpoint_path)
    image, model = ck.generator_config()
    G = ck.build_generator()
    G.eval()
    conditions = build_condition_source(source, size=image.size, bank_dir=Path(bank_dir) if bank_dir else None,
                                        image=image)
    lo, hi = (float(v) for v in image.value_range)
    gen = torch.Generator().manual_seed(seed)
    imgs, cnds = [], []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            c = conditions.draw(b, generator=gen).to(torch.float32)
            z = torch.randn(b, model.noise_dim, generator=gen)
            imgs.append(G(c, z).clamp(lo, hi).numpy())
            cnds.append(c.numpy())
    return np.concatenate(imgs), np.concatenate(cnds)


_SEG_COLOURS = {0: (0, 0, 0), 1: (0.9, 0.2, 0.2), 2: (0.2, 0.8, 0.2), 4: (1.0, 0.9, 0.1)}
_BRAIN_GREY = 0.35
# What the label-map row of a grid shows, for a page's legend: (name, CSS colour).
GRID_LEGEND = (
    ("background", "rgb(0,0,0)"),
    ("brain", f"rgb({int(255 * _BRAIN_GREY)},{int(255 * _BRAIN_GREY)},{int(255 * _BRAIN_GREY)})"),
    *((name, "rgb({},{},{})".format(*(int(255 * c) for c in _SEG_COLOURS[label])))
      for label, name in ((1, "necrotic / non-enhancing tumour core (label 1)"), (2, "oedema (label 2)"),
                          (4, "enhancing tumour (label 4)"))),
)


def _cond_rgb(cond: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A condition as an RGB tile: the brain colours for a brain label map, else each channel's
    (or class's) index as a grey level (the background black)."""
    if cond.shape[0] != len(COND_CHANNELS) or cond.shape[1:] != size:
        k = cond.shape[0]
        rgb = np.zeros(size + (3,), np.float32)
        if k:
            lab = np.broadcast_to(np.argmax(cond, axis=0) * (cond.max(axis=0) > 0.5), size)
            rgb[:] = (lab / max(k - 1, 1))[..., None]
        return rgb
    seg, brain = decode_condition(cond)
    rgb = np.zeros(seg.shape + (3,), np.float32)
    rgb[brain] = _BRAIN_GREY
    for label, colour in _SEG_COLOURS.items():
        if label:
            rgb[seg == label] = colour
    return rgb


def save_grid(path: str | Path, real_images, fake_images, conds, *, max_cols: int = 6,
              image: ImageSpec | None = None) -> Path:
    """PNG grid: row 0 the conditions, then per channel a synthetic row (and a real row if given);
    an RGB spec (3 channels) is one colour row instead. ``image``: the spec (None: the brain's).

    Drawn as one montage image (one axes), which is much faster than a grid of subplots.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fake = _as_array(fake_images, "fake_images")
    cond = _as_array(conds, "conds")
    real = _as_array(real_images, "real_images") if real_images is not None else None
    cols = min(max_cols, fake.shape[0])
    if image is not None:
        names, (lo, hi) = image.channel_names, (float(v) for v in image.value_range)
    else:  # brain names for 4 channels; a range that holds the samples ([0, 1] when none is negative)
        c = fake.shape[1]
        names = IMAGE_CHANNELS if c == len(IMAGE_CHANNELS) else tuple(f"channel {k}" for k in range(c))
        lo, hi = (-1.0, 1.0) if float(fake.min(initial=0.0)) < 0 else (0.0, 1.0)
    rgb = len(names) == 3
    rows: list[tuple[str, np.ndarray | None, int]] = [("labels", None, -1)]
    for c, name in ((-2, "rgb"),) if rgb else enumerate(names):
        if real is not None:
            rows.append((f"real {name}", real, c))
        rows.append((f"synthetic {name}", fake, c))
    h, w = fake.shape[2], fake.shape[3]
    gap = max(1, h // 16)
    canvas = np.ones((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), np.float32)
    for r, (_, arr, c) in enumerate(rows):
        for j in range(cols):
            if arr is None:
                tile = _cond_rgb(cond[j], (h, w))
            elif j < arr.shape[0] and c == -2:
                tile = np.moveaxis((np.clip(arr[j], lo, hi) - lo) / (hi - lo), 0, 2)
            elif j < arr.shape[0]:
                tile = np.repeat(((np.clip(arr[j, c], lo, hi) - lo) / (hi - lo))[..., None], 3, axis=2)
            else:
                continue
            y, x = r * (h + gap), j * (w + gap)
            canvas[y : y + h, x : x + w] = tile
    # rows are image rows: show [H, W] as stored (first axis down)
    tile_in, margin_in = 0.9, 1.3  # inches per tile and for the row labels
    fig_w = cols * tile_in + margin_in
    fig_h = len(rows) * tile_in
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=100)
    ax = fig.add_axes((margin_in / fig_w, 0.0, 1 - margin_in / fig_w, 1.0))
    ax.imshow(canvas, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    for r, (label, _, _) in enumerate(rows):
        ax.text(-gap * 2, r * (h + gap) + h / 2, label, ha="right", va="center", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path

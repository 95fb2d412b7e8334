"""Reading BraTS-layout cases (``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``) with nibabel.

Site data is untrusted input: a truncated download or a wrong export must give a clear error, not a
crash deep inside training or a silent mis-read. So every file's header is checked before any voxel
is decompressed (rank, dimensions, voxel count, byte size, on-disk dtype, voxel sizes), then the
case is checked as a whole (same shape and affine everywhere), then the voxels (finite intensities,
BraTS labels only). Every failure is a :class:`CaseError` (a ``DataError``) whose message names the
file and the problem, and whose ``problem`` attribute says what is wrong without naming the file
(file names of real data carry patient identifiers, which must not reach logs).
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from secgan.core.errors import DataError
from secgan.core.spec import BRATS_LABELS, IMAGE_CHANNELS

SEG = "seg"
_ALLOWED_DTYPES = ("uint8", "int8", "int16", "uint16", "int32", "uint32", "float32", "float64")


class CaseError(DataError):
    """A malformed case file. ``str(exc)`` names the file; ``exc.problem`` does not."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@dataclass(frozen=True)
class ReaderLimits:
    """What a single NIfTI volume may look like before its voxels are read."""

    min_dim: int = 8
    max_dim: int = 1024
    max_voxels: int = 512 * 512 * 512
    max_bytes: int = 1 << 30  # uncompressed voxel bytes
    max_pixdim_mm: float = 20.0
    allowed_dtypes: tuple[str, ...] = _ALLOWED_DTYPES
    affine_atol: float = 1e-3

    def __post_init__(self) -> None:
        if not 1 <= self.min_dim <= self.max_dim:
            raise ValueError("need 1 <= min_dim <= max_dim")
        if self.max_voxels < 1 or self.max_bytes < 1 or not self.max_pixdim_mm > 0:
            raise ValueError("limits must be positive")


@dataclass(frozen=True)
class Case:
    """One patient's volumes: intensities float32 ``[X, Y, Z]``, labels int16 ``[X, Y, Z]``."""

    case_id: str
    volumes: dict[str, np.ndarray] = field(repr=False)
    seg: np.ndarray = field(repr=False)
    affine: np.ndarray = field(repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.seg.shape)  # type: ignore[return-value]


# Exceptions nibabel, gzip and zlib raise for broken files; anything else is a bug and propagates.
def _io_errors() -> tuple[type[BaseException], ...]:
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    return (ImageFileError, HeaderDataError, OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, TypeError, MemoryError)


def modality_path(case_dir: Path, name: str) -> Path:
    """``case_dir/<case>_<name>.nii.gz`` (or ``.nii`` when only that exists)."""
    stem = case_dir / f"{case_dir.name}_{name}"
    gz = stem.with_name(stem.name + ".nii.gz")
    if gz.is_file():
        return gz
    plain = stem.with_name(stem.name + ".nii")
    return plain if plain.is_file() else gz


def open_checked(path: Path, limits: ReaderLimits = ReaderLimits()):
    """Open a NIfTI file and validate its header; voxels are not read yet. Returns the nibabel image."""
    import nibabel as nib

    if not path.is_file():
        raise CaseError(path, "file is missing")
    # Check the header exactly as stored: nibabel's loader silently "fixes" some fields (a zero voxel
    # size becomes 1), and nothing should be decompressed beyond the header before these checks.
    check_header(path, _raw_header(path), limits)
    try:
        img = nib.load(str(path))
    except _io_errors() as exc:
        raise CaseError(path, f"not a readable NIfTI file ({type(exc).__name__}: {_short(exc, path)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CaseError(path, f"not a NIfTI image (got {type(img).__name__})")
    check_header(path, img.header, limits)
    aff = img.affine
    if aff is None or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise CaseError(path, "affine is missing, non-finite or singular")
    return img


def _raw_header(path: Path):
    """The NIfTI-1 or NIfTI-2 header as stored, unchecked and unfixed (reads only the header bytes)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path), "rb") as fh:
            block = fh.read(540)
    except _io_errors() as exc:
        raise CaseError(path, f"not a readable NIfTI file ({type(exc).__name__}: {_short(exc, path)})") from None
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        size = klass.template_dtype.itemsize
        if len(block) < size:
            continue
        try:
            hdr = klass(block[:size], check=False)
            magic = bytes(hdr["magic"])[:3]
            if int(hdr["sizeof_hdr"]) == size and magic in (b"n+1", b"ni1", b"n+2", b"ni2"):
                return hdr
        except _io_errors():
            continue
    raise CaseError(path, "not a readable NIfTI file (no valid NIfTI-1/2 header)")


def check_header(path: Path, header, limits: ReaderLimits) -> None:
    """Header-only validation: rank, dimensions, size, dtype, voxel sizes."""
    try:
        shape = tuple(int(d) for d in header.get_data_shape())
        dtype = np.dtype(header.get_data_dtype())
        zooms = tuple(float(z) for z in header.get_zooms())
    except _io_errors() as exc:
        raise CaseError(path, f"unreadable header ({_short(exc, path)})") from None
    if len(shape) != 3:
        raise CaseError(path, f"expected a 3-D volume, got {len(shape)}-D shape {shape}")
    if any(not limits.min_dim <= d <= limits.max_dim for d in shape):
        raise CaseError(path, f"dimensions {shape} outside the allowed range {limits.min_dim}..{limits.max_dim}")
    n = shape[0] * shape[1] * shape[2]
    if n > limits.max_voxels:
        raise CaseError(path, f"{n} voxels exceed the limit of {limits.max_voxels}")
    if dtype.name not in limits.allowed_dtypes:
        raise CaseError(path, f"on-disk dtype {dtype.name} not allowed (allowed: {', '.join(limits.allowed_dtypes)})")
    if n * dtype.itemsize > limits.max_bytes or n * 4 > limits.max_bytes:
        raise CaseError(path, f"volume of {n * max(dtype.itemsize, 4)} bytes exceeds the limit of {limits.max_bytes}")
    pix = zooms[:3]
    if len(pix) != 3 or not all(np.isfinite(p) and 0 < p <= limits.max_pixdim_mm for p in pix):
        raise CaseError(path, f"voxel sizes {pix} must be finite, positive and at most {limits.max_pixdim_mm} mm")


def _read_voxels(path: Path, img) -> np.ndarray:
    try:
        return np.asanyarray(img.dataobj)
    except _io_errors() as exc:
        raise CaseError(path, f"voxel data unreadable, truncated or corrupt ({type(exc).__name__}: {_short(exc, path)})") from None


def read_intensities(path: Path, img) -> np.ndarray:
    """Voxels as float32, refusing NaN and infinity."""
    data = _read_voxels(path, img)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise CaseError(path, f"{bad} voxels are NaN or infinite")
    return out


def read_labels(path: Path, img) -> np.ndarray:
    """Voxels as int16 BraTS labels, refusing anything outside {0, 1, 2, 4}."""
    data = np.asarray(_read_voxels(path, img))
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise CaseError(path, "segmentation has NaN or infinite voxels")
        if not np.all(data == np.round(data)):
            raise CaseError(path, "segmentation has non-integer labels")
    values = np.unique(data)
    unknown = [v for v in values.tolist() if v not in BRATS_LABELS]
    if unknown:
        shown = ", ".join(str(int(v)) if float(v).is_integer() else str(v) for v in unknown[:8])
        raise CaseError(path, f"segmentation has labels outside {{0, 1, 2, 4}}: {shown}")
    return data.astype(np.int16)


def read_case(
    case_dir: Path,
    *,
    modalities: tuple[str, ...] = IMAGE_CHANNELS,
    limits: ReaderLimits = ReaderLimits(),
) -> Case:
    """Read and validate one BraTS case folder. Raises :class:`CaseError` for anything malformed."""
    case_dir = Path(case_dir)
    if not case_dir.is_dir():
        raise CaseError(case_dir, "case folder is missing")
    bad = [m for m in modalities if m not in IMAGE_CHANNELS]
    if bad or not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must be distinct names from {IMAGE_CHANNELS}, got {modalities}")
    names = tuple(modalities) + (SEG,)
    paths = {n: modality_path(case_dir, n) for n in names}
    for n, p in paths.items():
        if not p.is_file():
            what = "segmentation" if n == SEG else f"modality '{n}'"
            raise CaseError(p, f"{what} file is missing")
    # Headers first: nothing is decompressed until every file of the case looks sane and consistent.
    imgs = {n: open_checked(paths[n], limits) for n in names}
    ref_name = names[0]
    ref_shape = tuple(imgs[ref_name].shape)
    ref_aff = imgs[ref_name].affine
    for n in names[1:]:
        if tuple(imgs[n].shape) != ref_shape:
            raise CaseError(paths[n], f"shape {tuple(imgs[n].shape)} differs from {ref_name} shape {ref_shape}")
        if not np.allclose(imgs[n].affine, ref_aff, atol=limits.affine_atol, rtol=0):
            raise CaseError(paths[n], f"affine differs from the {ref_name} affine")
    volumes = {n: read_intensities(paths[n], imgs[n]) for n in modalities}
    seg = read_labels(paths[SEG], imgs[SEG])
    return Case(case_id=case_dir.name, volumes=volumes, seg=seg, affine=np.array(ref_aff, dtype=np.float64))


def _short(exc: BaseException, path: Path | None = None, limit: int = 120) -> str:
    """Library message, one line, without the file's path or name (they may carry a patient id)."""
    text = str(exc).replace("\n", " ")
    if path is not None:
        for token in (str(path), path.name, path.parent.name):
            if token:
                text = text.replace(token, "<file>")
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Reading one case of any supported layout (:mod:`secgan.data.layouts`) with nibabel.

Site data is untrusted input: a truncated download or a wrong export must give a clear error, not a
crash deep inside training or a silent mis-read. So every file's header is checked before any voxel
is decompressed (rank, dimensions, voxel count, byte size, on-disk dtype, voxel sizes), then the
case is checked as a whole (same shape and affine everywhere, axis-aligned), then the voxels: a
``.nii.gz`` is decompressed to its end, so the gzip CRC and length are checked and damaged bytes
anywhere in the stream are caught; intensities must be finite, labels must be the layout's (mapped
onto :mod:`secgan.data.labels`). Every volume is then brought to the canonical orientation
(:mod:`secgan.data.orientation`). Every failure is a :class:`CaseError` (a ``DataError``) whose message names the
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
from secgan.core.logs import get_logger
from secgan.core.spec import IMAGE_CHANNELS
from secgan.data import orientation
from secgan.data.layouts import LAYOUTS, MSD_CHANNELS, SEG, CaseFiles, Layout, case_files

log = get_logger(__name__)

# A float segmentation whose values are all within this of an integer is rounded (with a warning).
SEG_ROUNDING_TOLERANCE = 1e-3
# Default largest element-wise difference between the affines of one case's files (mm).
DEFAULT_AFFINE_TOLERANCE_MM = 1e-3
_GZ_CHUNK = 1 << 16
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
    # largest element-wise difference between the affines of one case's files (mm)
    affine_atol: float = DEFAULT_AFFINE_TOLERANCE_MM
    # largest tilt of a voxel axis from the scanner axes (degrees); beyond it the case is oblique
    oblique_tolerance_deg: float = orientation.DEFAULT_OBLIQUE_TOLERANCE_DEG

    def __post_init__(self) -> None:
        if not 1 <= self.min_dim <= self.max_dim:
            raise ValueError("need 1 <= min_dim <= max_dim")
        if self.max_voxels < 1 or self.max_bytes < 1 or not self.max_pixdim_mm > 0:
            raise ValueError("limits must be positive")
        if not self.affine_atol >= 0 or not self.oblique_tolerance_deg >= 0:
            raise ValueError("affine_atol and oblique_tolerance_deg must be >= 0")


@dataclass(frozen=True)
class Case:
    """One patient's volumes in canonical (RAS) orientation: intensities float32 ``[X, Y, Z]``, internal
    labels int16 ``[X, Y, Z]``, the canonical affine, and what the files were stored as."""

    case_id: str
    volumes: dict[str, np.ndarray] = field(repr=False)
    seg: np.ndarray = field(repr=False)
    affine: np.ndarray = field(repr=False)
    # orientation the files were stored in, e.g. "LPS" (the arrays are canonical whatever it was)
    source_orientation: str = orientation.CANONICAL
    # voxel sizes in mm along the canonical axes
    zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str = "brats2021"

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
    return case_files(case_dir, LAYOUTS["brats2021"]).files[name]


def open_checked(path: Path, limits: ReaderLimits = ReaderLimits(), *, channels: int | None = None):
    """Open a NIfTI file and validate its header; returns the nibabel image.

    ``channels``: the file is 4-D with that many channels (the MSD layout); otherwise 3-D. A
    ``.nii.gz`` is decompressed here, whole, after its header passed (so damage anywhere is caught).
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise CaseError(path, "file is missing")
    if path.stat().st_size == 0:
        raise CaseError(path, "file is empty (0 bytes)")
    # Check the header exactly as stored: nibabel's loader silently "fixes" some fields (a zero voxel
    # size becomes 1), and nothing should be decompressed beyond the header before these checks.
    raw = _raw_header(path)
    check_header(path, raw, limits, channels=channels)
    try:
        if path.name.endswith(".gz"):
            klass = nib.Nifti2Image if isinstance(raw, nib.Nifti2Header) else nib.Nifti1Image
            n_bytes = int(np.prod(raw.get_data_shape())) * np.dtype(raw.get_data_dtype()).itemsize
            img = klass.from_bytes(_gunzip_whole(path, int(raw["vox_offset"]) + n_bytes + (1 << 20)))
        else:
            img = nib.load(str(path))
    except CaseError:
        raise
    except _io_errors() as exc:
        raise CaseError(path, f"not a readable NIfTI file ({type(exc).__name__}: {_short(exc, path)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CaseError(path, f"not a NIfTI image (got {type(img).__name__})")
    check_header(path, img.header, limits, channels=channels)
    aff = img.affine
    if aff is None or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise CaseError(path, "affine is missing, non-finite or singular")
    return img


def _gunzip_whole(path: Path, max_out: int) -> bytes:
    """Decompress every gzip member of ``path`` to its end, checking each CRC-32 and length trailer.

    Refuses output beyond ``max_out`` bytes (what the header says the file holds, plus slack), so a
    small file cannot expand without bound.
    """
    if path.stat().st_size > max_out + (1 << 20):
        raise CaseError(path, f"compressed file is larger than the {max_out} bytes its header accounts for")
    data = memoryview(path.read_bytes())
    out = bytearray()
    pos = 0
    try:
        while True:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            off = pos
            while not d.eof:
                if off >= len(data):
                    raise CaseError(path, "compressed data truncated or corrupt: the gzip stream ends before "
                                          "its CRC trailer; re-copy or re-export the file")
                piece = data[off : off + _GZ_CHUNK]
                off += len(piece)
                out += d.decompress(piece)
                if len(out) > max_out:
                    raise CaseError(path, f"decompressed data exceeds the {max_out} bytes its header accounts for")
            pos = off - len(d.unused_data)
            if not bytes(data[pos:]).strip(b"\0"):  # zero padding after the last member is allowed
                return bytes(out)
    except zlib.error as exc:
        raise CaseError(path, f"compressed data truncated or corrupt: the bytes fail the gzip integrity check ({exc}); "
                              "re-copy or re-export the file") from None


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


def check_header(path: Path, header, limits: ReaderLimits, *, channels: int | None = None) -> None:
    """Header-only validation: rank, dimensions, size, dtype, voxel sizes."""
    try:
        shape = tuple(int(d) for d in header.get_data_shape())
        dtype = np.dtype(header.get_data_dtype())
        zooms = tuple(float(z) for z in header.get_zooms())
    except _io_errors() as exc:
        raise CaseError(path, f"unreadable header ({_short(exc, path)})") from None
    if channels is None and len(shape) == 4 and shape[3] == len(MSD_CHANNELS):
        raise CaseError(path, f"expected a 3-D volume, got 4-D shape {shape}: a 4-channel volume is the Medical "
                              "Segmentation Decathlon Task01 layout (imagesTr/ and labelsTr/, channels FLAIR, T1w, "
                              "t1gd, T2w); put it in that layout or set data layout = \"msd\"")
    if channels is None and len(shape) != 3:
        raise CaseError(path, f"expected a 3-D volume, got {len(shape)}-D shape {shape}")
    if channels is not None and (len(shape) != 4 or shape[3] != channels):
        raise CaseError(path, f"expected a 4-D volume with {channels} channels (MSD Task01: FLAIR, T1w, t1gd, T2w), "
                              f"got shape {shape}")
    if any(not limits.min_dim <= d <= limits.max_dim for d in shape[:3]):
        raise CaseError(path, f"dimensions {shape} outside the allowed range {limits.min_dim}..{limits.max_dim}")
    n = shape[0] * shape[1] * shape[2] * (channels or 1)
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


def read_labels(path: Path, img, layout: Layout = LAYOUTS["brats2021"], *, log_name: str | None = None) -> np.ndarray:
    """Voxels as int16 internal labels (:mod:`secgan.data.labels`), mapped from ``layout``'s labels.

    Labels the layout does not use are refused, with the reason when the label is known to mean
    something else. A float segmentation within :data:`SEG_ROUNDING_TOLERANCE` of integers is rounded
    with a warning (``log_name`` names the file in it, without the case id).
    """
    data = np.asarray(_read_voxels(path, img))
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise CaseError(path, "segmentation has NaN or infinite voxels")
        rounded = np.round(data)
        off = float(np.max(np.abs(data - rounded))) if data.size else 0.0
        if off > SEG_ROUNDING_TOLERANCE:
            raise CaseError(path, f"segmentation has non-integer labels (up to {off:.3g} from an integer; "
                                  f"values within {SEG_ROUNDING_TOLERANCE:g} of one are rounded)")
        if off > 0:
            log.warning("seg_rounded", file=log_name or "<seg>", max_offset=off, tolerance=SEG_ROUNDING_TOLERANCE)
        data = rounded
    values = np.unique(data)
    unknown = [v for v in values.tolist() if v not in layout.labels]
    if unknown:
        shown = ", ".join(str(int(v)) if float(v).is_integer() else str(v) for v in unknown[:8])
        reasons = "; ".join(layout.refused[int(v)] for v in unknown if float(v).is_integer() and int(v) in layout.refused)
        raise CaseError(path, f"segmentation has labels outside {layout.describe_labels()}: {shown} ({layout.title})"
                              + (f"; {reasons}" if reasons else ""))
    out = np.zeros(data.shape, dtype=np.int16)
    for src, dst in layout.labels.items():
        if dst:
            out[data == src] = dst
    return out


def read_case(
    case: Path | CaseFiles,
    *,
    layout: Layout | None = None,
    modalities: tuple[str, ...] = IMAGE_CHANNELS,
    limits: ReaderLimits = ReaderLimits(),
) -> Case:
    """Read and validate one case: a case folder (``layout`` defaults to BraTS 2018-2021, or 2023 when
    the folder has those names) or the :class:`CaseFiles` of a discovered case. Raises
    :class:`CaseError` for anything malformed. The arrays come back in canonical orientation."""
    bad = [m for m in modalities if m not in IMAGE_CHANNELS]
    if bad or not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must be distinct names from {IMAGE_CHANNELS}, got {modalities}")
    if not isinstance(case, CaseFiles):
        case_dir = Path(case)
        if not case_dir.is_dir():
            raise CaseError(case_dir, "case folder is missing")
        if layout is None:
            gli = case_files(case_dir, LAYOUTS["brats2023"])
            layout = LAYOUTS["brats2023"] if any(p.is_file() for p in gli.files.values()) else LAYOUTS["brats2021"]
        if layout.four_d:
            raise ValueError("a 4-D layout's case is read from its CaseFiles (see layouts.discover_cases)")
        case = case_files(case_dir, layout)
    layout = layout or LAYOUTS["brats2021"]
    if layout.four_d:
        names = ("image", SEG)
        channels = {"image": len(MSD_CHANNELS), SEG: None}
    else:
        names = tuple(modalities) + (SEG,)
        channels = {n: None for n in names}
    paths = {n: case.files[n] for n in names}
    for n, p in paths.items():
        if not p.is_file():
            what = "segmentation" if n == SEG else ("4-D image" if n == "image" else f"modality '{n}'")
            raise CaseError(p, f"{what} file is missing")
    # Headers first: nothing is decompressed until every file of the case looks sane and consistent.
    headers = {}
    for n in names:
        if paths[n].stat().st_size == 0:
            raise CaseError(paths[n], "file is empty (0 bytes)")
        headers[n] = _raw_header(paths[n])
        check_header(paths[n], headers[n], limits, channels=channels[n])
    ref = names[0]
    ref_shape = tuple(headers[ref].get_data_shape())[:3]
    ref_aff = headers[ref].get_best_affine()
    for n in names[1:]:
        shape = tuple(headers[n].get_data_shape())[:3]
        if shape != ref_shape:
            raise CaseError(paths[n], f"shape {shape} differs from {ref} shape {ref_shape}")
        diff = float(np.max(np.abs(headers[n].get_best_affine() - ref_aff)))
        if not diff <= limits.affine_atol:
            raise CaseError(paths[n], f"affine differs from the {ref} affine by up to {diff:.4g} mm "
                                      f"(tolerance {limits.affine_atol:g}, data affine_tolerance)")
    imgs = {n: open_checked(paths[n], limits, channels=channels[n]) for n in names}
    ref_aff = np.asarray(imgs[ref].affine, dtype=np.float64)
    problem = orientation.check_oblique(ref_aff, limits.oblique_tolerance_deg)
    if problem:
        raise CaseError(paths[ref], problem)
    plan, canonical_aff = orientation.to_canonical_plan(ref_aff, ref_shape)
    if layout.four_d:
        stack = read_intensities(paths["image"], imgs["image"])
        raw_volumes = {m: stack[..., MSD_CHANNELS.index(m)] for m in modalities}
    else:
        raw_volumes = {m: read_intensities(paths[m], imgs[m]) for m in modalities}
    seg = read_labels(paths[SEG], imgs[SEG], layout, log_name=case.redacted(paths[SEG]))
    volumes = {m: orientation.apply_plan(v, plan) for m, v in raw_volumes.items()}
    zooms = tuple(float(z) for z in np.sqrt((canonical_aff[:3, :3] ** 2).sum(axis=0)))
    return Case(case_id=case.case_id, volumes=volumes, seg=orientation.apply_plan(seg, plan), affine=canonical_aff,
                source_orientation=orientation.axcodes(ref_aff), zooms=zooms, layout=layout.name)  # type: ignore[arg-type]


def _short(exc: BaseException, path: Path | None = None, limit: int = 120) -> str:
    """Library message, one line, without the file's path or name (they may carry a patient id)."""
    text = str(exc).replace("\n", " ")
    if path is not None:
        for token in (str(path), path.name, path.parent.name):
            if token:
                text = text.replace(token, "<file>")
    return text if len(text) <= limit else text[: limit - 3] + "..."

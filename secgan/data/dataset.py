"""A site's training data as 2-D slices indexed by patient, the unit of privacy.

``load_site`` turns a site folder of any supported layout (:mod:`secgan.data.layouts`, detected
unless given) into a :class:`PatientSlices`:

- ``split.json`` (``{"train": [...], "test": [...]}``, patient ids) chooses the patients;
- each case is read, checked and brought to canonical RAS orientation (:mod:`secgan.data.brats`,
  :mod:`secgan.data.orientation`), its labels mapped to the internal convention
  (:mod:`secgan.data.labels`), and resampled to ``voxel_mm`` where its spacing differs
  (:mod:`secgan.data.geometry`);
- the brain mask is found without assuming a zero background (:mod:`secgan.data.brainmask`);
- each volume is normalised on its own: the 0.5 and 99.5 percentiles inside the brain mask map to
  -1 and 1 (clipped), the background is exactly -1;
- the frame is cropped to the brain's bounding box plus a margin (``crop``: "auto" crops every
  folder but the built-in phantom's, whose slices stay as they always were; "brain"; "none");
- axial slices (last axis) with at least ``min_tumour_pixels`` tumour pixels are kept;
- slices are brought to ``image_size`` x ``image_size`` in-plane by centre padding to a square (with
  background) and then resampling: area averaging when shrinking, bilinear when enlarging, nearest
  neighbour for labels and the brain mask; the background is reset to exactly -1 afterwards.

Every array is kept per patient, so a sampler can draw patients first and one slice per patient
(one patient = one row for DP-SGD). Case ids are kept for the operator but must never be logged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from secgan.data import brainmask, geometry
from secgan.data.brats import Case, CaseError, ReaderLimits, read_case
from secgan.data.layouts import Layout, discover_cases, resolve_layout
from secgan.data.orientation import CANONICAL
from secgan.data.slicing import case_to_slices
from secgan.core.errors import DataError
from secgan.core.logs import get_logger
from secgan.core.spec import COND_CHANNELS, IMAGE_CHANNELS, ImageSpec
from secgan.data.image_sites import default_spec, image_layout, load_image_site
from secgan.data.splits import IMAGE_SPLITS

log = get_logger(__name__)

# "unlisted": the cases of the folder that split.json lists in neither part (an audit searches them for copies);
# the same parts as the 2-D image readers'
SPLITS = IMAGE_SPLITS
CROP_MODES = ("auto", "brain", "none")
# A site folder holding this file was written by the phantom generator (``crop = "auto"`` leaves it uncropped).
PHANTOM_MARKER = "phantom.json"
MAX_SPLIT_BYTES = 16 << 20


class PatientSlices:
    """Per-patient stacks of slices: images ``[S,4,H,W]``, conds ``[S,4,H,W]``, segs ``[S,H,W]``
    (brain); for another ``image`` spec images ``[S, *image.image_shape]`` and conds
    ``[S, *image.cond_shape]`` (``secgan.core.spec``).

    Arrays are read-only; sampling returns fresh copies.
    """

    def __init__(
        self,
        *,
        case_ids: Sequence[str],
        images: Sequence[np.ndarray],
        conds: Sequence[np.ndarray],
        segs: Sequence[np.ndarray],
        image_size: int,
        modalities: tuple[str, ...] = IMAGE_CHANNELS,
        missing: tuple[str, ...] = (),
        geometry: str = "",
        image: ImageSpec | None = None,
    ) -> None:
        self.spec = image if image is not None else ImageSpec(size=int(image_size))
        if self.spec.size != image_size:
            raise ValueError(f"image_size {image_size} differs from the image spec's size {self.spec.size}")
        if not (len(case_ids) == len(images) == len(conds) == len(segs)):
            raise ValueError("case_ids, images, conds and segs must have one entry per patient")
        if len(set(case_ids)) != len(case_ids):
            raise ValueError("case ids must be unique")
        h = w = image_size
        for im, co, sg in zip(images, conds, segs):
            s = im.shape[0]
            if s < 1 or im.shape != (s, *self.spec.image_shape) or co.shape != (s, *self.spec.cond_shape) or sg.shape != (s, h, w):
                raise ValueError(f"inconsistent patient arrays {im.shape}, {co.shape}, {sg.shape} for size {image_size}")
        self._case_ids = tuple(case_ids)
        self._images = tuple(_frozen(a, np.float32) for a in images)
        self._conds = tuple(_frozen(a, np.float32) for a in conds)
        self._segs = tuple(_frozen(a, np.int16) for a in segs)
        self.image_size = int(image_size)
        self.modalities = tuple(modalities)
        self.missing = tuple(missing)
        # how the slices were made (orientation, voxel size, crop); part of the fingerprint
        self.geometry = str(geometry)

    # --- per patient -------------------------------------------------------------------------
    @property
    def n_patients(self) -> int:
        return len(self._case_ids)

    def __len__(self) -> int:
        return self.n_patients

    @property
    def case_ids(self) -> tuple[str, ...]:
        """Patient identifiers, in index order. Never log them."""
        return self._case_ids

    def n_slices(self, i: int) -> int:
        return self._images[self._index(i)].shape[0]

    def images(self, i: int) -> np.ndarray:
        return self._images[self._index(i)]

    def conds(self, i: int) -> np.ndarray:
        return self._conds[self._index(i)]

    def segs(self, i: int) -> np.ndarray:
        return self._segs[self._index(i)]

    # --- sampling ----------------------------------------------------------------------------
    def sample_slices(
        self, patient_indices: Sequence[int], *, generator: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """One uniformly random slice per listed patient: (images ``[n,4,H,W]``, conds ``[n,4,H,W]``)."""
        if not isinstance(generator, np.random.Generator):
            raise TypeError("generator must be a numpy.random.Generator")
        idx = [self._index(i) for i in patient_indices]
        n = len(idx)
        imgs = np.empty((n, *self.spec.image_shape), dtype=np.float32)
        conds = np.empty((n, *self.spec.cond_shape), dtype=np.float32)
        for row, p in enumerate(idx):
            k = int(generator.integers(self._images[p].shape[0]))
            imgs[row] = self._images[p][k]
            conds[row] = self._conds[p][k]
        return imgs, conds

    def all_slices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every slice: (images, conds, segs, patient_index ``[N]`` int64)."""
        pidx = np.concatenate([np.full(a.shape[0], i, dtype=np.int64) for i, a in enumerate(self._images)]) if self._images else np.zeros(0, np.int64)
        s = self.image_size
        if not self._images:
            return (np.zeros((0, *self.spec.image_shape), np.float32), np.zeros((0, *self.spec.cond_shape), np.float32),
                    np.zeros((0, s, s), np.int16), pidx)
        return (np.concatenate(self._images), np.concatenate(self._conds), np.concatenate(self._segs), pidx)

    def subset(self, patient_indices: Sequence[int]) -> "PatientSlices":
        """The listed patients (distinct indices), in the listed order."""
        idx = [self._index(i) for i in patient_indices]
        if len(set(idx)) != len(idx):
            raise ValueError("subset indices must be distinct (one patient is one privacy unit)")
        return PatientSlices(
            case_ids=[self._case_ids[i] for i in idx],
            images=[self._images[i] for i in idx],
            conds=[self._conds[i] for i in idx],
            segs=[self._segs[i] for i in idx],
            image_size=self.image_size,
            modalities=self.modalities,
            missing=self.missing,
            geometry=self.geometry,
            image=self.spec,
        )

    def fingerprint(self, *, salt: bytes = b"") -> str:
        """Hex sha256 over the patient count, the geometry (orientation, voxel size, crop) and every
        array (not the case ids), salted."""
        h = hashlib.sha256()
        h.update(b"secgan.PatientSlices.v2\0")
        h.update(len(salt).to_bytes(8, "big") + bytes(salt))
        h.update(self.n_patients.to_bytes(8, "big"))
        h.update(json.dumps([self.image_size, list(self.modalities), list(self.missing), self.geometry]).encode())
        for im, co, sg in zip(self._images, self._conds, self._segs):
            for a in (im, co, sg):
                h.update(json.dumps([a.dtype.str, list(a.shape)]).encode())
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def _index(self, i: int) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"patient index must be an int, got {type(i).__name__}")
        if not 0 <= int(i) < self.n_patients:
            raise IndexError(f"patient index {int(i)} out of range 0..{self.n_patients - 1}")
        return int(i)

    def __repr__(self) -> str:  # no case ids
        return f"PatientSlices(n_patients={self.n_patients}, image_size={self.image_size}, missing={self.missing})"


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
    out = np.ascontiguousarray(a, dtype=dtype)
    if out is a:
        out = out.copy()
    out.setflags(write=False)
    return out


# --- split file ---------------------------------------------------------------------------------
def read_split(site_dir: Path, known: set[str] | None = None) -> dict[str, list[str]]:
    """Read and validate ``site_dir/split.json``. ``known``: the case ids the layout found (default:
    the folders next to the split file)."""
    path = Path(site_dir) / "split.json"
    try:
        raw = path.read_bytes() if path.stat().st_size <= MAX_SPLIT_BYTES else None
    except FileNotFoundError:
        raise DataError(f"{path}: split file is missing (it lists the patient ids under \"train\" and \"test\"; "
                        "`secgan data check` lists the cases found)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read split file ({exc.strerror})") from None
    if raw is None:
        raise DataError(f"{path}: split file larger than {MAX_SPLIT_BYTES} bytes")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(obj, dict) or set(obj) != {"train", "test"}:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"{path}: must be an object with exactly the keys 'train' and 'test', got {keys}")
    for part in ("train", "test"):
        ids = obj[part]
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            raise DataError(f"{path}: '{part}' must be a list of strings")
        for c in ids:
            if not c or c in (".", "..") or "/" in c or "\\" in c or "\0" in c or c.startswith("."):
                raise DataError(f"{path}: '{part}' has an entry that is not a plain folder name")
        if len(set(ids)) != len(ids):
            raise DataError(f"{path}: '{part}' lists a case more than once")
    overlap = set(obj["train"]) & set(obj["test"])
    if overlap:
        raise DataError(f"{path}: {len(overlap)} case(s) are in both 'train' and 'test' (patient-level split required)")
    for c in obj["train"] + obj["test"]:
        if (c not in known) if known is not None else not (path.parent / c).is_dir():
            raise DataError(f"{path}: a listed case folder does not exist (entry {(obj['train'] + obj['test']).index(c)})")
    return {"train": list(obj["train"]), "test": list(obj["test"])}


def crop_margin_for(site_dir: Path, crop: str, voxel_mm: float) -> int | None:
    """The crop margin in voxels for ``crop`` at ``site_dir`` (None: no crop)."""
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    if crop == "none" or (crop == "auto" and (Path(site_dir) / PHANTOM_MARKER).is_file()):
        return None
    return int(round(geometry.DEFAULT_CROP_MARGIN_MM / voxel_mm))


def geometry_tag(margin: int | None, voxel_mm: float) -> str:
    return f"{CANONICAL};voxel_mm={voxel_mm:g};crop={'none' if margin is None else f'brain+{margin}'}"


def prepare_case(case: Case, *, voxel_mm: float) -> Case:
    """Canonical case -> the common voxel size (the label map with nearest neighbour)."""
    return geometry.resample_case(case, voxel_mm)


def load_site(
    site_dir: Path,
    *,
    split: str = "train",
    image_size: int = 64,
    modalities: tuple[str, ...] = IMAGE_CHANNELS,
    skip_bad: bool = False,
    min_tumour_pixels: int = 10,
    limits: ReaderLimits = ReaderLimits(),
    layout: str = "auto",
    crop: str = "auto",
    voxel_mm: float = 1.0,
    image: ImageSpec | None = None,
) -> PatientSlices:
    """Load one site's patients for ``split`` ("train" | "test" | "all" | "unlisted") as :class:`PatientSlices`.

    A malformed case raises :class:`DataError` naming the file, or with ``skip_bad`` is skipped with a
    warning that names the problem, the file (with the case id replaced by ``<case>``) and the case's
    position in the split (never its id). Patients without a qualifying slice are skipped with a
    warning; if nobody is left, DataError. ``min_tumour_pixels=0`` keeps every slice that contains
    brain. ``layout``: "auto" or a name of :data:`secgan.data.layouts.LAYOUTS` or of
    :data:`secgan.data.image_sites.IMAGE_LAYOUTS`: a folder of 2-D RGB images (nuclei tiles, ISIC-style
    lesions) is read by :func:`secgan.data.image_sites.load_image_site` into slices of ``image`` (the
    layout's built-in spec when None). ``image``: the run's spec; a volume folder refuses one it
    cannot give (other than its MRI channels with brain label maps).
    """
    site_dir = Path(site_dir)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 16 <= image_size <= 1024:
        raise ValueError(f"image_size must be in 16..1024, got {image_size}")
    if min_tumour_pixels < 0:
        raise ValueError("min_tumour_pixels must be >= 0")
    if not 0.1 <= voxel_mm <= 10.0:
        raise ValueError(f"voxel_mm must be in 0.1..10, got {voxel_mm}")
    modalities = tuple(modalities)
    if not modalities or len(set(modalities)) != len(modalities) or any(m not in IMAGE_CHANNELS for m in modalities):
        raise ValueError(f"modalities must be distinct names from {IMAGE_CHANNELS}, got {modalities}")
    if not site_dir.is_dir():
        raise DataError(f"{site_dir}: site folder is missing")
    found_image = image_layout(site_dir, layout)
    if found_image is not None:
        spec = image if image is not None else default_spec(found_image, image_size)
        if spec.size != image_size:
            raise ValueError(f"image_size {image_size} differs from the image spec's size {spec.size}")
        out = load_image_site(site_dir, layout=found_image, split=split, image=spec)
        log.info("site_loaded", split=split, layout=found_image, patient_count=out.n_patients, skipped_count=0)
        return out
    if image is not None and (image.image_channels != len(modalities) or image.condition != "labelmap"
                              or image.cond_channels != len(COND_CHANNELS)):
        raise DataError(f"{site_dir}: a volume (BraTS/MSD) folder gives {len(modalities)}-channel MRI slices with "
                        f"{len(COND_CHANNELS)}-channel brain label maps; the image spec says {image.image_channels} "
                        f"channels and a {image.condition!r} condition with {image.cond_channels} channels "
                        "(image.* of the config, or the folder's layout)")
    margin = crop_margin_for(site_dir, crop, voxel_mm)
    if not (site_dir / "split.json").is_file():
        read_split(site_dir)  # raises: a missing split file is said before anything about the layout
    found = site_layout(site_dir, layout)
    cases = discover_cases(site_dir, found)
    parts = read_split(site_dir, known=set(cases))
    if split == "unlisted":
        listed = set(parts["train"]) | set(parts["test"])
        ids = sorted(c for c in cases if c not in listed)
    else:
        ids = parts["train"] + parts["test"] if split == "all" else parts[split]
    case_ids, images, conds, segs = [], [], [], []
    skipped_bad = skipped_empty = 0
    for k, cid in enumerate(ids):
        files = cases[cid]
        try:
            case = prepare_case(read_case(files, layout=found, modalities=modalities, limits=limits), voxel_mm=voxel_mm)
            mask = brainmask.brain_mask(case.volumes[m] for m in modalities)
            im, co, sg = case_to_slices(case, image_size=image_size, modalities=modalities,
                                        min_tumour_pixels=min_tumour_pixels, crop_margin_vox=margin, mask=mask)
        except CaseError as exc:
            if not skip_bad:
                raise
            skipped_bad += 1
            log.warning("case_skipped", split=split, index=k, file=files.redacted(exc.path), problem=exc.problem)
            continue
        coverage = brainmask.frame_coverage(mask)
        if coverage > brainmask.FULL_FRAME_FRACTION:
            log.warning("brain_covers_frame", split=split, index=k, coverage=round(coverage, 3),
                        hint="the brain mask fills almost the whole frame: the data is likely not skull-stripped")
        if im.shape[0] == 0:
            skipped_empty += 1
            log.warning("case_without_slices", split=split, index=k, min_tumour_pixels=min_tumour_pixels)
            continue
        case_ids.append(cid)
        images.append(im)
        conds.append(co)
        segs.append(sg)
    if not case_ids:
        raise DataError(
            f"{site_dir}: no usable patient in split '{split}' "
            f"({len(ids)} listed, {skipped_bad} malformed, {skipped_empty} without a qualifying slice)"
        )
    log.info("site_loaded", split=split, layout=found.name, patient_count=len(case_ids),
             skipped_count=skipped_bad + skipped_empty)
    return PatientSlices(
        case_ids=case_ids,
        images=images,
        conds=conds,
        segs=segs,
        image_size=image_size,
        modalities=modalities,
        missing=tuple(m for m in IMAGE_CHANNELS if m not in modalities),
        geometry=geometry_tag(margin, voxel_mm),
    )


def site_layout(site_dir: Path, layout: str = "auto") -> Layout:
    """The site's layout (detected for "auto"), logged once."""
    found = resolve_layout(site_dir, layout)
    log.info("layout_found", layout=found.name, title=found.title, detected=layout == "auto")
    return found

"""Reader for an ISIC-style site folder: ``images/`` plus one CSV of labels, grouped by patient.

Layout (what :func:`secgan.data.derm.write_derm_phantom` writes; the ISIC 2019 and 2020 releases
fit it once their metadata's patient column is in the label CSV)::

    site/images/<image id>.{jpg,jpeg,png,tif,tiff}
    site/<labels>.csv        the only CSV in the folder (or the one named by ``csv_name``)
    site/split.json          {"train": [patient ids], "test": [patient ids]}

The CSV has a header row and, per image:

- the image id: column ``image_name`` (ISIC 2020) or ``image`` (ISIC 2018/2019), exactly one of them;
- ``patient_id``: required and non-empty; the patient is the unit of privacy (a patient may have
  several images), the split lists patients;
- the class, either as a ``diagnosis`` column (ISIC 2020; matched to ``classes`` ignoring case and
  surrounding spaces) or, without one, as one-hot columns named like ``classes`` (ISIC 2019's ground
  truth: ``MEL,NV,...`` with 1.0/0.0; every other column with a 1 in it is an unknown class).

Checks, each a :class:`DataError` naming the file (and the CSV line): no or several CSVs, a missing
id, patient or class column, an unknown class, a one-hot row without exactly one 1, a duplicate
image id, an image listed but missing, an image present but unlisted, an empty patient id, and (in
:mod:`secgan.data.imagefile`) colour mode, bit depth and damage.

Images are centre-cropped to a square and resized to ``image_size`` (Pillow, area-averaging
``BOX`` filter when shrinking, bilinear when enlarging). Returned arrays: images ``float32
[N, 3, S, S]`` in [0, 1] (8-bit value / 255, HWC -> CHW), labels ``int64 [N]`` (indices into
``classes``), patient index ``int64 [N]``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from secgan.core.errors import DataError
from secgan.data.derm import DERM_CLASSES
from secgan.data.imagefile import ImageLimits, files_by_stem, read_rgb, to_chw_unit
from secgan.data.splits import IMAGE_SPLITS, split_ids

ID_COLUMNS = ("image_name", "image")
PATIENT_COLUMN = "patient_id"
DIAGNOSIS_COLUMN = "diagnosis"
MAX_CSV_BYTES = 64 << 20


@dataclass(frozen=True)
class LabelRow:
    image_id: str
    patient_id: str
    label: int
    line: int


@dataclass(frozen=True)
class LesionSet:
    """A site's images with their classes and patients (arrays read-only). Never log the ids."""

    classes: tuple[str, ...]
    patient_ids: tuple[str, ...]  # one per patient, in index order
    image_ids: tuple[str, ...]  # one per image
    images: np.ndarray  # [N, 3, S, S] float32 in [0, 1]
    labels: np.ndarray  # [N] int64 into classes
    patient_index: np.ndarray  # [N] int64 into patient_ids

    def __repr__(self) -> str:  # no ids
        return f"LesionSet(patients={len(self.patient_ids)}, images={len(self.image_ids)}, classes={len(self.classes)})"


def _csv_path(site_dir: Path, csv_name: str | None) -> Path:
    if csv_name is not None:
        path = site_dir / csv_name
        if not path.is_file():
            raise DataError(f"{path}: label CSV is missing")
        return path
    found = sorted(p for p in site_dir.glob("*.csv") if p.is_file())
    if len(found) != 1:
        raise DataError(f"{site_dir}: expected exactly one label CSV, found {len(found)}"
                        + (f" ({', '.join(p.name for p in found)}); name one" if found else ""))
    return found[0]


def read_labels_csv(path: Path, classes: Sequence[str] = DERM_CLASSES) -> list[LabelRow]:
    """Parse and check the label CSV (see the module docstring)."""
    path = Path(path)
    classes = tuple(classes)
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise DataError(f"{path}: label CSV larger than {MAX_CSV_BYTES} bytes")
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: label CSV is not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read label CSV ({exc.strerror})") from None
    try:
        table = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV ({exc})") from None
    if not table:
        raise DataError(f"{path}: label CSV is empty")
    header = [h.strip() for h in table[0]]
    if len(set(header)) != len(header):
        raise DataError(f"{path}: header names a column twice")
    id_cols = [c for c in ID_COLUMNS if c in header]
    if len(id_cols) != 1:
        raise DataError(f"{path}: header needs exactly one image id column of {ID_COLUMNS}, found {id_cols or 'none'}")
    if PATIENT_COLUMN not in header:
        raise DataError(f"{path}: patient id missing: no '{PATIENT_COLUMN}' column (the patient is the unit of "
                        "privacy; add it from the release's metadata)")
    col = {name: i for i, name in enumerate(header)}
    lower = {c.lower(): k for k, c in enumerate(classes)}
    one_hot = DIAGNOSIS_COLUMN not in header
    if one_hot:
        missing = [c for c in classes if c not in col]
        if missing:
            raise DataError(f"{path}: no '{DIAGNOSIS_COLUMN}' column and no one-hot column for {missing}")
        extra = [c for c in header if c not in classes and c not in (id_cols[0], PATIENT_COLUMN)]
    rows: list[LabelRow] = []
    seen: dict[str, int] = {}
    for line, raw in enumerate(table[1:], start=2):
        if not raw or all(not v.strip() for v in raw):
            continue
        if len(raw) != len(header):
            raise DataError(f"{path}: line {line} has {len(raw)} fields, the header {len(header)}")
        image_id = raw[col[id_cols[0]]].strip()
        pid = raw[col[PATIENT_COLUMN]].strip()
        if not image_id or image_id in (".", "..") or "/" in image_id or "\\" in image_id:
            raise DataError(f"{path}: line {line}: image id is empty or not a plain name")
        if not pid:
            raise DataError(f"{path}: line {line}: patient id missing")
        if image_id in seen:
            raise DataError(f"{path}: line {line}: duplicate image id (first on line {seen[image_id]})")
        seen[image_id] = line
        if one_hot:
            label = _one_hot_label(path, line, raw, col, classes, extra)
        else:
            name = raw[col[DIAGNOSIS_COLUMN]].strip().lower()
            if name not in lower:
                raise DataError(f"{path}: line {line}: unknown class {raw[col[DIAGNOSIS_COLUMN]].strip()!r} "
                                f"(known: {', '.join(classes)})")
            label = lower[name]
        rows.append(LabelRow(image_id=image_id, patient_id=pid, label=label, line=line))
    if not rows:
        raise DataError(f"{path}: label CSV lists no image")
    return rows


def _one_hot_label(path: Path, line: int, raw: list[str], col: dict[str, int], classes: tuple[str, ...],
                   extra: list[str]) -> int:
    def value(name: str) -> float:
        text = raw[col[name]].strip()
        try:
            v = float(text)
        except ValueError:
            raise DataError(f"{path}: line {line}: column {name} is not 0 or 1") from None
        if v not in (0.0, 1.0):
            raise DataError(f"{path}: line {line}: column {name} is not 0 or 1")
        return v

    hot = [k for k, c in enumerate(classes) if value(c) == 1.0]
    others = [c for c in extra if raw[col[c]].strip() in ("1", "1.0")]
    if others:
        raise DataError(f"{path}: line {line}: unknown class {others[0]!r} (known: {', '.join(classes)})")
    if len(hot) != 1:
        raise DataError(f"{path}: line {line}: one-hot row has {len(hot)} classes set (exactly 1 needed)")
    return hot[0]


def _square(rgb: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(np.ascontiguousarray(rgb[top : top + s, left : left + s]), mode="RGB")
    if s != size:
        crop = crop.resize((size, size), Image.Resampling.BOX if s > size else Image.Resampling.BILINEAR)
    return np.asarray(crop)


def read_isic(site_dir: Path, *, split: str = "train", image_size: int = 64, classes: Sequence[str] = DERM_CLASSES,
              csv_name: str | None = None, limits: ImageLimits = ImageLimits()) -> LesionSet:
    """The images of the patients of ``split`` (:data:`secgan.data.splits.IMAGE_SPLITS`), checked (module docstring)."""
    from secgan.data.dataset import read_split

    if split not in IMAGE_SPLITS:
        raise ValueError(f"split must be one of {IMAGE_SPLITS}, got {split!r}")
    if not 16 <= image_size <= 1024:
        raise ValueError(f"image_size must be in 16..1024, got {image_size}")
    classes = tuple(classes)
    if not 2 <= len(classes) or len({c.lower() for c in classes}) != len(classes):
        raise ValueError(f"classes must be at least 2 distinct names, got {classes}")
    site_dir = Path(site_dir)
    csv_path = _csv_path(site_dir, csv_name)
    rows = read_labels_csv(csv_path, classes)
    files = files_by_stem(site_dir / "images", "image id")
    for r in rows:
        if r.image_id not in files:
            raise DataError(f"{csv_path}: line {r.line}: image listed but missing from {site_dir / 'images'}")
    listed = {r.image_id for r in rows}
    for stem in sorted(set(files) - listed):
        raise DataError(f"{files[stem]}: image present but not listed in {csv_path.name}")
    by_patient: dict[str, list[LabelRow]] = {}
    for r in rows:
        by_patient.setdefault(r.patient_id, []).append(r)
    parts = read_split(site_dir, known=set(by_patient))
    ids = split_ids(parts, split, by_patient)
    images, labels, index, image_ids = [], [], [], []
    for k, pid in enumerate(ids):
        for r in sorted(by_patient[pid], key=lambda r: r.image_id):
            images.append(to_chw_unit(_square(read_rgb(files[r.image_id], limits), image_size)))
            labels.append(r.label)
            index.append(k)
            image_ids.append(r.image_id)
    if not images:
        raise DataError(f"{site_dir / 'split.json'}: '{split}' lists no patient with an image")
    out = LesionSet(classes=classes, patient_ids=tuple(ids), image_ids=tuple(image_ids), images=np.stack(images),
                    labels=np.asarray(labels, dtype=np.int64), patient_index=np.asarray(index, dtype=np.int64))
    for a in (out.images, out.labels, out.patient_index):
        a.setflags(write=False)
    return out

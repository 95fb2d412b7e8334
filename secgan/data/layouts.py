"""The folder layouts the public brain-tumour releases ship, detected automatically.

================  =================================================================  ===============
layout            files                                                              source labels
================  =================================================================  ===============
``brats2021``     ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2018-2021;   0, 1, 2, 4
                  2018/2019 cases may sit under ``HGG/`` and ``LGG/``)
``brats2023``     ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (BraTS 2023/2024      0, 1, 2, 3
                  GLI pre-operative)
``brats2024-post``  the same names (BraTS 2024 GLI post-treatment)                   0, 1, 2, 3, 4
``msd``           ``imagesTr/<case>.nii.gz`` 4-D (FLAIR, T1w, t1gd, T2w) and          0, 1, 2, 3
                  ``labelsTr/<case>.nii.gz`` (Medical Segmentation Decathlon Task01)
================  =================================================================  ===============

Every layout maps its labels onto the internal convention of :mod:`secgan.data.labels`. BraTS 2023
and 2024 post-treatment share their file names, so ``auto`` picks ``brats2023``; a case with label 4
(the post-treatment resection cavity) is then refused with a message that says to set
``layout = "brats2024-post"``, where the cavity is a class of its own. It is never read as tumour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from secgan.core.errors import DataError
from secgan.data.labels import RESECTION_CAVITY

SEG = "seg"
MSD_IMAGES = "imagesTr"
MSD_LABELS = "labelsTr"
# Channel order of the MSD Task01 4-D images (FLAIR, T1w, t1gd, T2w) in internal modality names.
MSD_CHANNELS: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
GRADE_FOLDERS = ("HGG", "LGG")


@dataclass(frozen=True)
class Layout:
    """One release's file naming and labelling."""

    name: str
    title: str
    # internal modality name (and "seg") -> file tag; empty for the 4-D MSD layout
    tags: dict[str, str] = field(default_factory=dict)
    # separator between the case id and the tag
    sep: str = "_"
    # source label -> internal label
    labels: dict[int, int] = field(default_factory=dict)
    # source label -> why it is refused and what to do (labels known to mean something else)
    refused: dict[int, str] = field(default_factory=dict)

    @property
    def four_d(self) -> bool:
        return not self.tags

    def describe_labels(self) -> str:
        return "{" + ", ".join(str(k) for k in sorted(self.labels)) + "}"


_OLD_TAGS = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", SEG: "seg"}
_GLI_TAGS = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", SEG: "seg"}

LAYOUTS: dict[str, Layout] = {
    "brats2021": Layout("brats2021", "BraTS 2018-2021", _OLD_TAGS, "_", {0: 0, 1: 1, 2: 2, 4: 4},
                        {3: "label 3 is not used by BraTS 2018-2021 (BraTS 2023 GLI uses it for enhancing tumour, "
                            "with -t1n/-t1c/-t2w/-t2f file names)"}),
    "brats2023": Layout("brats2023", "BraTS 2023/2024 GLI", _GLI_TAGS, "-", {0: 0, 1: 1, 2: 2, 3: 4},
                        {4: "label 4 is not a BraTS 2023 GLI label; BraTS 2024 post-treatment uses it for the "
                            "resection cavity: set data layout = \"brats2024-post\" (the cavity is then its own "
                            "class, never tumour)"}),
    "brats2024-post": Layout("brats2024-post", "BraTS 2024 GLI post-treatment", _GLI_TAGS, "-",
                             {0: 0, 1: 1, 2: 2, 3: 4, 4: RESECTION_CAVITY}),
    "msd": Layout("msd", "Medical Segmentation Decathlon Task01_BrainTumour", {}, "", {0: 0, 1: 2, 2: 1, 3: 4}),
}
LAYOUT_CHOICES: tuple[str, ...] = ("auto",) + tuple(LAYOUTS)


@dataclass(frozen=True)
class CaseFiles:
    """Where one case's files are: ``files`` maps modality names (or "image" for 4-D) and "seg" to paths."""

    case_id: str
    files: dict[str, Path]
    # the folder the files' redacted names are relative to (the case folder's parent, or the MSD site folder)
    root: Path

    def redacted(self, path: Path) -> str:
        """The file's place in the layout with the case id replaced by ``<case>`` (safe to log)."""
        try:
            rel = Path(path).resolve().relative_to(self.root.resolve())
        except ValueError:
            rel = Path(Path(path).name)
        return str(rel).replace(self.case_id, "<case>")


def _nifti(stem: Path) -> Path:
    """``stem.nii.gz``, or ``stem.nii`` when only that exists."""
    gz = stem.with_name(stem.name + ".nii.gz")
    if gz.is_file():
        return gz
    plain = stem.with_name(stem.name + ".nii")
    return plain if plain.is_file() else gz


def case_files(case_dir: Path, layout: Layout) -> CaseFiles:
    """The expected files of one case folder (for the per-file layouts)."""
    case_dir = Path(case_dir)
    files = {n: _nifti(case_dir / f"{case_dir.name}{layout.sep}{tag}") for n, tag in layout.tags.items()}
    return CaseFiles(case_dir.name, files, case_dir.parent)


def _visible_dirs(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{d}: cannot list folder ({exc.strerror})") from None


def _case_dirs(site_dir: Path) -> list[Path]:
    """Case folders directly under the site folder, or under its HGG/LGG folders."""
    out = []
    for d in _visible_dirs(site_dir):
        if d.name in GRADE_FOLDERS and not _has_nifti(d, d.name):
            out.extend(_visible_dirs(d))
        else:
            out.append(d)
    return out


def _has_nifti(case_dir: Path, case: str, sep: str | None = None, tags=None) -> bool:
    for s in ([sep] if sep else ["_", "-"]):
        for tag in (tags or ("t1", "t1ce", "t2", "flair", "seg", "t1n", "t1c", "t2w", "t2f")):
            stem = case_dir / f"{case}{s}{tag}"
            if stem.with_name(stem.name + ".nii.gz").is_file() or stem.with_name(stem.name + ".nii").is_file():
                return True
    return False


def detect_layout(site_dir: Path) -> Layout:
    """The layout of ``site_dir`` from its file names. Raises DataError naming what was expected."""
    site_dir = Path(site_dir)
    if (site_dir / MSD_IMAGES).is_dir():
        return LAYOUTS["msd"]
    old = gli = 0
    for d in _case_dirs(site_dir)[:50]:
        old += _has_nifti(d, d.name, "_", ("t1", "t1ce", "t2", "flair"))
        gli += _has_nifti(d, d.name, "-", ("t1n", "t1c", "t2w", "t2f"))
    if old and gli:
        raise DataError(f"{site_dir}: case folders mix BraTS 2018-2021 names (_t1ce, _flair) and BraTS 2023 names "
                        "(-t1c, -t2f); one site folder holds one layout")
    if old:
        return LAYOUTS["brats2021"]
    if gli:
        return LAYOUTS["brats2023"]
    raise DataError(
        f"{site_dir}: no known layout found: expected case folders <case>/<case>_{{t1,t1ce,t2,flair,seg}}.nii.gz "
        "(BraTS 2018-2021, also under HGG/ and LGG/), <case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz (BraTS 2023/2024), "
        f"or {MSD_IMAGES}/ and {MSD_LABELS}/ (MSD Task01)"
    )


def resolve_layout(site_dir: Path, name: str = "auto") -> Layout:
    if name not in LAYOUT_CHOICES:
        raise DataError(f"unknown layout {name!r}: choose one of {', '.join(LAYOUT_CHOICES)}")
    return detect_layout(site_dir) if name == "auto" else LAYOUTS[name]


def discover_cases(site_dir: Path, layout: Layout) -> dict[str, CaseFiles]:
    """Every case of the site folder in ``layout``, by case id (files may still be missing)."""
    site_dir = Path(site_dir)
    out: dict[str, CaseFiles] = {}
    if layout.four_d:
        images = site_dir / MSD_IMAGES
        if not images.is_dir():
            raise DataError(f"{site_dir}: layout {layout.name} needs a {MSD_IMAGES}/ folder")
        for p in sorted(images.iterdir()):
            if p.name.startswith(".") or not p.name.endswith((".nii.gz", ".nii")):
                continue  # includes the "._BRATS_001.nii.gz" resource forks of the MSD archive
            cid = p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.name[: -len(".nii")]
            out[cid] = CaseFiles(cid, {"image": p, SEG: site_dir / MSD_LABELS / p.name}, site_dir)
        return out
    for d in _case_dirs(site_dir):
        if d.name in out:
            raise DataError(f"{site_dir}: case folder name {d.name!r} appears twice (HGG and LGG?)")
        out[d.name] = case_files(d, layout)
    return out

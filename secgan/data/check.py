"""``secgan data check``'s findings: a site folder read exactly as training reads it, case by case.

Local only: it reads files and returns a report; nothing here opens a socket or sends anything. The
report names the cases (it is for the site's own operator); do not share it outside the site.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from secgan.core.errors import DataError
from secgan.core.spec import IMAGE_CHANNELS
from secgan.data import brainmask
from secgan.data.brats import CaseError, ReaderLimits, read_case
from secgan.data.dataset import crop_margin_for, geometry_tag, prepare_case, read_split
from secgan.data.slicing import case_to_slices
from secgan.data.labels import LABEL_NAMES
from secgan.data.layouts import discover_cases, resolve_layout


def _fmt_mm(zooms) -> str:
    return "x".join(f"{z:g}" for z in zooms)


def check_case(files, layout, *, image_size: int, min_tumour_pixels: int, limits: ReaderLimits, voxel_mm: float,
               margin: int | None) -> dict:
    """One case's entry: ok, or bad with the file and the reason."""
    try:
        raw = read_case(files, layout=layout, modalities=IMAGE_CHANNELS, limits=limits)
        case = prepare_case(raw, voxel_mm=voxel_mm)
        mask = brainmask.brain_mask(case.volumes.values())
        im, _, _ = case_to_slices(case, image_size=image_size, modalities=IMAGE_CHANNELS,
                                  min_tumour_pixels=min_tumour_pixels, crop_margin_vox=margin, mask=mask)
    except CaseError as exc:
        try:
            file = str(Path(exc.path).relative_to(files.root))
        except ValueError:
            file = Path(exc.path).name
        return {"case": files.case_id, "ok": False, "file": file, "reason": exc.problem}
    values, counts = np.unique(case.seg, return_counts=True)
    labels = {LABEL_NAMES[int(v)]: int(c) for v, c in zip(values, counts) if int(v) != 0}
    warnings = []
    coverage = brainmask.frame_coverage(mask)
    if coverage > brainmask.FULL_FRAME_FRACTION:
        warnings.append(f"the brain mask covers {coverage:.0%} of a slice: the data is likely not skull-stripped")
    if im.shape[0] == 0:
        warnings.append(f"no slice with {min_tumour_pixels} tumour pixels at {image_size} px: training skips this case")
    return {"case": files.case_id, "ok": True, "orientation": raw.source_orientation, "shape": list(raw.shape),
            "spacing_mm": [round(z, 4) for z in raw.zooms], "labels": labels, "slices_kept": int(im.shape[0]),
            "brain_coverage": round(coverage, 3), "warnings": warnings}


def check_site(site_dir: Path, *, layout: str = "auto", image_size: int = 64, min_tumour_pixels: int = 10,
               limits: ReaderLimits = ReaderLimits(), voxel_mm: float = 1.0, crop: str = "auto") -> dict:
    """The report of one site folder (see the module docstring). ``report["ok"]`` is False if the
    layout is not found, the split file is wrong, or any case is bad."""
    site_dir = Path(site_dir)
    report: dict = {"site": str(site_dir), "image_size": image_size, "min_tumour_pixels": min_tumour_pixels,
                    "problems": [], "cases": []}
    try:
        found = resolve_layout(site_dir, layout)
        cases = discover_cases(site_dir, found)
    except DataError as exc:
        report.update(layout=None, ok=False)
        report["problems"].append(str(exc))
        return report
    margin = crop_margin_for(site_dir, crop, voxel_mm)
    report.update(layout=found.name, layout_title=found.title, layout_detected=layout == "auto",
                  geometry=geometry_tag(margin, voxel_mm))
    if not cases:
        report["problems"].append(f"{site_dir}: no case found in the {found.name} layout")
    try:
        split = read_split(site_dir, known=set(cases))
        listed = set(split["train"]) | set(split["test"])
        report["split"] = {"train": len(split["train"]), "test": len(split["test"]),
                           "not_listed": len(set(cases) - listed)}
    except DataError as exc:
        report["split"] = None
        report["problems"].append(str(exc))
    for cid in sorted(cases):
        report["cases"].append(check_case(cases[cid], found, image_size=image_size, min_tumour_pixels=min_tumour_pixels,
                                          limits=limits, voxel_mm=voxel_mm, margin=margin))
    good = [c for c in report["cases"] if c["ok"]]
    totals: Counter = Counter()
    for c in good:
        totals.update(c["labels"])
    kept = [c["slices_kept"] for c in good]
    report["summary"] = {
        "cases": len(report["cases"]), "ok": len(good), "bad": len(report["cases"]) - len(good),
        "orientations": dict(Counter(c["orientation"] for c in good)),
        "spacings_mm": dict(Counter(_fmt_mm(c["spacing_mm"]) for c in good)),
        "label_voxels": {name: int(totals.get(name, 0)) for name in LABEL_NAMES.values() if name != "background"},
        "slices_kept": {"total": int(sum(kept)), "min": min(kept, default=0), "max": max(kept, default=0)},
    }
    report["ok"] = not report["problems"] and report["summary"]["bad"] == 0
    return report


def site_folders(path: Path) -> list[Path]:
    """``path`` itself if it holds a site (a split file or a known layout), else its sub-folders that do."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: folder is missing")
    if (path / "split.json").is_file() or _has_layout(path):
        return [path]
    subs = [d for d in sorted(path.iterdir()) if d.is_dir() and not d.name.startswith(".")
            and ((d / "split.json").is_file() or _has_layout(d))]
    return subs or [path]


def _has_layout(path: Path) -> bool:
    try:
        resolve_layout(path, "auto")
        return True
    except DataError:
        return False


def render_text(report: dict) -> str:
    """A site report as lines for a terminal."""
    out = []
    if report.get("layout"):
        how = "detected" if report.get("layout_detected") else "set"
        out.append(f"site {report['site']}: layout {report['layout']} ({report['layout_title']}, {how}); "
                   f"{report['geometry']}; slices at {report['image_size']} px")
    else:
        out.append(f"site {report['site']}: no layout")
    split = report.get("split")
    if split:
        out.append(f"  split.json: {split['train']} train, {split['test']} test, {split['not_listed']} not listed")
    for p in report["problems"]:
        out.append(f"  PROBLEM {p}")
    for c in report["cases"]:
        if c["ok"]:
            labels = " ".join(f"{k}={v}" for k, v in c["labels"].items()) or "no tumour labels"
            out.append(f"  OK   {c['case']}: {c['orientation']} {_fmt_mm(c['spacing_mm'])} mm "
                       f"{'x'.join(map(str, c['shape']))}; {labels}; {c['slices_kept']} slices kept")
            out.extend(f"       warning: {w}" for w in c["warnings"])
        else:
            out.append(f"  BAD  {c['case']}: {c['file']}: {c['reason']}")
    s = report.get("summary")
    if s:
        ori = ", ".join(f"{k} x{v}" for k, v in s["orientations"].items()) or "-"
        spc = ", ".join(f"{k} mm x{v}" for k, v in s["spacings_mm"].items()) or "-"
        lab = ", ".join(f"{k} {v}" for k, v in s["label_voxels"].items())
        sk = s["slices_kept"]
        out.append(f"  summary: {s['cases']} cases, {s['ok']} OK, {s['bad']} bad; orientation {ori}; spacing {spc}; "
                   f"label voxels {lab}; slices kept {sk['total']} (per case {sk['min']}..{sk['max']})")
    out.append(f"  result: {'OK' if report['ok'] else 'NOT OK'}")
    return "\n".join(out)

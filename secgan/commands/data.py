"""``secgan data check DIR``: a site-side doctor for a data folder (reads files, sends nothing)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from secgan.core import exitcodes
from secgan.data.dataset import CROP_MODES
from secgan.data.layouts import LAYOUT_CHOICES

HELP = "site data: check a data folder the way training reads it (local only, sends nothing)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="report the layout, every case (OK or bad, why), labels, spacing, "
                                         "orientation and slices kept; exit 2 if anything is bad",
                           description=HELP)
    check.add_argument("dir", type=Path, help="a site folder (or a folder of site folders, e.g. a phantom)")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    check.add_argument("--layout", default="auto", choices=LAYOUT_CHOICES, help="folder layout (default: detected)")
    check.add_argument("--image-size", type=int, default=64, help="slice size training uses (image.size)")
    check.add_argument("--min-tumour-pixels", type=int, default=10, help="tumour pixels a kept slice needs")
    check.add_argument("--crop", default="auto", choices=CROP_MODES, help="crop to the brain (data crop)")
    check.add_argument("--voxel-mm", type=float, default=1.0, help="common voxel size (data voxel_mm)")
    check.add_argument("--affine-tolerance", type=float, default=None, help="data affine_tolerance (mm)")
    check.add_argument("--oblique-tolerance-deg", type=float, default=None, help="data oblique_tolerance_deg")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from secgan.core.errors import ConfigError
    from secgan.data.brats import ReaderLimits
    from secgan.data.check import check_site, render_text, site_folders

    if args.image_size % 16 or not 16 <= args.image_size <= 512:
        raise ConfigError(f"--image-size must be a multiple of 16 in 16..512, got {args.image_size}")
    if args.min_tumour_pixels < 0 or not 0.1 <= args.voxel_mm <= 10.0:
        raise ConfigError("--min-tumour-pixels must be >= 0 and --voxel-mm in 0.1..10")
    limits = ReaderLimits()
    try:
        if args.affine_tolerance is not None:
            limits = dataclasses.replace(limits, affine_atol=args.affine_tolerance)
        if args.oblique_tolerance_deg is not None:
            limits = dataclasses.replace(limits, oblique_tolerance_deg=args.oblique_tolerance_deg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    reports = [check_site(d, layout=args.layout, image_size=args.image_size, min_tumour_pixels=args.min_tumour_pixels,
                          limits=limits, voxel_mm=args.voxel_mm, crop=args.crop) for d in site_folders(args.dir)]
    ok = all(r["ok"] for r in reports)
    if args.json:
        print(json.dumps({"ok": ok, "sites": reports}, sort_keys=True))
    else:
        print("\n".join(render_text(r) for r in reports))
        print("data check: OK" if ok else "data check: NOT OK (see BAD and PROBLEM lines)")
    return exitcodes.OK if ok else exitcodes.USAGE

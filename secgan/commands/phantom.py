"""``secgan phantom``: write a procedural multi-site BraTS-layout phantom federation."""

from __future__ import annotations

import argparse

HELP = ("write a procedural multi-site phantom for demos and tests: brain tumours (BraTS layout, NIfTI; the "
        "default), H&E nuclei tiles (--domain nuclei) or dermoscopy lesions (--domain derm)")

DEFAULT_SITES = 3
DEFAULT_PUBLIC_SITES = 1
DOMAINS = ("brain", "nuclei", "derm")
# nuclei: one site per organ of secgan.data.nuclei.ORGANS
DEFAULT_NUCLEI_SITES = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (site-1 ... site-N are created in it)")
    parser.add_argument("--domain", choices=DOMAINS, default="brain",
                        help="brain (default); nuclei: RGB H&E tiles + instance masks, one organ per site "
                             "(secgan.data.nuclei); derm: RGB lesion images + an ISIC-style label CSV, three "
                             "institutions (secgan.data.derm)")
    parser.add_argument("--tiles", type=int, default=4, help="nuclei: tiles per slide case (default 4)")
    parser.add_argument("--sites", type=int, default=None,
                        help=f"number of sites (default {DEFAULT_SITES}; {DEFAULT_PUBLIC_SITES} with --public)")
    parser.add_argument("--patients", type=int, default=20,
                        help="patients per site (default 20; nuclei: slide cases)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--size", type=int, default=64, help="in-plane size in voxels, or tile/image side in pixels (default 64)")
    parser.add_argument("--slices", type=int, default=32, help="axial slices per volume (default 32)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="held-out patients per site (default 0.25)")
    parser.add_argument("--public", action="store_true",
                        help="a public cohort for pretraining: another phantom distribution (other contrasts, "
                             "intensity curves, noise, bias, blur, tumour sizes; case ids Public1-P001...), "
                             "see secgan.data.phantom")


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from secgan.data.phantom import PUBLIC_STYLE, SITE_STYLE, write_phantom
    from secgan.core.errors import ConfigError
    from secgan.core.logs import get_logger

    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.domain != "brain":
        return _run_tiles(args)
    style = PUBLIC_STYLE if args.public else SITE_STYLE
    sites = args.sites if args.sites is not None else (DEFAULT_PUBLIC_SITES if args.public else DEFAULT_SITES)
    start = time.perf_counter()
    try:
        site_dirs = write_phantom(
            Path(args.out),
            sites=sites,
            patients=args.patients,
            seed=args.seed,
            size=args.size,
            slices=args.slices,
            test_fraction=args.test_fraction,
            style=style,
        )
    except ValueError as exc:
        raise ConfigError(f"phantom: {exc}") from None
    seconds = round(time.perf_counter() - start, 3)
    get_logger(__name__).info("phantom_written", style=style.name, sites=len(site_dirs), patient_count=args.patients, seconds=seconds)
    for d in site_dirs:
        print(d)
    return 0


def _run_tiles(args: argparse.Namespace) -> int:
    """``--domain nuclei|derm``: the 2-D RGB phantoms."""
    import time
    from pathlib import Path

    from secgan.core.errors import ConfigError
    from secgan.core.logs import get_logger

    if args.public:
        raise ConfigError("--public is a brain phantom option (a public cohort of another distribution)")
    start = time.perf_counter()
    try:
        if args.domain == "nuclei":
            from secgan.data.nuclei import write_nuclei_phantom

            sites = args.sites if args.sites is not None else DEFAULT_NUCLEI_SITES
            site_dirs = write_nuclei_phantom(Path(args.out), sites=sites, cases=args.patients, tiles=args.tiles,
                                             seed=args.seed, size=args.size, test_fraction=args.test_fraction)
        else:
            from secgan.data.derm import write_derm_phantom

            sites = args.sites if args.sites is not None else DEFAULT_SITES
            site_dirs = write_derm_phantom(Path(args.out), sites=sites, patients=args.patients, seed=args.seed,
                                           size=args.size, test_fraction=args.test_fraction)
    except ValueError as exc:
        raise ConfigError(f"phantom: {exc}") from None
    seconds = round(time.perf_counter() - start, 3)
    get_logger(__name__).info("phantom_written", style=args.domain, sites=len(site_dirs), patient_count=args.patients,
                              seconds=seconds)
    for d in site_dirs:
        print(d)
    return 0

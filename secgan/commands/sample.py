"""``secgan sample``: draw synthetic images from a trained generator checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "sample N synthetic images (+ label maps) from a generator checkpoint into a synthetic folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder or .safetensors file")
    parser.add_argument("--n", required=True, type=int, help="number of samples")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", choices=["procedural", "bank"], default="procedural", help="condition source")
    parser.add_argument("--bank-dir", type=Path, default=None, help="label-map bank folder (with --source bank)")
    parser.add_argument("--no-nifti", action="store_true", help="skip the BraTS-layout NIfTI copy")
    parser.add_argument("--no-previews", action="store_true")


def run(args: argparse.Namespace) -> int:
    from secgan.errors import ConfigError
    from secgan.synthetic import sample_generator, write_synthetic

    if not 1 <= args.n <= 1_000_000:
        raise ConfigError("--n must be in 1..1000000")
    if args.seed < 0:
        raise ConfigError("--seed must be >= 0")
    if args.source == "bank" and args.bank_dir is None:
        raise ConfigError("--source bank needs --bank-dir")
    images, conds = sample_generator(args.checkpoint, n=args.n, seed=args.seed, source=args.source, bank_dir=args.bank_dir)
    write_synthetic(args.out, images, conds, previews=not args.no_previews, nifti=not args.no_nifti,
                    meta={"seed": args.seed, "source": args.source})
    print(f"wrote {args.n} samples to {args.out}")
    return 0

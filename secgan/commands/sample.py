"""``secgan sample``: draw synthetic images from a trained generator checkpoint.

An ``--out`` that already holds files is refused unless ``--force``; with ``--force`` the previous
sample's own files (``synthetic.safetensors``, ``nifti/``, ``previews/``) are removed before the new
ones are written, so no stale case or preview stays beside them. A folder holding anything else is
refused even with ``--force``: this command never deletes what it did not write.
"""

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
    parser.add_argument("--pixel-mm", type=float, default=None,
                        help="in-plane pixel size the NIfTI copies state (default: unknown, said so in their header)")
    parser.add_argument("--force", action="store_true",
                        help="replace a previous sample in --out (its synthetic.safetensors, nifti/, previews/)")


def own_outputs() -> tuple[str, ...]:
    """Names ``write_synthetic`` writes in a synthetic folder (what --force may remove)."""
    from secgan.gan.synthetic import SYNTHETIC_FILE

    return (SYNTHETIC_FILE, "nifti", "previews")


def previous_outputs(out: Path, *, force: bool) -> list[Path]:
    """What ``--force`` will remove from ``out``; refuses a non-empty ``out`` without ``force`` and,
    even with it, a folder holding anything this command does not write."""
    from secgan.core.errors import ConfigError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if not entries:
        return []
    if not force:
        raise ConfigError(f"--out {out} is not empty (holds {entries[0].name}); pass --force to replace the "
                          "previous sample, or choose another folder")
    own = own_outputs()
    temps = tuple(f".{n}.tmp-" for n in own)  # an interrupted atomic write
    foreign = [e.name for e in entries if e.name not in own and not e.name.startswith(temps)]
    if foreign:
        raise ConfigError(f"--out {out} holds {foreign[0]}, which `secgan sample` does not write; "
                          "refusing to clear it even with --force")
    return entries


def remove_outputs(entries: list[Path]) -> None:
    import shutil

    for e in entries:
        if e.is_dir() and not e.is_symlink():
            shutil.rmtree(e)
        else:
            e.unlink()


def run(args: argparse.Namespace) -> int:
    from secgan.core.errors import ConfigError
    from secgan.gan.synthetic import sample_generator, write_synthetic

    if not 1 <= args.n <= 1_000_000:
        raise ConfigError("--n must be in 1..1000000")
    if args.seed < 0:
        raise ConfigError("--seed must be >= 0")
    if args.source == "bank" and args.bank_dir is None:
        raise ConfigError("--source bank needs --bank-dir")
    previous = previous_outputs(args.out, force=args.force)  # refused before any sampling
    images, conds = sample_generator(args.checkpoint, n=args.n, seed=args.seed, source=args.source, bank_dir=args.bank_dir)
    remove_outputs(previous)  # only once the new sample exists
    write_synthetic(args.out, images, conds, previews=not args.no_previews, nifti=not args.no_nifti,
                    meta={"seed": args.seed, "source": args.source}, generator_checkpoint=args.checkpoint,
                    pixel_mm=args.pixel_mm)
    print(f"wrote {args.n} samples to {args.out}")
    return 0

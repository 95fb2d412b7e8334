"""``secgan sweep``: the whole utility comparison (real baselines, Syn-All, AsynDGAN with and without DP)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "utility sweep: Real-All, Real-Subset-n (+synthetic), Syn-All, AsynDGAN and AsynDGAN+DP at several epsilons"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secgan.evaluation.sweep_outputs import OUTPUT_FILES

    parser.add_argument("--config", required=True, type=Path, help="sweep config (TOML), e.g. examples/sweep.toml")
    parser.add_argument("--out", required=True, type=Path,
                        help=f"output folder: {', '.join(OUTPUT_FILES)}; "
                             "on a re-run, finished settings whose part of the config is unchanged are kept, the "
                             "others redone; a GAN folder trained with another config is refused")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train the GAN runs in this many processes first (each with cpu_count / jobs threads), "
                             "then evaluate; 1 trains them one after another as the settings need them")
    parser.add_argument("--train-gans", default=None, metavar="NAME:RUN,...",
                        help="train only these GAN runs (e.g. asyndgan:0,syn-all:1) and exit; what --jobs workers run")


def run(args: argparse.Namespace) -> int:
    import time

    from secgan.evaluation.sweep import run_sweep
    from secgan.evaluation.sweep_outputs import OUTPUT_FILES

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)

    from secgan.core.errors import ConfigError

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    items = [i for i in args.train_gans.split(",") if i] if args.train_gans is not None else None
    rows = run_sweep(args.config, args.out, progress=say, jobs=args.jobs, train_gans=items)
    if items is not None:
        say(f"trained {len(items)} GAN run(s)")
        return 0
    print(f"{'setting':34} {'epsilon':>8} {'dice':>14} {'hd95':>7}")
    for r in rows:
        eps = "-" if r.get("epsilon") is None else f"{r['epsilon']:g}"
        print(f"{r['setting']:34} {eps:>8} {r['dice_mean']:.3f} +- {r['dice_std']:.3f} {r['hd95_mean']:7.2f}")
    first, *others = OUTPUT_FILES
    print(f"wrote {Path(args.out) / first}, {', '.join(others)}")
    return 0

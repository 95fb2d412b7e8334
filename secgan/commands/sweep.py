"""``secgan sweep``: the whole utility comparison (real baselines, Syn-All, AsynDGAN with and without DP)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "utility sweep: Real-All, Real-Subset-n (+synthetic), Syn-All, AsynDGAN and AsynDGAN+DP at several epsilons"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="sweep config (TOML), e.g. examples/sweep.toml")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: results.csv, results.json, dice_vs_epsilon.png, report.html; "
                             "finished settings are kept and skipped on a re-run")


def run(args: argparse.Namespace) -> int:
    import time

    from secgan.evaluation.sweep import run_sweep

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)

    rows = run_sweep(args.config, args.out, progress=say)
    print(f"{'setting':34} {'epsilon':>8} {'dice':>14} {'hd95':>7}")
    for r in rows:
        eps = "-" if r.get("epsilon") is None else f"{r['epsilon']:g}"
        print(f"{r['setting']:34} {eps:>8} {r['dice_mean']:.3f} +- {r['dice_std']:.3f} {r['hd95_mean']:7.2f}")
    print(f"wrote {Path(args.out) / 'results.csv'}, results.json, dice_vs_epsilon.png, report.html")
    return 0

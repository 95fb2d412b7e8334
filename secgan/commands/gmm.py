"""``secgan gmm``: AsynDGAN's 1-D Gaussian-mixture sanity experiment (CPU, seconds to minutes)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "1-D mixture experiment: per-site GANs vs pooled GAN vs AsynDGAN; writes gmm.json and gmm.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per method")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from secgan.core.errors import ConfigError
    from secgan.core.fsio import atomic_write_json
    from secgan.simulation.gmm import GmmConfig, plot_gmm, run_gmm

    if not 1 <= args.steps <= 1_000_000:
        raise ConfigError("--steps must be in 1..1000000")
    if args.seed < 0:
        raise ConfigError("--seed must be >= 0")
    cfg = dataclasses.replace(GmmConfig(), steps=args.steps, seed=args.seed)
    results, samples = run_gmm(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "gmm.json", results)
    plot_gmm(args.out / "gmm.png", samples, results)
    for name, r in results["methods"].items():
        print(f"{name:14s} W1 {r['w1']:.3f}  modes {r['modes_covered']}/3  fractions {r['mode_fractions']}")
    return 0

"""``secgan train``: an in-process AsynDGAN run (all sites simulated in this process)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "train a generator in-process: one coordinator and every site of the config in this process"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="run config (TOML), e.g. examples/inprocess.toml")
    parser.add_argument("--out", required=True, type=Path, help="output folder (checkpoint, site state, previews, run.json)")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from secgan.run.config import load_run_config
    from secgan.simulation.runner import run_inprocess

    cfg = load_run_config(args.config, steps=args.steps)
    summary = run_inprocess(cfg, out_dir=args.out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps({k: summary[k] for k in ("steps_done", "stopped", "wall_seconds")}))
    return 0

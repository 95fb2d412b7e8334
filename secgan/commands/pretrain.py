"""``secgan pretrain``: train G and a D non-privately on a public cohort, for ``train.init_from``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "pretrain G and D on a public cohort (no privacy, done once): weights for train.init_from and a clip norm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path,
                        help="the run config whose model and training settings to pretrain (its data and privacy are not used)")
    parser.add_argument("--public", required=True, type=Path,
                        help="the public cohort: a site folder with split.json, or a folder of site-K folders "
                             "(`secgan phantom --public`)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (weights, pretrain.json, the run)")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from secgan.simulation.pretrain import pretrain
    from secgan.run.config import load_run_config

    cfg = load_run_config(args.config, steps=args.steps)
    info = pretrain(cfg, args.public, args.out, progress=not args.no_progress)
    print(json.dumps({"steps": info["steps"], "patients": info["trained_on"]["patients"],
                      "recommended_clip_norm": info["clip_norm"]["recommended"]}))
    return 0

"""``secgan evaluate``: train the downstream U-Net on one source and score it on the real test set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from secgan.data.layouts import LAYOUT_CHOICES

HELP = "downstream utility: train a 2-D U-Net on one source, report Dice and HD95 on held-out real patients"


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return vals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-source", required=True,
                        help="real-all | real-subset-N | synthetic | real-subset-N+synthetic | real-all+synthetic")
    parser.add_argument("--data", required=True, type=Path,
                        help="data root with site-K folders and split.json (the test set is every site's test split)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (evaluation.json)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="generator checkpoint (synthetic sources)")
    parser.add_argument("--condition-source", default="procedural", choices=["procedural", "bank"],
                        help="label maps for synthetic pairs")
    parser.add_argument("--bank-dir", type=Path, default=None, help="label-map bank (with --condition-source bank)")
    parser.add_argument("--n-synthetic", type=int, default=0,
                        help="synthetic pairs per training set (0: as many as Real-All's train slices for "
                             "'synthetic', one per real slice for 'real-...+synthetic')")
    parser.add_argument("--seeds", type=_ints, default=(0,), help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs-over-own-data", action="store_true",
                        help="count epochs over the source's own slices (default: over Real-All's train slices, "
                             "so every source gets the same number of optimiser steps)")
    parser.add_argument("--channels", type=_ints, default=(16, 32, 64, 128), help="U-Net widths, e.g. 16,32,64")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip a malformed case with a warning (naming the file, not the patient) instead of stopping")
    parser.add_argument("--layout", default="auto", choices=LAYOUT_CHOICES,
                        help="folder layout of every site (default: detected)")
    parser.add_argument("--quality", action="store_true",
                        help="also report intensity W1 and feature precision/recall of the synthetic pairs")


def run(args: argparse.Namespace) -> int:
    from secgan.core.config import to_dict
    from secgan.core.errors import ConfigError
    from secgan.evaluation.downstream import Workbench, evaluate_source
    from secgan.evaluation.segmenter import SegmenterConfig
    from secgan.evaluation.sources import parse_source
    from secgan.core.fsio import atomic_write_json

    spec = parse_source(args.train_source)
    if args.image_size % 16 or not 16 <= args.image_size <= 512:
        raise ConfigError(f"--image-size must be a multiple of 16 in 16..512, got {args.image_size}")
    if args.n_synthetic < 0 or args.epochs < 0:
        raise ConfigError("--n-synthetic and --epochs must be >= 0")
    if spec.synthetic and args.checkpoint is None:
        raise ConfigError(f"--train-source {spec.name} needs --checkpoint")
    try:
        seg = SegmenterConfig(channels=args.channels, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              device=args.device, equal_steps=not args.epochs_over_own_data)
        seg.check_fits(args.image_size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda, but no CUDA device is available")
    bench = Workbench(args.data, args.image_size, load_options={"skip_bad": args.skip_bad, "layout": args.layout})
    result = evaluate_source(
        spec, bench, seeds=args.seeds, segmenter=seg, checkpoint=args.checkpoint,
        n_synthetic=args.n_synthetic or None, condition_source=args.condition_source, bank_dir=args.bank_dir,
    )
    if args.quality and spec.synthetic:
        from secgan.evaluation.quality import image_quality
        from secgan.gan.synthetic import sample_generator

        tr_im, tr_co, _ = bench.real(None)
        te_im, _, _ = bench.real(None, split="test")
        fake, _ = sample_generator(args.checkpoint, n=min(len(te_im), 1000), seed=args.seeds[0] + 9173,
                                   source=args.condition_source, bank_dir=args.bank_dir)
        result["quality"] = image_quality((tr_im, tr_co), te_im, fake, seed=args.seeds[0])
    result = {"train_source": spec.name, "segmenter": to_dict(seg), "image_size": args.image_size, **result}
    atomic_write_json(Path(args.out) / "evaluation.json", result)
    keys = ("dice_mean", "dice_std", "hd95_mean", "dice_wt_mean", "dice_tc_mean", "dice_et_mean")
    print(json.dumps({"train_source": spec.name, **{k: round(result[k], 4) for k in keys}}))
    return 0

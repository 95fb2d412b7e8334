"""``secgan projection``: the latent projection check of a generator on an ISIC-style site folder
(its train split against its held-out test split, per patient; :mod:`secgan.evaluation.projection`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from secgan.gan.inversion import DEFAULT_LR, DEFAULT_RESTARTS, DEFAULT_STEPS

HELP = "authenticity check: project a site's training and held-out images into G, compare their distances (AUC)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="generator checkpoint (RGB, class or none)")
    parser.add_argument("--site", required=True, type=Path,
                        help="ISIC-style site folder (images/, a labels CSV, split.json): train split = training, "
                             "test split = held-out")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--restarts", type=int, default=DEFAULT_RESTARTS)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from secgan.core.errors import ConfigError
    from secgan.core.fsio import atomic_write_json
    from secgan.core.spec import one_hot_classes
    from secgan.data.isic import read_isic
    from secgan.evaluation.projection import projection_check
    from secgan.gan.checkpoint import load_checkpoint

    ck = load_checkpoint(args.checkpoint)
    image, _ = ck.generator_config()
    if image.condition not in ("class", "none") or image.image_channels != 3:
        raise ConfigError(f"--checkpoint: an ISIC folder needs an RGB generator with a class or no condition, "
                          f"this one is {image.image_channels}-channel {image.condition!r}")
    classes = {"classes": image.cond_names} if image.condition == "class" else {}
    sets = [read_isic(args.site, split=s, image_size=image.size, **classes) for s in ("train", "test")]
    conds = [one_hot_classes(s.labels, image.cond_channels) if image.condition == "class"
             else np.zeros((len(s.labels), 0, 1, 1), np.float32) for s in sets]
    try:
        result = projection_check(ck.build_generator(), sets[0].images, conds[0], sets[1].images, conds[1],
                                  image=image, train_groups=sets[0].patient_index, heldout_groups=sets[1].patient_index,
                                  steps=args.steps, restarts=args.restarts, lr=args.lr, seed=args.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.out is not None:
        atomic_write_json(args.out, {**dataclasses.asdict(result), "summary": result.summary()})
    print(json.dumps({"verdict": result.verdict, "auc": round(result.auc, 4),
                      "auc_ci": [round(v, 4) for v in result.auc_ci], "p_value": result.p_value}))
    print(result.summary())
    return 0

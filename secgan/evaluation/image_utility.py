"""Downstream utility for the 2-D image domains, chosen by the run's condition kind (the spec):

- ``instances`` (nuclei): the nuclei U-Net (:mod:`secgan.evaluation.nuclei_segmenter`) trained on each
  source's tiles and instance maps, scored by Dice, object F1 and AJI on the real held-out cases;
- ``class`` (dermatology): the TSTR classifier (:mod:`secgan.evaluation.classifier`) trained on each
  source's images and labels, scored by balanced accuracy, macro AUC and per-class recall on the
  real held-out patients.

The sources are those of the brain demo: Real-All (the train patients of every site pooled),
Real-Subset-1 (site 1 alone), the private generator's samples, and the public pretraining's samples
(the floor). Every source gets the same number of optimiser steps (epochs over Real-All), as the
brain U-Net does, so a small source is not under-trained. Synthetic conditions give the targets: the
generator's instance map (the argmax of its 3-class condition, separated into nuclei) or its class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from secgan.core.spec import ImageSpec

# condition kind -> the metrics of its rows, (key, label), headline first
METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "instances": (("dice", "Dice"), ("f1", "F1"), ("aji", "AJI")),
    "class": (("balanced_accuracy", "balanced accuracy"), ("macro_auc", "macro AUC")),
}


def _unit(images: np.ndarray, image: ImageSpec) -> np.ndarray:
    lo, hi = (float(v) for v in image.value_range)
    return np.clip((np.asarray(images, np.float32) - lo) / (hi - lo), 0.0, 1.0)


def _pooled(site_dirs: Sequence[Path], split: str, image: ImageSpec):
    from secgan.data.dataset import load_site

    parts = [load_site(Path(d), split=split, image_size=image.size, image=image).all_slices() for d in site_dirs]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def _targets(conds: np.ndarray, image: ImageSpec) -> np.ndarray:
    """Synthetic conditions -> instance maps (instances) or labels (class)."""
    if image.condition == "class":
        return np.argmax(conds[:, :, 0, 0], axis=1).astype(np.int64)
    from secgan.data.nuclei import classes_to_instances

    return np.stack([classes_to_instances(np.argmax(c, axis=0).astype(np.uint8)) for c in conds])


def image_utility(*, site_dirs: Sequence[Path], image: ImageSpec, synthetic: dict[str, tuple[np.ndarray, np.ndarray]],
                  epochs: int, seed: int) -> list[dict]:
    """One row per source (``real-all``, ``real-subset-1``, then each of ``synthetic``: name ->
    (images in the spec's range, conditions)); each row has ``source`` and the :data:`METRICS` of
    the spec's condition kind (class rows also ``per_class_recall`` and ``classes``); a score undefined on the test set (a
    class it lacks) is None."""
    if image.condition not in METRICS:
        raise ValueError(f"no downstream task for image.condition {image.condition!r} (have {', '.join(METRICS)})")
    train_all = _pooled(site_dirs, "train", image)
    train_one = _pooled(site_dirs[:1], "train", image)
    test_images, test_conds, test_segs = _pooled(site_dirs, "test", image)
    sources: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (images, conds, segs) in (("real-all", train_all), ("real-subset-1", train_one)):
        sources[name] = (_unit(images, image), _real_targets(conds, segs, image))
    for name, (images, conds) in synthetic.items():
        sources[name] = (_unit(images, image), _targets(np.asarray(conds), image))
    test_x = _unit(test_images, image)
    test_y = _real_targets(test_conds, test_segs, image)
    rows = []
    if image.condition == "instances":
        from secgan.evaluation.nuclei_segmenter import score_nuclei_unet, train_nuclei_unet
        from secgan.evaluation.segmenter import SegmenterConfig

        seg = SegmenterConfig(channels=(16, 32, 64), epochs=epochs)
        steps = max(1, epochs * -(-len(train_all[0]) // seg.batch_size))
        for name, (x, y) in sources.items():
            model = train_nuclei_unet(x, y, config=seg, seed=seed, steps=steps)
            s = score_nuclei_unet(model, test_x, test_y)
            rows.append({"source": name, "dice": s.dice, "f1": s.f1, "aji": s.aji, "test_tiles": s.tiles,
                         "train_tiles": int(len(x))})
    else:
        from secgan.evaluation.classifier import ClassifierConfig, tstr_scores

        clf = ClassifierConfig(epochs=epochs)
        steps = max(1, epochs * -(-len(train_all[0]) // clf.batch_size))
        for name, (x, y) in sources.items():
            s = tstr_scores(x, y, test_x, test_y, classes=image.cond_channels, config=clf, seed=seed, steps=steps)
            rows.append({"source": name, "balanced_accuracy": s.balanced_accuracy, "macro_auc": _finite(s.macro_auc),
                         "per_class_recall": [_finite(r) for r in s.per_class_recall], "classes": list(image.cond_names),
                         "test_images": s.n, "train_images": int(len(x))})
    return rows


def _finite(x: float) -> float | None:
    """None for an undefined score (a class absent from the test set): JSON has no NaN."""
    return float(x) if np.isfinite(x) else None


def _real_targets(conds: np.ndarray, segs: np.ndarray, image: ImageSpec) -> np.ndarray:
    if image.condition == "class":
        return np.argmax(conds[:, :, 0, 0], axis=1).astype(np.int64)
    return np.asarray(segs, dtype=np.int32)  # the reader's instance maps (secgan.data.image_sites)

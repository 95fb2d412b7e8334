"""Nuclei segmentation scores on instance maps: Dice, object-level F1 and AJI.

``pred`` and ``truth`` are instance maps ``[H, W]`` (0 = background, one id per nucleus; ids need
not be contiguous), as :func:`secgan.data.nuclei.classes_to_instances` makes them from a U-Net's
3-class output. Per tile:

- **Dice** of the foreground (pixel level, nucleus vs background), MONAI's ``DiceMetric``
  (the project's Dice, as for the brain regions); both empty -> 1, exactly one empty -> 0;
- **object F1** at IoU 0.5: a predicted and a true nucleus match when their IoU is above 0.5 (such
  a match is unique, no assignment needed); F1 = 2 TP / (2 TP + FP + FN), the matches counted by
  MONAI's ``compute_panoptic_quality`` (its recognition quality, without its smoothing term); both
  maps empty -> 1;
- **AJI**, the aggregated Jaccard index of Kumar et al. (IEEE TMI 2017, "A dataset and a technique
  for generalized nuclear segmentation for computational pathology"): every true nucleus G_i is
  paired with the predicted nucleus S_j of largest IoU with it (any S_j, used or not; none if it
  overlaps none), C += |G_i & S_j|, U += |G_i | S_j| (U += |G_i| when unpaired); then U += |S_k|
  for each predicted nucleus paired with no G_i; AJI = C / U. Both maps empty -> 1.

AJI is implemented here because neither MONAI (1.6: Dice, IoU, panoptic quality, no AJI) nor any
other maintained library in the environment provides it (scikit-image, which some nuclei code
uses, is not a dependency); its tests are known answers worked by hand from the paper's definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MATCH_IOU = 0.5


@dataclass(frozen=True)
class NucleiScores:
    """Mean per-tile scores over a set of tiles."""

    dice: float
    f1: float
    aji: float
    tiles: int


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} must be instance maps of one [H, W] shape")
    if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(truth.dtype, np.integer)):
        raise ValueError("instance maps must be integer arrays")
    if (pred < 0).any() or (truth < 0).any():
        raise ValueError("instance ids must be >= 0")
    return pred.astype(np.int64), truth.astype(np.int64)


def foreground_dice(pred, truth) -> float:
    """Dice of (pred > 0) against (truth > 0), with MONAI's DiceMetric."""
    import torch
    from monai.metrics import DiceMetric

    pred, truth = _pair(pred, truth)
    p = torch.from_numpy((pred > 0).astype(np.float32))[None, None]
    t = torch.from_numpy((truth > 0).astype(np.float32))[None, None]
    return float(DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p, t)[0, 0])


def _overlaps(pred: np.ndarray, truth: np.ndarray):
    """Contingency table of ids: (true ids, pred ids, intersections [T, P], true sizes, pred sizes)."""
    t_ids, t_inv = np.unique(truth, return_inverse=True)
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    table = np.zeros((len(t_ids), len(p_ids)), dtype=np.int64)
    np.add.at(table, (t_inv.ravel(), p_inv.ravel()), 1)
    # drop the background row/column
    keep_t, keep_p = t_ids != 0, p_ids != 0
    inter = table[np.ix_(keep_t, keep_p)]
    return inter, table[keep_t].sum(axis=1), table[:, keep_p].sum(axis=0)


def object_f1(pred, truth) -> float:
    """Detection F1 with matches at IoU > 0.5 (counted by MONAI's panoptic quality)."""
    import torch
    from monai.metrics import compute_panoptic_quality

    pred, truth = _pair(pred, truth)
    if not pred.any() and not truth.any():
        return 1.0
    tp, fp, fn, _ = (float(v) for v in compute_panoptic_quality(
        torch.from_numpy(pred), torch.from_numpy(truth), match_iou_threshold=MATCH_IOU, output_confusion_matrix=True))
    return 2 * tp / (2 * tp + fp + fn)


def aji(pred, truth) -> float:
    """Aggregated Jaccard index (Kumar et al. 2017), see the module docstring."""
    pred, truth = _pair(pred, truth)
    inter, t_size, p_size = _overlaps(pred, truth)
    if not len(t_size) and not len(p_size):
        return 1.0
    c = u = 0
    used = np.zeros(len(p_size), dtype=bool)
    for i in range(len(t_size)):
        if not len(p_size) or not inter[i].any():
            u += int(t_size[i])
            continue
        iou = inter[i] / (t_size[i] + p_size - inter[i])
        j = int(np.argmax(iou))
        c += int(inter[i, j])
        u += int(t_size[i] + p_size[j] - inter[i, j])
        used[j] = True
    u += int(p_size[~used].sum())
    return c / u


def score_tiles(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> NucleiScores:
    """Mean Dice, F1 and AJI over tiles (``preds[i]`` against ``truths[i]``)."""
    if len(preds) != len(truths) or not len(preds):
        raise ValueError("need the same, non-zero number of predicted and true instance maps")
    per = [(foreground_dice(p, t), object_f1(p, t), aji(p, t)) for p, t in zip(preds, truths)]
    d, f, a = (float(np.mean(col)) for col in zip(*per))
    return NucleiScores(dice=d, f1=f, aji=a, tiles=len(per))

"""Dice and HD95 per BraTS tumour region, computed with MONAI's metric classes.

Scoring is per patient, over the 3-D stack of its slices (as BraTS scores volumes, not slices),
for the regions of :data:`secgan.core.spec.REGIONS` (whole tumour, tumour core, enhancing tumour).

Empty-mask conventions (MONAI leaves them undefined for HD95 and configurable for Dice):
- Dice: both empty -> 1, exactly one empty -> 0 (MONAI ``ignore_empty=False``);
- HD95: both empty -> 0, exactly one empty -> the volume's diagonal in voxels (the largest
  distance possible inside it, a finite penalty instead of MONAI's nan/inf).
Distances are in voxels (the slices are resampled to a square grid, spacing 1).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from secgan.core.spec import REGIONS

REGION_NAMES: tuple[str, ...] = tuple(REGIONS)


def region_masks(seg: np.ndarray) -> np.ndarray:
    """BraTS label map ``[...]`` -> boolean region masks ``[len(REGIONS), ...]`` (wt, tc, et)."""
    seg = np.asarray(seg)
    return np.stack([np.isin(seg, labels) for labels in REGIONS.values()])


def regions_to_labels(masks: np.ndarray) -> np.ndarray:
    """Nested region masks ``[3, ...]`` (wt, tc, et) -> BraTS label map (2 oedema, 1 core, 4 enhancing)."""
    wt, tc, et = (np.asarray(m, dtype=bool) for m in masks)
    seg = np.zeros(wt.shape, dtype=np.int16)
    seg[wt] = 2
    seg[wt & tc] = 1
    seg[wt & tc & et] = 4
    return seg


def _as_volume_batch(masks: np.ndarray):
    """``[R, S, H, W]`` bool -> torch ``[R, 1, H, W, S]`` float (one MONAI batch row per region)."""
    import torch

    arr = np.ascontiguousarray(np.moveaxis(np.asarray(masks, dtype=np.float32), 1, -1))
    return torch.from_numpy(arr)[:, None]


def volume_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Dice and HD95 of one patient, per region.

    ``pred`` and ``truth`` are region masks ``[3, S, H, W]`` (see :func:`region_masks`); returns
    ``{"wt": {"dice": .., "hd95": ..}, "tc": .., "et": ..}``.
    """
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape or pred.ndim != 4 or pred.shape[0] != len(REGIONS):
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} must both be [{len(REGIONS)}, S, H, W]")
    p, t = _as_volume_batch(pred), _as_volume_batch(truth)
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p, t)
    with warnings.catch_warnings():
        # MONAI warns about empty masks (handled below by the documented convention) and about an
        # argument it passes to itself internally (deprecated upstream, not ours).
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(p, t)
    diagonal = math.sqrt(sum(float(n) ** 2 for n in pred.shape[1:]))
    out: dict[str, dict[str, float]] = {}
    for r, name in enumerate(REGION_NAMES):
        p_empty, t_empty = not pred[r].any(), not truth[r].any()
        if p_empty and t_empty:
            h = 0.0
        elif p_empty or t_empty:
            h = diagonal
        else:
            h = float(hd[r, 0])
        out[name] = {"dice": float(dice[r, 0]), "hd95": h}
    return out


def score_patients(
    preds: Sequence[np.ndarray], truths: Sequence[np.ndarray]
) -> dict[str, dict[str, float]]:
    """Mean Dice and HD95 per region over patients, plus ``"mean"`` over the three regions.

    ``preds[i]`` / ``truths[i]`` are patient i's region masks ``[3, S, H, W]``.
    """
    if len(preds) != len(truths) or not preds:
        raise ValueError("need the same, non-zero number of predicted and true volumes")
    per = [volume_scores(p, t) for p, t in zip(preds, truths)]
    out = {
        name: {k: float(np.mean([s[name][k] for s in per])) for k in ("dice", "hd95")}
        for name in REGION_NAMES
    }
    out["mean"] = {k: float(np.mean([out[n][k] for n in REGION_NAMES])) for k in ("dice", "hd95")}
    return out


@dataclass(frozen=True)
class SeedSummary:
    """Mean and spread (sample standard deviation, 0 for one seed) of one score over seeds."""

    mean: float
    std: float
    n: int


def summarise_seeds(values: Sequence[float]) -> SeedSummary:
    vals = np.asarray(list(values), dtype=np.float64)
    if vals.size == 0:
        raise ValueError("no values to summarise")
    std = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
    return SeedSummary(mean=float(vals.mean()), std=std, n=int(vals.size))


def summarise_runs(runs: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    """Flatten per-seed :func:`score_patients` results into ``{dice_mean, dice_std, hd95_mean, ...}``.

    ``dice_*`` / ``hd95_*`` without a region are the mean over the three regions; per-region keys
    are ``dice_wt_mean``, ``hd95_et_std`` and so on.
    """
    out: dict[str, float] = {}
    for region in ("mean",) + REGION_NAMES:
        for metric in ("dice", "hd95"):
            s = summarise_seeds([r[region][metric] for r in runs])
            stem = metric if region == "mean" else f"{metric}_{region}"
            out[f"{stem}_mean"] = s.mean
            out[f"{stem}_std"] = s.std
    out["seeds"] = len(runs)
    return out

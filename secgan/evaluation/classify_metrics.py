"""Classification scores for train-on-synthetic / test-on-real (TSTR): per-class recall, balanced
accuracy and macro one-vs-rest ROC AUC, from MONAI's metric functions (scikit-learn is not a
dependency).

- per-class recall (sensitivity) of the arg-max prediction: MONAI's ``get_confusion_matrix`` and
  ``compute_confusion_matrix_metric("sensitivity")`` on one-hot rows;
- balanced accuracy: the mean recall over the classes present in the test labels (scikit-learn's
  ``balanced_accuracy_score`` definition); with imbalanced data it is the number to read, not accuracy;
- macro AUC: MONAI's ``compute_roc_auc`` one-vs-rest per class (``average="none"``), averaged over the
  classes that have both positives and negatives in the test labels (MONAI returns nan for the others;
  they are listed in ``absent``). A class absent from the test set has recall nan.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassifyScores:
    """TSTR scores on one real test set."""

    balanced_accuracy: float
    macro_auc: float
    per_class_recall: tuple[float, ...]  # nan for a class absent from the test labels
    absent: tuple[int, ...]  # classes without positives (or without negatives) in the test labels
    n: int


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2 or labels.shape != (probs.shape[0],) or not len(labels):
        raise ValueError(f"probs must be [N, C] (C >= 2, N >= 1) and labels [N]; got {probs.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be integers in 0..{probs.shape[1] - 1}")
    if not np.isfinite(probs).all():
        raise ValueError("probs must be finite")
    return probs, labels.astype(np.int64)


def per_class_recall(probs, labels) -> np.ndarray:
    """Recall of each class for the arg-max prediction (nan where the class has no test example)."""
    import torch
    from monai.metrics import compute_confusion_matrix_metric, get_confusion_matrix

    probs, labels = _check(probs, labels)
    c = probs.shape[1]
    eye = torch.eye(c)
    pred = eye[torch.from_numpy(probs.argmax(axis=1))]
    true = eye[torch.from_numpy(labels)]
    cm = get_confusion_matrix(pred, true, include_background=True).sum(dim=0)  # [C, 4] tp fp tn fn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = compute_confusion_matrix_metric("sensitivity", cm).numpy().astype(np.float64)
    rec[np.bincount(labels, minlength=c) == 0] = np.nan
    return rec


def balanced_accuracy(probs, labels) -> float:
    """Mean recall over the classes present in ``labels``."""
    return float(np.nanmean(per_class_recall(probs, labels)))


def per_class_auc(probs, labels) -> np.ndarray:
    """One-vs-rest ROC AUC of each class (nan where a class has no positive or no negative)."""
    import torch
    from monai.metrics import compute_roc_auc

    probs, labels = _check(probs, labels)
    onehot = np.eye(probs.shape[1])[labels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MONAI warns for a one-valued class: nan, handled here
        auc = compute_roc_auc(torch.from_numpy(probs), torch.from_numpy(onehot), average="none")
    return np.asarray(auc, dtype=np.float64)


def macro_auc(probs, labels) -> float:
    """Unweighted mean of :func:`per_class_auc` over the classes where it is defined (nan if none)."""
    auc = per_class_auc(probs, labels)
    return float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")


def classify_scores(probs, labels) -> ClassifyScores:
    probs, labels = _check(probs, labels)
    auc = per_class_auc(probs, labels)
    return ClassifyScores(
        balanced_accuracy=balanced_accuracy(probs, labels),
        macro_auc=float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan"),
        per_class_recall=tuple(float(r) for r in per_class_recall(probs, labels)),
        absent=tuple(int(k) for k in np.flatnonzero(~np.isfinite(auc))),
        n=len(labels),
    )

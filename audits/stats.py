"""Pure statistics for audits: exact binomial intervals, ROC summaries and empirical epsilon.

Everything here works on plain numbers and numpy arrays so it can be checked against known
answers; no file, model or random state is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from secgan.core.errors import DataError


def clopper_pearson(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes out of n trials.

    Uses the beta-quantile form: lower = Beta(a/2; k, n-k+1), upper = Beta(1-a/2; k+1, n-k),
    with the conventions lower = 0 at k = 0 and upper = 1 at k = n.
    """
    if isinstance(k, bool) or isinstance(n, bool):
        raise DataError("clopper_pearson: k and n must be integers")
    k, n = int(k), int(n)
    if n <= 0:
        raise DataError(f"clopper_pearson: need at least one trial, got n={n}")
    if not 0 <= k <= n:
        raise DataError(f"clopper_pearson: successes k={k} must be within 0..n={n}")
    if not 0.0 < confidence < 1.0:
        raise DataError(f"clopper_pearson: confidence must be in (0, 1), got {confidence}")
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(_st.beta.ppf(a / 2.0, k, n - k + 1))
    hi = 1.0 if k == n else float(_st.beta.ppf(1.0 - a / 2.0, k + 1, n - k))
    # Guard against quantile round-off so that lo <= k/n <= hi always holds.
    p = k / n
    return min(max(lo, 0.0), p), max(min(hi, 1.0), p)


@dataclass(frozen=True)
class EpsilonBound:
    epsilon_lb: float  # >= 0; 0 means "no evidence of leakage at this confidence"
    tpr: float
    fpr: float
    tpr_ci: tuple[float, float]
    fpr_ci: tuple[float, float]
    confidence: float


def epsilon_lower_bound(
    *, tp: int, n_pos: int, fp: int, n_neg: int, delta: float, confidence: float = 0.95
) -> EpsilonBound:
    """Lower bound on epsilon implied by one membership test (Jagielski et al. 2020, Nasr et al. 2021).

    An (epsilon, delta)-DP mechanism forces TPR <= e^eps FPR + delta and
    1 - FPR <= e^eps (1 - TPR) + delta for every test. With Clopper-Pearson bounds on both
    rates, eps_lb = max(log((TPR_lo - delta) / FPR_hi), log((1 - FPR_hi - delta) / (1 - TPR_lo))).

    The mirror images (FPR <= e^eps TPR + delta and 1 - TPR <= e^eps (1 - FPR) + delta) also hold,
    since DP is symmetric in the two neighbouring datasets; they catch an attack whose direction
    is inverted. Each term takes the pessimistic end of every interval: the second one needs a lower bound on
    1 - FPR (that is 1 - FPR_hi) and an upper bound on 1 - TPR (1 - TPR_lo). Writing it with FPR_lo
    and TPR_hi instead would give a useless attack (TPR = FPR = 0) a positive "lower bound".

    Each rate gets a two-sided interval at level 1 - (1 - confidence) / 2 (Bonferroni over the two
    rates), so the returned bound holds with probability at least ``confidence``.
    """
    if not 0.0 <= delta < 1.0:
        raise DataError(f"epsilon_lower_bound: delta must be in [0, 1), got {delta}")
    per_rate = 1.0 - (1.0 - confidence) / 2.0
    tpr_lo, tpr_hi = clopper_pearson(tp, n_pos, confidence=per_rate)
    fpr_lo, fpr_hi = clopper_pearson(fp, n_neg, confidence=per_rate)
    candidates = [0.0]
    # (numerator lower bound, denominator upper bound) of the four DP inequalities: the two of
    # Jagielski et al. and their mirror images (DP holds for the neighbouring pair either way round).
    for num, den in (
        (tpr_lo, fpr_hi),
        (1.0 - fpr_hi, 1.0 - tpr_lo),
        (fpr_lo, tpr_hi),
        (1.0 - tpr_hi, 1.0 - fpr_lo),
    ):
        if num - delta > 0.0 and den > 0.0:
            candidates.append(math.log((num - delta) / den))
    return EpsilonBound(
        epsilon_lb=max(candidates),
        tpr=tp / n_pos,
        fpr=fp / n_neg,
        tpr_ci=(tpr_lo, tpr_hi),
        fpr_ci=(fpr_lo, fpr_hi),
        confidence=confidence,
    )


def max_resolvable_epsilon(*, n_pos: int, n_neg: int, delta: float, confidence: float = 0.95) -> float:
    """The largest epsilon lower bound any attack could prove at these sample sizes (a perfect one)."""
    return epsilon_lower_bound(tp=n_pos, n_pos=n_pos, fp=0, n_neg=n_neg, delta=delta, confidence=confidence).epsilon_lb


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of "member if score >= t" (label 1 = member = positive).

    Returns (fpr, tpr, thresholds) starting at (0, 0) with threshold +inf, one point per distinct score.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    _check_scores(scores, labels)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # Last index of each run of equal scores.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[last]
    fps = np.cumsum(~y)[last]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thr = np.r_[np.inf, s[last]]
    return fpr, tpr, thr


def auc_score(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(AUC, one-sided p-value of AUC > 0.5) via the Mann-Whitney U statistic (ties count half)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    _check_scores(scores, labels)
    pos, neg = scores[labels], scores[~labels]
    res = _st.mannwhitneyu(pos, neg, alternative="greater", method="auto")
    auc = float(res.statistic) / (len(pos) * len(neg))
    return auc, float(res.pvalue)


def _check_scores(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise DataError(f"scores {scores.shape} and labels {labels.shape} must be equal 1-D shapes")
    if not np.all(np.isfinite(scores)):
        raise DataError("scores contain NaN or infinity")
    if labels.all() or not labels.any():
        raise DataError("need at least one member and one non-member score")


def threshold_at_fpr(neg_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold t with (fraction of negatives >= t) <= target_fpr (strictly above ties)."""
    neg = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    allowed = int(math.floor(target_fpr * len(neg) + 1e-9))
    if allowed >= len(neg):
        return float(neg[-1])
    # Members are predicted for score >= t; place t just above the (allowed+1)-th largest negative.
    return float(np.nextafter(neg[allowed], np.inf))


def best_epsilon_threshold(
    pos_scores: np.ndarray, neg_scores: np.ndarray, *, delta: float, confidence: float = 0.95
) -> float:
    """Threshold maximising the epsilon lower bound on this (calibration) data."""
    pos = np.asarray(pos_scores, dtype=np.float64)
    neg = np.asarray(neg_scores, dtype=np.float64)
    # Midpoints between consecutive distinct scores: a threshold in the middle of a gap carries
    # over to fresh (evaluation) data better than one sitting on a calibration score.
    u = np.unique(np.r_[pos, neg])
    cands = np.r_[u[0], (u[:-1] + u[1:]) / 2.0, np.inf]
    best_t, best = float("inf"), -1.0
    # Counts for "score >= t" at every candidate, via sorted search.
    ps, ns = np.sort(pos), np.sort(neg)
    for t in cands:
        tp = len(ps) - int(np.searchsorted(ps, t, side="left"))
        fp = len(ns) - int(np.searchsorted(ns, t, side="left"))
        e = epsilon_lower_bound(tp=tp, n_pos=len(ps), fp=fp, n_neg=len(ns), delta=delta, confidence=confidence).epsilon_lb
        if e > best:
            best, best_t = e, float(t)
    return best_t


def mann_whitney_z(x: np.ndarray, y: np.ndarray) -> float:
    """Normal-approximation Z of the U statistic counting pairs with x > y (ties half).

    Negative when x tends to be smaller than y. Tie-corrected variance. Counts by sorted search
    rather than ranking, since permutation tests call this thousands of times.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise DataError("mann_whitney_z: both samples must be non-empty")
    ys = np.sort(y)
    below = np.searchsorted(ys, x, side="left")
    upto = np.searchsorted(ys, x, side="right")
    u = float(below.sum()) + 0.5 * float((upto - below).sum())
    both = np.sort(np.r_[x, y])
    edges = np.flatnonzero(np.r_[True, both[1:] != both[:-1], True])
    counts = np.diff(edges).astype(np.float64)
    N = m + n
    tie = float((counts**3 - counts).sum()) / (N * (N - 1)) if N > 1 else 0.0
    var = m * n / 12.0 * ((N + 1) - tie)
    if var <= 0:
        return 0.0
    return (u - m * n / 2.0) / math.sqrt(var)


def binomial_greater(k: int, n: int, p: float) -> float:
    """One-sided exact binomial p-value of observing >= k successes when the rate is p."""
    if n <= 0:
        raise DataError("binomial test needs n >= 1")
    return float(_st.binomtest(int(k), int(n), float(p), alternative="greater").pvalue)

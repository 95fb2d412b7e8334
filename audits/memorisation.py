"""Memorisation tests on synthetic samples, in one feature space at a time.

- DCR (distance to closest record): each synthetic sample's nearest train distance vs nearest holdout
  distance. If the generator did not memorise, its nearest real record lies in train with probability
  n_train / (n_train + n_holdout) (records counted as slices); an exact one-sided binomial test
  asks whether "closer to train" happens more often.
- NNDR (nearest-neighbour distance ratio d1/d2 to train): copies have ratios near 0. Compared with
  the holdout-to-train ratios by a Mann-Whitney test.
- C_T (Meehan, Chaudhuri and Dasgupta 2020, "a non-parametric test to detect data-copying"):
  cells by k-means on train; in each cell the distances to the nearest train record of held-out
  samples and of generated samples are compared by the Mann-Whitney U statistic (Z < 0: generated
  samples sit closer to train than fresh data do). Cells with fewer than ``min_cell`` held-out or
  generated samples are skipped; the rest are averaged with weights = held-out cell mass.
  C_T << 0 is data-copying; C_T >> 0 is under-fitting; about 0 is neither.
- near-duplicates: synthetic samples whose DCR falls below a low percentile of holdout-to-train
  distances (by construction about that percentage is expected by chance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audits import stats
from audits.neighbours import nearest
from secgan.errors import DataError


@dataclass(frozen=True)
class MemorisationConfig:
    cells: int = 10
    min_cell: int = 5
    near_dup_percentile: float = 1.0
    kmeans_iters: int = 25


def kmeans(x: np.ndarray, k: int, *, rng: np.random.Generator, iters: int = 25) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns centres [k, D]."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    k = max(1, min(k, n))
    centres = [x[rng.integers(n)]]
    d2 = nearest(x, np.stack(centres))[0][:, 0] ** 2
    for _ in range(1, k):
        total = d2.sum()
        i = rng.integers(n) if total <= 0 else rng.choice(n, p=d2 / total)
        centres.append(x[i])
        d2 = np.minimum(d2, nearest(x, x[i : i + 1])[0][:, 0] ** 2)
    c = np.stack(centres).astype(np.float32)
    for _ in range(iters):
        assign = nearest(x, c)[1][:, 0]
        new = c.copy()
        for j in range(len(c)):
            sel = assign == j
            if sel.any():
                new[j] = x[sel].mean(0)
        if np.allclose(new, c):
            break
        c = new
    return c


def data_copying_ct(
    d_test: np.ndarray,
    d_gen: np.ndarray,
    cell_test: np.ndarray,
    cell_gen: np.ndarray,
    n_cells: int,
    *,
    min_cell: int,
) -> dict:
    """C_T from nearest-train distances and cell assignments of held-out and generated samples."""
    zs, weights, kept = [], [], []
    n_test = len(d_test)
    for j in range(n_cells):
        t, g = d_test[cell_test == j], d_gen[cell_gen == j]
        if len(t) < min_cell or len(g) < min_cell:
            continue
        z = stats.mann_whitney_z(g, t)
        zs.append(z)
        weights.append(len(t) / n_test)
        kept.append({"cell": j, "n_test": int(len(t)), "n_gen": int(len(g)), "z": z})
    if not zs:
        return {"c_t": None, "cells_used": 0, "cells_total": int(n_cells), "cells": [],
                "reason": f"no cell has at least {min_cell} held-out and {min_cell} generated samples"}
    w = np.asarray(weights)
    return {
        "c_t": float((w * np.asarray(zs)).sum() / w.sum()),
        "cells_used": len(zs),
        "cells_total": int(n_cells),
        "mass_covered": float(w.sum()),
        "cells": kept,
    }


def memorisation_tests(
    f_train: np.ndarray,
    f_hold: np.ndarray,
    f_synth: np.ndarray,
    *,
    rng: np.random.Generator,
    config: MemorisationConfig = MemorisationConfig(),
    device: str = "cpu",
) -> dict:
    """All memorisation statistics in one feature space (features are [N, D] arrays)."""
    if len(f_train) < 2:
        raise DataError(f"memorisation: need at least 2 train records, got {len(f_train)}")
    if len(f_hold) < 1 or len(f_synth) < 1:
        raise DataError("memorisation: holdout and synthetic sets must be non-empty")
    kw = {"device": device}
    ds_tr, is_tr = nearest(f_synth, f_train, k=2, **kw)
    ds_ho, _ = nearest(f_synth, f_hold, k=1, **kw)
    dh_tr, ih_tr = nearest(f_hold, f_train, k=2, **kw)
    n_tr, n_ho, n_syn = len(f_train), len(f_hold), len(f_synth)

    # DCR binomial test.
    closer = int((ds_tr[:, 0] < ds_ho[:, 0]).sum())
    expected = n_tr / (n_tr + n_ho)
    dcr = {
        "synthetic_to_train_median": float(np.median(ds_tr[:, 0])),
        "synthetic_to_holdout_median": float(np.median(ds_ho[:, 0])),
        "holdout_to_train_median": float(np.median(dh_tr[:, 0])),
        "closer_to_train": closer,
        "n_synthetic": n_syn,
        "fraction_closer_to_train": closer / n_syn,
        "expected_fraction": expected,
        "p_value": stats.binomial_greater(closer, n_syn, expected),
    }

    # NNDR.
    eps = 1e-12
    r_syn = ds_tr[:, 0] / np.maximum(ds_tr[:, 1], eps)
    r_ho = dh_tr[:, 0] / np.maximum(dh_tr[:, 1], eps)
    nndr = {
        "synthetic_median": float(np.median(r_syn)),
        "holdout_median": float(np.median(r_ho)),
        "z": stats.mann_whitney_z(r_syn, r_ho),  # < 0: synthetic ratios smaller (copy-like)
    }

    # C_T.
    # Enough held-out samples per cell (about 4 x min_cell) for the per-cell test to have power.
    k = max(1, min(config.cells, n_ho // (4 * config.min_cell), n_tr))
    centres = kmeans(f_train, k, rng=rng, iters=config.kmeans_iters)
    cell_ho = nearest(f_hold, centres, **kw)[1][:, 0]
    cell_syn = nearest(f_synth, centres, **kw)[1][:, 0]
    ct = data_copying_ct(dh_tr[:, 0], ds_tr[:, 0], cell_ho, cell_syn, len(centres), min_cell=config.min_cell)

    # Near-duplicates.
    thr = float(np.percentile(dh_tr[:, 0], config.near_dup_percentile))
    copies = int((ds_tr[:, 0] < thr).sum())
    base = config.near_dup_percentile / 100.0
    dup = {
        "threshold": thr,
        "percentile": config.near_dup_percentile,
        "count": copies,
        "fraction": copies / n_syn,
        "expected_fraction": base,
        "p_value": stats.binomial_greater(copies, n_syn, base),
        "exact_copies": int((ds_tr[:, 0] <= 1e-6 * max(float(np.median(dh_tr[:, 0])), 1e-12)).sum()),
    }
    return {
        "n_train": n_tr,
        "n_holdout": n_ho,
        "n_synthetic": n_syn,
        "dcr": dcr,
        "nndr": nndr,
        "data_copying": ct,
        "near_duplicates": dup,
        "_plot": {"synthetic_to_train": ds_tr[:, 0], "holdout_to_train": dh_tr[:, 0],
                  "synthetic_nn_index": is_tr[:, 0]},
    }

"""Memorisation tests on synthetic samples, in one feature space at a time.

- DCR (distance to closest record): the fraction of synthetic samples whose nearest real record is a
  training record rather than a held-out one.
- NNDR (nearest-neighbour distance ratio d1/d2 to train): copies have ratios near 0. Compared with
  the holdout-to-train ratios by a Mann-Whitney test.
- C_T (Meehan, Chaudhuri and Dasgupta 2020, "a non-parametric test to detect data-copying"):
  cells by k-means on train; in each cell the distances to the nearest train record of held-out
  samples and of generated samples are compared by the Mann-Whitney U statistic (Z < 0: generated
  samples sit closer to train than fresh data do). Cells with fewer than ``min_cell`` held-out or
  generated samples are skipped; the rest are averaged with weights = held-out cell mass.
  C_T << 0 is data-copying; C_T >> 0 is under-fitting; about 0 is neither.
- near-duplicates: synthetic samples whose DCR falls below a low percentile of holdout-to-train
  distances.

Significance comes from a patient-level permutation test, not from binomial or normal tables.
Those tables assume independent samples, and neither side is: slices of one patient are alike, and
a generator with little diversity puts many samples next to the same record (all of them then
land on the same side, train or held-out, together: "winner takes all"). Under the null hypothesis
(the generator does not depend on which patients it was trained on) the train/held-out labels are
exchangeable between patients, so each statistic is recomputed on many random re-assignments of
whole patients to sets of the original sizes, the synthetic set staying fixed. The distance from every
sample to every patient's nearest slice is computed once; each permutation only takes minima over
columns. The number of distinct nearest patients behind a finding is reported too: a finding driven
by one or two patients cannot be told from chance at the patient level, whatever its size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audits import stats
from audits.neighbours import nearest, nearest_per_group
from secgan.core.config import rng as _range
from secgan.core.errors import DataError


@dataclass(frozen=True)
class MemorisationConfig:
    cells: int = 10
    min_cell: int = 5
    near_dup_percentile: float = 1.0
    kmeans_iters: int = 25
    # Patient-level permutations per test; p-values are then multiples of 1 / (permutations + 1).
    permutations: int = field(default=999, metadata=_range(min=99, max=100_000))


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


def patient_labels(train_groups: np.ndarray | None, n_train: int, hold_groups: np.ndarray | None, n_hold: int):
    """Patient index 0..P-1 of every train then held-out record (held-out patients numbered after the
    train ones, so equal ids in the two cohorts stay different patients); None = one patient per record."""
    def dense(g, n):
        if g is None:
            return np.arange(n, dtype=np.int64)
        g = np.asarray(g)
        if g.shape != (n,):
            raise DataError(f"memorisation: patient index has shape {g.shape}, expected ({n},)")
        return np.unique(g, return_inverse=True)[1].astype(np.int64).reshape(n)
    tr, ho = dense(train_groups, n_train), dense(hold_groups, n_hold)
    n_tr_pat = int(tr.max()) + 1
    return np.r_[tr, ho + n_tr_pat], n_tr_pat, n_tr_pat + int(ho.max()) + 1


def _masked_min(dist: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Row-wise minimum of ``dist`` [N, P] over the columns selected by ``cols`` [B, P] -> [B, N]."""
    return np.where(cols[:, None, :], dist[None, :, :], np.inf).min(-1)


def _row_percentile(x: np.ndarray, n_valid: np.ndarray, q: float) -> np.ndarray:
    """Per row, ``np.percentile`` (linear) of its ``n_valid`` finite entries; the rest must be +inf."""
    xs = np.sort(x, axis=1)
    pos = (n_valid - 1) * (q / 100.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_valid - 1)
    rows = np.arange(len(x))
    a, b = xs[rows, lo], xs[rows, hi]
    return a + (b - a) * (pos - lo)


def _split_statistics(S: np.ndarray, R: np.ndarray, rec_pat: np.ndarray, rec_cell: np.ndarray,
                      syn_cell: np.ndarray, train_pat: np.ndarray, *, percentile: float, n_cells: int,
                      min_cell: int, with_ct: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fraction closer to train, near-duplicate count, C_T) for each train-patient mask [B, P].

    The same function grades the real split and every permuted one, so observed and null
    statistics are computed identically. C_T is NaN where no cell qualifies (or ``with_ct`` is off).
    """
    B = len(train_pat)
    syn_tr = _masked_min(S, train_pat)  # [B, n_syn]
    syn_ho = _masked_min(S, ~train_pat)
    closer = (syn_tr < syn_ho).mean(1)
    hold_rec = ~train_pat[:, rec_pat]  # [B, n_rec]
    rec_tr = np.where(hold_rec, _masked_min(R, train_pat), np.inf)  # held-out records only
    thr = _row_percentile(rec_tr, hold_rec.sum(1), percentile)
    dup = (syn_tr < thr[:, None]).sum(1)
    ct = np.full(B, np.nan)
    for b in range(B if with_ct else 0):
        hold = hold_rec[b]
        c = data_copying_ct(rec_tr[b][hold], syn_tr[b], rec_cell[hold], syn_cell, n_cells, min_cell=min_cell)["c_t"]
        ct[b] = np.nan if c is None else c
    return closer, dup, ct


def _perm_p(null: np.ndarray, observed: float, *, larger: bool) -> float:
    """(1 + #{null at least as extreme}) / (1 + n); NaN null values count as extreme (conservative)."""
    extreme = np.isnan(null) | ((null >= observed) if larger else (null <= observed))
    return float((1 + int(extreme.sum())) / (1 + len(null)))


def memorisation_tests(
    f_train: np.ndarray,
    f_hold: np.ndarray,
    f_synth: np.ndarray,
    *,
    rng: np.random.Generator,
    config: MemorisationConfig = MemorisationConfig(),
    device: str = "cpu",
    train_groups: np.ndarray | None = None,
    hold_groups: np.ndarray | None = None,
    perm_rng: np.random.Generator | None = None,
) -> dict:
    """All memorisation statistics in one feature space (features are [N, D] arrays).

    ``train_groups`` / ``hold_groups`` give each record's patient (None: every record its own
    patient). ``rng`` seeds k-means, ``perm_rng`` (default: ``rng``) the patient permutations.
    """
    if len(f_train) < 2:
        raise DataError(f"memorisation: need at least 2 train records, got {len(f_train)}")
    if len(f_hold) < 1 or len(f_synth) < 1:
        raise DataError("memorisation: holdout and synthetic sets must be non-empty")
    perm_rng = rng if perm_rng is None else perm_rng
    kw = {"device": device}
    ds_tr, is_tr = nearest(f_synth, f_train, k=2, **kw)
    ds_ho, _ = nearest(f_synth, f_hold, k=1, **kw)
    dh_tr, ih_tr = nearest(f_hold, f_train, k=2, **kw)
    n_tr, n_ho, n_syn = len(f_train), len(f_hold), len(f_synth)

    # Patient-level distance matrices: sample -> each patient's nearest slice, record -> patient.
    rec_pat, n_tr_pat, n_pat = patient_labels(train_groups, n_tr, hold_groups, n_ho)
    f_all = np.concatenate([np.asarray(f_train, dtype=np.float32), np.asarray(f_hold, dtype=np.float32)])
    S = nearest_per_group(f_synth, f_all, rec_pat, **kw)
    R = nearest_per_group(f_all, f_all, rec_pat, **kw)

    # C_T cells: k-means on train (as Meehan et al.); every real record gets a cell, since a
    # permutation may send any patient to the held-out side.
    # Enough held-out samples per cell (about 4 x min_cell) for the per-cell test to have power.
    k = max(1, min(config.cells, n_ho // (4 * config.min_cell), n_tr))
    centres = kmeans(f_train, k, rng=rng, iters=config.kmeans_iters)
    rec_cell = nearest(f_all, centres, **kw)[1][:, 0]
    cell_ho = rec_cell[n_tr:]
    cell_syn = nearest(f_synth, centres, **kw)[1][:, 0]

    split_kw = {"percentile": config.near_dup_percentile, "n_cells": len(centres), "min_cell": config.min_cell}
    real = np.arange(n_pat) < n_tr_pat
    obs_closer, obs_dup, _ = _split_statistics(S, R, rec_pat, rec_cell, cell_syn, real[None], with_ct=False, **split_kw)
    obs_closer, obs_dup = float(obs_closer[0]), int(obs_dup[0])
    ct = data_copying_ct(dh_tr[:, 0], ds_tr[:, 0], cell_ho, cell_syn, len(centres), min_cell=config.min_cell)

    # Null distributions: whole patients re-assigned to train / held-out sets of the original sizes.
    n_perm = int(config.permutations)
    masks = np.zeros((n_perm, n_pat), dtype=bool)
    for b in range(n_perm):
        masks[b, perm_rng.permutation(n_pat)[:n_tr_pat]] = True
    step = max(1, 4_000_000 // max(1, (n_syn + len(f_all)) * n_pat))  # bounded temporaries
    parts = [_split_statistics(S, R, rec_pat, rec_cell, cell_syn, masks[b0 : b0 + step],
                               with_ct=ct["c_t"] is not None, **split_kw)
             for b0 in range(0, n_perm, step)]
    null_closer, null_dup, null_ct = (np.concatenate(x) for x in zip(*parts))

    # Which patients the samples sit next to (the patient is the unit of privacy).
    nn_pat = S.argmin(1)
    nn_train_pat = S[:, :n_tr_pat].argmin(1)
    syn_tr_pat = S[:, :n_tr_pat].min(1)
    closer_mask = syn_tr_pat < S[:, n_tr_pat:].min(1)
    permutation = {"permutations": n_perm, "unit": "patient", "train_patients": n_tr_pat,
                   "holdout_patients": n_pat - n_tr_pat}

    # DCR.
    expected_slices = n_tr / (n_tr + n_ho)
    null_mean = float(null_closer.mean())
    dcr = {
        "synthetic_to_train_median": float(np.median(ds_tr[:, 0])),
        "synthetic_to_holdout_median": float(np.median(ds_ho[:, 0])),
        "holdout_to_train_median": float(np.median(dh_tr[:, 0])),
        "closer_to_train": int(closer_mask.sum()),
        "n_synthetic": n_syn,
        "fraction_closer_to_train": obs_closer,
        "expected_fraction": null_mean,  # mean of the permutation null (patient-level)
        "null_sd": float(null_closer.std()),
        "excess": obs_closer - null_mean,
        "p_value": _perm_p(null_closer, obs_closer, larger=True),
        "test": "patient permutation",
        "distinct_nearest_patients": int(len(np.unique(nn_pat))),
        "distinct_patients_closer_to_train": int(len(np.unique(nn_pat[closer_mask]))),
        # the independent-samples binomial figure, kept for comparison only (not graded)
        "slice_expected_fraction": expected_slices,
        "slice_binomial_p": stats.binomial_greater(int(closer_mask.sum()), n_syn, expected_slices),
        **permutation,
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

    # C_T (cells fixed from the real training fit in the permutations).
    if ct["c_t"] is not None:
        used = np.isin(cell_syn, [c["cell"] for c in ct["cells"]])
        ct.update(
            p_value=_perm_p(null_ct, ct["c_t"], larger=False),
            null_mean=float(np.nanmean(null_ct)) if np.isfinite(null_ct).any() else None,
            distinct_nearest_train_patients=int(len(np.unique(nn_train_pat[used]))),
            test="patient permutation (cells fixed)",
            **permutation,
        )

    # Near-duplicates.
    thr = float(np.percentile(dh_tr[:, 0], config.near_dup_percentile))
    base = config.near_dup_percentile / 100.0
    dup_mask = syn_tr_pat < float(np.percentile(R[n_tr:, :n_tr_pat].min(1), config.near_dup_percentile))
    dup = {
        "threshold": thr,
        "percentile": config.near_dup_percentile,
        "count": obs_dup,
        "fraction": obs_dup / n_syn,
        "expected_fraction": float(null_dup.mean()) / n_syn,  # permutation null mean
        "p_value": _perm_p(null_dup.astype(np.float64), obs_dup, larger=True),
        "test": "patient permutation",
        "distinct_patients": int(len(np.unique(nn_train_pat[dup_mask]))),
        "slice_expected_fraction": base,
        "slice_binomial_p": stats.binomial_greater(obs_dup, n_syn, base),
        "exact_copies": int((ds_tr[:, 0] <= 1e-6 * max(float(np.median(dh_tr[:, 0])), 1e-12)).sum()),
        **permutation,
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

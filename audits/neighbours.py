"""Exact nearest-neighbour search in blocks of matrix multiplies.

Squared distances come from ||a||^2 + ||b||^2 - 2 a.b, computed block by block so memory stays
bounded (chunk x chunk) and the work runs at matrix-multiply speed. Both sides are centred on the
reference mean first: it leaves distances unchanged and shrinks the norms, which keeps float32
cancellation small for near-duplicates.
"""

from __future__ import annotations

import numpy as np
import torch

from secgan.core.errors import DataError


def flatten(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[N, ...] -> contiguous float tensor [N, D]."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim < 1 or t.shape[0] == 0:
        raise DataError(f"nearest-neighbour search needs a non-empty [N, ...] array, got shape {tuple(t.shape)}")
    return t.reshape(t.shape[0], -1)


def nearest(
    queries: np.ndarray | torch.Tensor,
    refs: np.ndarray | torch.Tensor,
    *,
    k: int = 1,
    chunk: int = 2048,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    ref_groups: np.ndarray | None = None,
    exclude_group: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest references of every query: (distances [Nq, k] float64, indices [Nq, k] int64).

    With ``ref_groups`` [Nr] and ``exclude_group`` [Nq], references whose group equals the query's
    excluded group are ignored (leave-one-patient-out). Distances are Euclidean, sorted ascending.
    """
    q = flatten(queries)
    r = flatten(refs)
    if q.shape[1] != r.shape[1]:
        raise DataError(f"queries have {q.shape[1]} features but references have {r.shape[1]}")
    if not 1 <= k <= r.shape[0]:
        raise DataError(f"k={k} nearest neighbours asked for but only {r.shape[0]} references")
    if (ref_groups is None) != (exclude_group is None):
        raise DataError("ref_groups and exclude_group go together")
    dev = torch.device(device)
    q = q.to(dev, dtype)
    r = r.to(dev, dtype)
    mean = r.mean(0, dtype=torch.float64).to(dtype)
    q = q - mean  # new tensors: never modify the caller's arrays in place
    r = r - mean
    qn = torch.linalg.vector_norm(q, dim=1).square()
    rn = torch.linalg.vector_norm(r, dim=1).square()
    if ref_groups is not None:
        rg = torch.as_tensor(np.asarray(ref_groups, dtype=np.int64), device=dev)
        eg = torch.as_tensor(np.asarray(exclude_group, dtype=np.int64), device=dev)
        if rg.shape != (r.shape[0],) or eg.shape != (q.shape[0],):
            raise DataError("ref_groups must be [Nr] and exclude_group [Nq]")
    nq, nr = q.shape[0], r.shape[0]
    out_d = torch.empty((nq, k), dtype=torch.float64)
    out_i = torch.empty((nq, k), dtype=torch.int64)
    for i0 in range(0, nq, chunk):
        qi = q[i0 : i0 + chunk]
        best_d = torch.full((qi.shape[0], k), float("inf"), device=dev, dtype=dtype)
        best_i = torch.full((qi.shape[0], k), -1, device=dev, dtype=torch.int64)
        for j0 in range(0, nr, chunk):
            rj = r[j0 : j0 + chunk]
            d2 = qn[i0 : i0 + chunk, None] + rn[None, j0 : j0 + chunk] - 2.0 * (qi @ rj.T)
            d2.clamp_(min=0.0)
            if ref_groups is not None:
                mask = eg[i0 : i0 + chunk, None] == rg[None, j0 : j0 + chunk]
                d2.masked_fill_(mask, float("inf"))
            kk = min(k, d2.shape[1])
            vals, idx = torch.topk(d2, kk, dim=1, largest=False)
            cat_d = torch.cat([best_d, vals], 1)
            cat_i = torch.cat([best_i, idx + j0], 1)
            best_d, pos = torch.topk(cat_d, k, dim=1, largest=False)
            best_i = torch.gather(cat_i, 1, pos)
        if not torch.isfinite(best_d).all():
            raise DataError("not enough references left after excluding the query's own group")
        # Direct distances for the k winners: the expansion above loses digits to cancellation
        # (an exact copy would come out as a small positive number), a difference does not.
        step = max(1, (1 << 25) // max(1, k * q.shape[1]))  # bounded temporary
        for s0 in range(0, best_i.shape[0], step):
            ix = best_i[s0 : s0 + step]
            qx = q[i0 + s0 : i0 + s0 + len(ix)]
            exact = torch.linalg.vector_norm(qx[:, None, :] - r[ix], dim=-1)
            exact, order = torch.sort(exact, dim=1, stable=True)
            out_d[i0 + s0 : i0 + s0 + len(ix)] = exact.to("cpu", torch.float64)
            out_i[i0 + s0 : i0 + s0 + len(ix)] = torch.gather(ix, 1, order).cpu()
    return out_d.numpy(), out_i.numpy()


def brute_force_nearest(queries: np.ndarray, refs: np.ndarray, *, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Reference implementation in float64 numpy (tests and small inputs only)."""
    q = np.asarray(queries, dtype=np.float64).reshape(len(queries), -1)
    r = np.asarray(refs, dtype=np.float64).reshape(len(refs), -1)
    d = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


def pairwise_sq_dists_blocks(
    queries: torch.Tensor, refs: torch.Tensor, *, chunk: int = 2048
):
    """Yield (row_start, block [rows, Nr] of squared distances) in float64 (small inputs, e.g. KDE)."""
    q = queries.to(torch.float64)
    r = refs.to(torch.float64)
    rn = (r * r).sum(1)
    for i0 in range(0, q.shape[0], chunk):
        qi = q[i0 : i0 + chunk]
        d2 = (qi * qi).sum(1)[:, None] + rn[None, :] - 2.0 * (qi @ r.T)
        yield i0, d2.clamp_(min=0.0)


def nearest_per_group(
    queries: np.ndarray | torch.Tensor,
    refs: np.ndarray | torch.Tensor,
    ref_groups: np.ndarray,
    *,
    chunk: int = 2048,
    device: str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Distance from every query to the nearest reference of every group: [Nq, n_groups] float64.

    Groups must be labelled 0..n_groups-1 (a patient index). Permutation tests reassign whole
    groups, so they need this matrix once and then only take minima over columns.
    """
    q = flatten(queries)
    r = flatten(refs)
    if q.shape[1] != r.shape[1]:
        raise DataError(f"queries have {q.shape[1]} features but references have {r.shape[1]}")
    g = np.asarray(ref_groups, dtype=np.int64)
    if g.shape != (r.shape[0],) or g.min() < 0:
        raise DataError("ref_groups must be [Nr] non-negative group indices")
    n_groups = int(g.max()) + 1
    dev = torch.device(device)
    q = q.to(dev, dtype)
    r = r.to(dev, dtype)
    mean = r.mean(0)
    q, r = q - mean, r - mean  # centred: smaller norms, less cancellation
    qn = (q * q).sum(1)
    rn = (r * r).sum(1)
    gt = torch.as_tensor(g, device=dev)
    out = torch.empty((q.shape[0], n_groups), dtype=torch.float64)
    for i0 in range(0, q.shape[0], chunk):
        qi = q[i0 : i0 + chunk]
        best = torch.full((qi.shape[0], n_groups), float("inf"), device=dev, dtype=dtype)
        for j0 in range(0, r.shape[0], chunk):
            d2 = (qn[i0 : i0 + chunk, None] + rn[None, j0 : j0 + chunk] - 2.0 * (qi @ r[j0 : j0 + chunk].T)).clamp_(min=0.0)
            idx = gt[None, j0 : j0 + chunk].expand_as(d2)
            best.scatter_reduce_(1, idx, d2, reduce="amin", include_self=True)
        out[i0 : i0 + chunk] = best.sqrt().to("cpu", torch.float64)
    return out.numpy()

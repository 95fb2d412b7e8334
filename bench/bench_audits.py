"""Nearest-neighbour search speed of the audits against the machine's own matrix-multiply speed.

The audit's distance search is ||a||^2 + ||b||^2 - 2 a.b in blocks, so its ceiling is the matmul
throughput measured here in the same run, on the same device and dtype. Prints pairs per second
and the ratio (achieved FLOP/s of the search over plain matmul FLOP/s).

    python bench/bench_audits.py [--n 10000] [--device cpu|cuda] [--chunk 2048]
    python bench/bench_audits.py --audit [--synthetic 256] [--size 32]

``--audit`` times a whole audit (``audit_arrays``: copy search, embedding, every attack, the
permutation tests) of phantom patients (40 training, 20 held-out) and prints its wall time as a
ratio against the nearest-neighbour search alone (synthetic to every real slice, pixels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from audits.neighbours import nearest


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_flops(dim: int, chunk: int, device: str, *, repeats: int = 5) -> float:
    """FLOP/s of [chunk, dim] @ [dim, chunk] in float32 (best of ``repeats``)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn((chunk, dim), generator=g, device=device)
    b = torch.randn((dim, chunk), generator=g, device=device)
    (a @ b).sum().item()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        c = a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    del c
    return 2.0 * chunk * chunk * dim / best


def blocked_matmul_seconds(a: torch.Tensor, b: torch.Tensor, chunk: int, device: str) -> float:
    """Time of the bare a_i @ b_j^T products over every block pair: the search's matmul work alone."""
    _sync(device)
    t = time.perf_counter()
    for i in range(0, a.shape[0], chunk):
        ai = a[i : i + chunk]
        for j in range(0, b.shape[0], chunk):
            c = ai @ b[j : j + chunk].T
    _sync(device)
    del c
    return time.perf_counter() - t


def audit_ratio(n_synthetic: int, size: int, device: str) -> list[dict]:
    """Wall time of a whole audit over the wall time of its pixel NN search alone."""
    from audits.cohort import make_cohort
    from audits.core import AuditConfig, audit_arrays
    from secgan.data.phantom import phantom_slices

    def patients(ids, site):
        return phantom_slices(ids, seed=7, site=site, size=size, slices=16, min_tumour_pixels=10)

    im, co, gr = patients(range(1, 61), 1)
    members = make_cohort("members", im[gr < 40], co[gr < 40], gr[gr < 40])
    nonmembers = make_cohort("non-members", im[gr >= 40], co[gr >= 40], gr[gr >= 40])
    oim, oco, _ = patients(range(1, 61), 2)
    pick = np.random.default_rng(0).choice(len(oim), n_synthetic, replace=len(oim) < n_synthetic)
    synthetic = make_cohort("synthetic", oim[pick], oco[pick])
    real = np.concatenate([members.images, nonmembers.images])
    t = time.perf_counter()
    nearest(synthetic.images, real, device=device)
    nn = time.perf_counter() - t
    t = time.perf_counter()
    audit_arrays(members, nonmembers, synthetic, config=AuditConfig(device=device))
    wall = time.perf_counter() - t
    print(f"audit of {n_synthetic} synthetic images at {size} px against {len(real)} real slices: {wall:.1f} s; "
          f"NN search alone {nn:.3f} s; ratio {wall / nn:.0f}")
    return [{"metric": f"audit wall time / NN search alone ({device}, {n_synthetic} images, {size} px)",
             "ratio": wall / nn, "note": f"audit {wall:.1f} s"}]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="bench_audits", description=__doc__)
    p.add_argument("--n", type=int, default=10_000, help="images per side (default 10000)")
    p.add_argument("--size", type=int, default=64, help="image side (4 x size x size features)")
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="n = 2000")
    p.add_argument("--audit", action="store_true", help="time a whole audit against its NN search alone")
    p.add_argument("--synthetic", type=int, default=256, help="synthetic images for --audit (default 256)")
    args = p.parse_args(argv)
    if args.audit:
        return audit_ratio(args.synthetic, args.size if args.size != 64 else 32, args.device)
    n = 2000 if args.quick else args.n
    dim = 4 * args.size * args.size
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, size=(n, 4, args.size, args.size)).astype(np.float32)
    b = rng.uniform(-1, 1, size=(n, 4, args.size, args.size)).astype(np.float32)
    chunk = min(args.chunk, n)
    flops = 2.0 * n * n * dim
    peak = matmul_flops(dim, chunk, args.device)
    nearest(a[:chunk], b[:chunk], device=args.device, chunk=chunk)  # warm-up
    ta = torch.as_tensor(a.reshape(n, -1)).to(args.device)
    tb = torch.as_tensor(b.reshape(n, -1)).to(args.device)
    # Baseline, search, baseline: the two baselines bracket the search so load changes show up.
    base1 = blocked_matmul_seconds(ta, tb, chunk, args.device)
    _sync(args.device)
    t = time.perf_counter()
    nearest(a, b, device=args.device, chunk=chunk)
    _sync(args.device)
    dt = time.perf_counter() - t
    base2 = blocked_matmul_seconds(ta, tb, chunk, args.device)
    base = (base1 + base2) / 2.0
    pairs = n * n / dt
    print(f"device {args.device}, n = {n} x {n}, features {dim} (4x{args.size}x{args.size}), chunk {chunk}")
    print(f"matmul float32, one block (best of 5): {peak / 1e9:8.1f} GFLOP/s")
    print(f"bare blocked matmul over all pairs:    {flops / base / 1e9:8.1f} GFLOP/s ({base1:.2f} s, {base2:.2f} s)")
    print(f"nearest-neighbour search:              {flops / dt / 1e9:8.1f} GFLOP/s equivalent, {pairs / 1e6:.2f} M pairs/s, {dt:.2f} s")
    print(f"ratio search / one-block matmul peak:  {flops / dt / peak:8.3f}")
    print(f"ratio search / bare blocked matmul:    {base / dt:8.3f}")
    return [
        {"metric": f"NN search / matmul peak FLOP/s ({args.device}, n={n}, d={dim})", "ratio": flops / dt / peak,
         "note": f"{pairs / 1e6:.2f} M pairs/s"},
        {"metric": f"NN search / bare blocked matmul ({args.device}, n={n})", "ratio": base / dt,
         "note": "overhead of norms, top-k and exact refinement"},
    ]


if __name__ == "__main__":
    main()

"""Secure-sum cost against routed aggregation, measured side by side in one run.

Light stand-in sites run in-process (no network, no discriminator): each has a float32 gradient of
the fake batch's shape. One round is
- routed: every site serialises its float32 gradient, the coordinator decodes and sums them;
- secure-sum: the coordinator announces, every site clips, encodes, masks (n - 1 ChaCha20 streams)
  and serialises its int64 vector, the coordinator checks, sums mod 2^k and decodes.
Key agreement (X25519) is paid once per pair and run, so clients are warmed by one round first.
Bytes are the per-round payload up-link plus (secure-sum) the announcements; the fake batch sent
down is the same size per site in both modes and is left out of both.

Sweeps: number of sites 2..32 at a 8x4x64x64 batch, then the gradient size at 4 sites, then the
cost of a round retried after one dropout. ``python bench/bench_secagg.py [--quick]`` or
``bench.bench_secagg.main(argv)`` (rows for ``python -m bench``).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROUTED_HEADER_BYTES = 160  # a GradientReply header, roughly; same order as the secure-sum one


def _federation(n: int):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from secgan.keys.agreement import public_hex
    from secgan.secagg import SecureSumAggregator, SecureSumClient

    keys = {f"s{i:02d}": X25519PrivateKey.from_private_bytes(hashlib.sha256(b"bench%d" % i).digest())
            for i in range(n)}
    roster = {k: public_hex(v) for k, v in keys.items()}
    clients = {k: SecureSumClient(site_id=k, agreement_key=v, roster=roster, run_id="bench", policy_threshold=2,
                                  max_attempts=1 << 30) for k, v in keys.items()}
    agg = SecureSumAggregator(run_id="bench", roster=roster, threshold=2, max_attempts=1 << 30)
    return clients, agg


def _grads(n: int, shape, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * 1e-3 for _ in range(n)]


def _routed_round(grads) -> tuple[float, int]:
    import numpy as np

    t = time.perf_counter()
    total = None
    nbytes = 0
    for g in grads:
        buf = g.numpy().astype("<f4").tobytes()  # site: serialise
        nbytes += len(buf) + ROUTED_HEADER_BYTES
        v = np.frombuffer(buf, dtype="<f4")  # coordinator: decode, accumulate
        total = v.astype(np.float64) if total is None else total + v
    return time.perf_counter() - t, nbytes


def _secure_round(clients, agg, grads, round_: int, *, drop: int = 0) -> tuple[float, int]:
    import numpy as np
    import torch

    from secgan.net.schema import SecAggMasked

    ids = list(clients)
    t = time.perf_counter()
    ann = agg.begin(round=round_, step=0, participants=ids, shape=tuple(grads[0].shape))
    delivered = ids[drop:]
    for i, g in zip(ids, grads):
        if i in delivered:
            m = clients[i].contribute(ann, g)
            buf = m.masked.numpy().astype("<i8").tobytes()
            agg.accept(i, SecAggMasked(run_id=m.run_id, round=m.round, step=m.step, attempt=m.attempt,
                                       set_digest=m.set_digest,
                                       masked=torch.from_numpy(np.frombuffer(buf, dtype="<i8").copy())
                                       .reshape(m.masked.shape)))
    if drop:
        ann = agg.retry()
        for i in delivered:
            m = clients[i].contribute(ann)
            agg.accept(i, m)
    agg.result()
    dt = time.perf_counter() - t
    return dt, agg.stats.bytes_up + agg.stats.bytes_down


def _compare(n: int, shape, repeat: int, round_base: int) -> dict:
    clients, agg = _federation(n)
    grads = _grads(n, shape)
    _secure_round(clients, agg, grads, round_base)  # warm: X25519 per pair, imports
    sec = min(_secure_round(clients, agg, grads, round_base + 1 + r) for r in range(repeat))
    rout = min(_routed_round(grads) for _ in range(repeat))
    from secgan.secagg.packing import packed_shape

    k = agg.stats.modulus_bits
    return {"secure_s": sec[0], "secure_bytes": sec[1], "routed_s": rout[0], "routed_bytes": rout[1], "k": k,
            "tensor_bytes": 8 * n * math.prod(shape), "packed_bytes": n * math.prod(packed_shape(tuple(shape), k))}


def main(argv: list[str] | None = None) -> list[dict]:
    import math

    parser = argparse.ArgumentParser(prog="bench_secagg")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv or [])
    sites = [2, 4, 8] if args.quick else [2, 4, 8, 16, 32]
    sizes = [16, 32] if args.quick else [16, 32, 64, 128]
    repeat = 1 if args.quick else 3
    batch = 8
    rows = []

    print("   sites  coords   secure ms  routed ms  time x   secure KiB  routed KiB  bytes x", flush=True)

    def record(label: str, n: int, shape) -> None:
        r = _compare(n, shape, repeat, round_base=10 * len(rows))
        tx, bx = r["secure_s"] / r["routed_s"], r["secure_bytes"] / r["routed_bytes"]
        print(f"   {n:5d} {math.prod(shape):7d} {r['secure_s'] * 1e3:11.1f} {r['routed_s'] * 1e3:10.2f} {tx:7.0f}"
              f" {r['secure_bytes'] / 1024:12.0f} {r['routed_bytes'] / 1024:11.0f} {bx:8.3f}", flush=True)
        rows.append({"metric": f"secure-sum/routed time, {label}", "ratio": tx,
                     "note": f"{r['secure_s'] * 1e3:.1f} ms vs {r['routed_s'] * 1e3:.2f} ms per round"})
        rows.append({"metric": f"secure-sum/routed bytes, {label}", "ratio": bx,
                     "note": f"{r['secure_bytes']} vs {r['routed_bytes']} B per round"})
        packed = r["secure_bytes"] - r["tensor_bytes"] + r["packed_bytes"]
        rows.append({"metric": f"secure-sum/routed bytes packed to k bits, {label}",
                     "ratio": packed / r["routed_bytes"],
                     "note": f"k = {r['k']}: {packed} vs {r['routed_bytes']} B per round (secgan.secagg.packing)"})

    shape = (batch, 4, 32 if args.quick else 64, 32 if args.quick else 64)
    for n in sites:
        record(f"{n} sites, {'x'.join(map(str, shape))}", n, shape)
    for s in sizes:
        record(f"4 sites, {batch}x4x{s}x{s}", 4, (batch, 4, s, s))

    n = sites[-1] if args.quick else 8
    clients, agg = _federation(n)
    grads = _grads(n, shape)
    _secure_round(clients, agg, grads, 0)
    full = min(_secure_round(clients, agg, grads, 1 + r)[0] for r in range(repeat))
    retried = min(_secure_round(clients, agg, grads, 100 + r, drop=1)[0] for r in range(repeat))
    rows.append({"metric": f"secure-sum round with one dropout retry / without, {n} sites",
                 "ratio": retried / full, "note": f"{retried * 1e3:.1f} ms vs {full * 1e3:.1f} ms (no deadline wait)"})
    print(f"   {rows[-1]['metric']}: {rows[-1]['ratio']:.3g} ({rows[-1]['note']})", flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

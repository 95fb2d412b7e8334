"""Secure-sum cost against routed aggregation, measured side by side in one run.

Light stand-in sites run in-process (no network, no discriminator): each has a float32 gradient of
the fake batch's shape. One round is
- routed: every site serialises its float32 gradient, the coordinator decodes and sums them;
- secure-sum: the coordinator announces, every site clips, encodes, masks (n - 1 ChaCha20 streams),
  packs its words to the ring's k bits and serialises them (protocol 3), the coordinator unpacks
  (checking length and unused bits), sums mod 2^k and decodes;
- before (the same round as it was up to protocol 2, kept here to measure against): one
  materialised, masked stream a pair, int64 words on the wire, checked against the ring at the
  coordinator.
Key agreement (X25519) is paid once per pair and run, so clients are warmed by one round first.
Bytes are the per-round payload up-link plus (secure-sum) the announcements; the fake batch sent
down is the same size per site in both modes and is left out of both.

Times: "time" is every site and the coordinator one after another in one process (what the CPU
pays for a round); "critical path" is the coordinator plus the slowest site (each site on its own
machine, as deployed). Sweeps: sites 2..32 at an 8x4x64x64 batch (8x4x32x32 with --quick), the
gradient size at 4 sites, per-site cost at 2, 8, 32 and 71 sites with a tiny 2x4x8x8 batch, and a
round retried after one dropout. ``python bench/bench_secagg.py [--quick]`` or
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
    _SECRETS.clear()  # for the "before" round: the secrets its sites would have cached
    _SECRETS.update({(a, b): ka.exchange(kb.public_key()) for a, ka in keys.items() for b, kb in keys.items() if a != b})
    return clients, agg


_SECRETS: dict[tuple[str, str], bytes] = {}  # (site, peer) -> X25519 secret, of the last federation built


def _grads(n: int, shape, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * 1e-3 for _ in range(n)]


def _routed_round(grads) -> tuple[float, float, int]:
    """(all in one process, coordinator + slowest site, bytes) of one routed round."""
    import numpy as np

    total, nbytes, slowest, coord = None, 0, 0.0, 0.0
    start = time.perf_counter()
    for g in grads:
        t = time.perf_counter()
        buf = g.numpy().astype("<f4").tobytes()  # site: serialise
        t1 = time.perf_counter()
        nbytes += len(buf) + ROUTED_HEADER_BYTES
        v = np.frombuffer(buf, dtype="<f4")  # coordinator: decode, accumulate
        total = v.astype(np.float64) if total is None else total + v
        slowest, coord = max(slowest, t1 - t), coord + time.perf_counter() - t1
    return time.perf_counter() - start, coord + slowest, nbytes


def _secure_round(clients, agg, grads, round_: int, *, drop: int = 0) -> tuple[float, float, int]:
    """(all in one process, coordinator + slowest site, bytes) of one secure-sum round (protocol 3)."""
    import torch

    from secgan.net.schema import SecAggMasked

    ids = list(clients)
    delivered = ids[drop:]
    coord, slowest = 0.0, 0.0

    def attempt(ann, values) -> None:
        nonlocal coord, slowest
        for i, g in values:
            t = time.perf_counter()
            m = clients[i].contribute(ann, g)
            buf = m.masked.numpy().tobytes()  # site: serialise the packed words
            t1 = time.perf_counter()
            back = torch.frombuffer(bytearray(buf), dtype=torch.uint8).reshape(m.masked.shape)
            agg.accept(i, SecAggMasked(run_id=m.run_id, round=m.round, step=m.step, attempt=m.attempt,
                                       set_digest=m.set_digest, masked=back))
            slowest, coord = max(slowest, t1 - t), coord + time.perf_counter() - t1

    start = t = time.perf_counter()
    ann = agg.begin(round=round_, step=0, participants=ids, shape=tuple(grads[0].shape))
    coord += time.perf_counter() - t
    attempt(ann, [(i, g) for i, g in zip(ids, grads) if i in delivered])
    if drop:
        t = time.perf_counter()
        ann = agg.retry()
        coord += time.perf_counter() - t
        attempt(ann, [(i, None) for i in delivered])
    t = time.perf_counter()
    agg.result()
    coord += time.perf_counter() - t
    return time.perf_counter() - start, coord + slowest, agg.stats.bytes_up + agg.stats.bytes_down


def _before_round(clients, agg, grads, round_: int) -> tuple[float, int]:
    """The round as it was up to protocol 2: a materialised, masked stream a pair and int64 words
    on the wire, checked against the ring at the coordinator (same keys, same answer)."""
    import numpy as np
    import torch

    from secgan.secagg.kdf import pair_key
    from secgan.secagg.prg import keystream

    ids = list(clients)
    t = time.perf_counter()
    ann = agg.begin(round=round_, step=0, participants=ids, shape=tuple(grads[0].shape))
    ctx = clients[ids[0]].check(ann)
    codec, n_words, digest = ctx.codec, ctx.length, ctx.digest()
    total, nbytes = np.zeros(n_words, dtype=np.uint64), 0
    for i, g in zip(ids, grads):
        c = clients[i]
        c.check(ann)
        value, _ = codec.clip_values(g.detach().to(dtype=torch.float64).numpy().reshape(-1))
        encoded = codec.encode(value)
        mask = np.zeros(n_words, dtype=np.uint64)
        for peer in sorted(ids):
            if peer == i:
                continue
            key = pair_key(_SECRETS[i, peer], id_a=i, id_b=peer, context_digest=digest)
            stream = np.frombuffer(keystream(key, 8 * n_words), dtype="<u8").astype(np.uint64, copy=True)
            stream &= codec.mask
            mask = mask + stream if peer > i else mask - stream
        masked = codec.add(encoded, mask & codec.mask)
        buf = masked.view(np.int64).astype("<i8").tobytes()  # int64 words on the wire
        nbytes += len(buf) + ROUTED_HEADER_BYTES
        vec = np.frombuffer(buf, dtype="<i8").copy().view(np.uint64)
        if np.any(vec > codec.mask):
            raise RuntimeError("outside the ring")
        total = codec.add(total, vec.copy())
    codec.decode_sum(total)
    return time.perf_counter() - t, nbytes


def _compare(n: int, shape, repeat: int, round_base: int, *, before: bool = True) -> dict:
    clients, agg = _federation(n)
    grads = _grads(n, shape)
    _secure_round(clients, agg, grads, round_base)  # warm: X25519 per pair, imports
    sec = [_secure_round(clients, agg, grads, round_base + 1 + r) for r in range(repeat)]
    rout = [_routed_round(grads) for _ in range(repeat)]
    out = {"secure_s": min(s[0] for s in sec), "secure_path_s": min(s[1] for s in sec), "secure_bytes": sec[0][2],
           "routed_s": min(r[0] for r in rout), "routed_path_s": min(r[1] for r in rout), "routed_bytes": rout[0][2],
           "k": agg.stats.modulus_bits}
    if before:
        old = [_before_round(clients, agg, grads, round_base + 100 + r) for r in range(repeat)]
        out.update(before_s=min(o[0] for o in old), before_bytes=old[0][1] + agg.stats.bytes_down)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench_secagg")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv or [])
    sites = [2, 4, 8] if args.quick else [2, 4, 8, 16, 32]
    sizes = [16, 32] if args.quick else [16, 32, 64, 128]
    repeat = 3 if args.quick else 5
    batch = 8
    rows = []

    print("   sites  coords  secure ms  before ms  routed ms  time x  before x  path x  secure KiB  before KiB"
          "  routed KiB  bytes x  before x", flush=True)

    def record(label: str, n: int, shape) -> None:
        r = _compare(n, shape, repeat, round_base=1000 * len(rows))
        tx, px = r["secure_s"] / r["routed_s"], r["secure_path_s"] / r["routed_path_s"]
        ox = r["before_s"] / r["routed_s"]
        bx, obx = r["secure_bytes"] / r["routed_bytes"], r["before_bytes"] / r["routed_bytes"]
        print(f"   {n:5d} {math.prod(shape):7d} {r['secure_s'] * 1e3:10.2f} {r['before_s'] * 1e3:10.2f}"
              f" {r['routed_s'] * 1e3:10.3f} {tx:7.1f} {ox:9.1f} {px:7.1f} {r['secure_bytes'] / 1024:11.0f}"
              f" {r['before_bytes'] / 1024:11.0f} {r['routed_bytes'] / 1024:11.0f} {bx:8.3f} {obx:9.3f}", flush=True)
        rows.append({"metric": f"secure-sum/routed time, {label}", "ratio": tx,
                     "note": f"{r['secure_s'] * 1e3:.2f} ms vs {r['routed_s'] * 1e3:.3f} ms per round, all in one "
                             f"process; before (int64 words): {ox:.1f}x"})
        rows.append({"metric": f"secure-sum/routed time, critical path, {label}", "ratio": px,
                     "note": f"coordinator + slowest site: {r['secure_path_s'] * 1e3:.2f} ms vs "
                             f"{r['routed_path_s'] * 1e3:.3f} ms"})
        rows.append({"metric": f"secure-sum/routed bytes, {label}", "ratio": bx,
                     "note": f"k = {r['k']} bits a word: {r['secure_bytes']} vs {r['routed_bytes']} B per round; "
                             f"before (int64 words): {obx:.3f}x"})

    shape = (batch, 4, 32 if args.quick else 64, 32 if args.quick else 64)
    for n in sites:
        record(f"{n} sites, {'x'.join(map(str, shape))}", n, shape)
    for s in sizes:
        record(f"4 sites, {batch}x4x{s}x{s}", 4, (batch, 4, s, s))

    # per-site cost as the federation grows (tiny tensors): all-to-all masks are n - 1 streams a site
    tiny = (2, 4, 8, 8)
    print(f"   per-site cost, {'x'.join(map(str, tiny))} (one round / n, all in one process):", flush=True)
    base = None
    for n in (2, 8, 32, 71):
        r = _compare(n, tiny, repeat, round_base=0, before=False)
        per_site = r["secure_s"] / n
        base = base or per_site
        print(f"   {n:5d} sites: {per_site * 1e3:8.3f} ms a site  x{per_site / base:6.1f} of 2 sites "
              f"(log2 n / log2 2 = {math.log2(n):4.1f}, n - 1 streams = {n - 1})  routed x{r['secure_s'] / r['routed_s']:.0f}",
              flush=True)
        rows.append({"metric": f"secure-sum per-site cost, {n} sites / 2 sites, {'x'.join(map(str, tiny))}",
                     "ratio": per_site / base,
                     "note": f"{per_site * 1e3:.3f} ms a site; log2(n) = {math.log2(n):.1f}; n - 1 = {n - 1} streams"})

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

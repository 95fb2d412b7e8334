"""Wire codec throughput: encode+decode of a FakeBatch (64x64x4, float32) against a plain copy of
the same bytes, measured side by side in one run.

The codec is timed on its real path: ``encode`` (header, checks, frames that are views of the
tensors) and ``decode`` of the frames as a receiver holds them (``zmq.Frame``s from
``recv_multipart(copy=False)``: validated, then viewed). Making those frames (what libzmq does
between the two) is not timed. Baselines, in the same run:
- ``plain copy``: serialise each tensor to bytes and copy it into a buffer the receiver owns (the
  two copies a copying wire makes, with no header, JSON or validation); the issue's figure;
- ``one memcpy``: a single ``numpy`` copy of each tensor, the least any wire that moves the bytes
  into fresh memory pays.
A zero-copy codec's own cost is its header and its validation (two finiteness passes per tensor:
encode refuses what decode would refuse).

``python bench/bench_wire.py [--quick]`` or ``main(argv) -> list[dict]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _best(fn, repeat: int, number: int = 20) -> float:
    """Best-of-``repeat`` mean seconds of ``number`` calls (the minimum is the least noisy estimate)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def main(argv: list[str] | None = None) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch
    import zmq

    from secgan.net import codec, limits as wire_limits
    from secgan.net.schema import FakeBatch

    parser = argparse.ArgumentParser(prog="bench_wire", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv or [])
    repeat = 5 if args.quick else 15
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    limits = wire_limits.WireLimits()
    rows = []
    for batch in (8, 32):
        cond = torch.rand(batch, 4, 64, 64, generator=g)
        fake = torch.rand(batch, 4, 64, 64, generator=g) * 2 - 1
        msg = FakeBatch(run_id="bench", round=1, step=1, cond=cond, fake=fake)
        nbytes = cond.numel() * 4 * 2
        sent = codec.encode(msg, run_id="bench", round=1, step=1, site="site-1", seq=1)
        received = [zmq.Frame(bytes(f)) for f in sent]  # as recv_multipart(copy=False) hands them over

        def encode() -> None:
            codec.encode(msg, run_id="bench", round=1, step=1, site="site-1", seq=1)

        def decode() -> None:
            codec.decode(received, limits=limits)

        arrays = [cond.numpy(), fake.numpy()]

        def plain() -> None:  # serialise + copy into owned memory, without header or checks
            for a in arrays:
                bytearray(a.tobytes())

        def memcpy() -> None:
            for a in arrays:
                a.copy()

        for fn in (encode, decode, plain, memcpy):
            fn()  # warm up
        t_enc, t_dec = _best(encode, repeat), _best(decode, repeat)
        t_plain, t_memcpy = _best(plain, repeat), _best(memcpy, repeat)
        t_codec = t_enc + t_dec
        mb = nbytes / 2**20
        note = (f"encode {t_enc * 1e6:.0f} us + decode {t_dec * 1e6:.0f} us; plain copy {t_plain * 1e6:.0f} us, "
                f"one memcpy {t_memcpy * 1e6:.0f} us; {mb:.1f} MiB a message")
        rows.append({"metric": f"fake_batch B={batch} encode+decode / plain copy", "ratio": t_codec / t_plain,
                     "note": note})
        rows.append({"metric": f"fake_batch B={batch} encode+decode / one memcpy", "ratio": t_codec / t_memcpy,
                     "note": "the stricter baseline"})
    return rows


if __name__ == "__main__":
    for row in main(sys.argv[1:]):
        print(f"{row['metric']}: ratio {row['ratio']:.2f} ({row['note']})")

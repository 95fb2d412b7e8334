"""Wire codec throughput: encode+decode of a FakeBatch (64x64x4, float32) against a plain copy of
the same bytes, measured side by side in one run. The codec copies each tensor once to encode
and once to decode (decoded tensors own their memory); the baseline makes exactly those two copies
with no header, JSON or validation, so ratio - 1 is the codec's own overhead. Above ~1 MiB a tensor
both sides are dominated by page faults of fresh allocations and the ratio tends to 1.

``python bench/bench_wire.py [--quick]`` or ``main(argv) -> list[dict]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _best(fn, repeat: int) -> float:
    """Best-of-``repeat`` seconds for one call (the minimum is the least noisy estimate)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from secgan.net import codec, limits as wire_limits
    from secgan.net.schema import FakeBatch

    parser = argparse.ArgumentParser(prog="bench_wire", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv or [])
    repeat = 5 if args.quick else 30
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    rows = []
    for batch in (8, 32):
        cond = torch.rand(batch, 4, 64, 64, generator=g)
        fake = torch.rand(batch, 4, 64, 64, generator=g) * 2 - 1
        msg = FakeBatch(run_id="bench", round=1, step=1, cond=cond, fake=fake)
        limits = wire_limits.WireLimits()
        nbytes = cond.numel() * 4 * 2

        def codec() -> None:
            frames = codec.encode(msg, run_id="bench", round=1, step=1, site="site-1", seq=1)
            codec.decode(frames, limits=limits)

        arrays = [cond.numpy(), fake.numpy()]

        def plain() -> None:  # the same two copies the codec makes, without header or checks
            for a in arrays:
                bytearray(a.tobytes())

        codec(), plain()  # warm up
        t_codec = _best(codec, repeat)
        t_plain = _best(plain, repeat)
        mb = nbytes / 2**20
        rows.append({
            "metric": f"fake_batch B={batch} encode+decode / plain copy",
            "ratio": t_codec / t_plain,
            "note": f"codec {mb / t_codec:.0f} MiB/s, copy {mb / t_plain:.0f} MiB/s, {mb:.1f} MiB a message",
        })
    return rows


if __name__ == "__main__":
    for row in main(sys.argv[1:]):
        print(f"{row['metric']}: ratio {row['ratio']:.2f} ({row['note']})")

"""Cost of DP-SGD on a site's discriminator: one D step (Opacus, per grad-sample mode) against the
plain step on the same rows, side by side in one run; and the step's peak-memory growth.

Each variant runs in its own subprocess so the process high-water mark (``ru_maxrss``; on CUDA,
``max_memory_allocated``) measures that variant alone: reported memory is the growth of the peak
during two steps over the peak after setup (the plain variant's own run is the memory baseline).
Times are best-of-N with the variant's and a plain step interleaved in the same process. Modes Opacus 1.6 cannot run on this D are reported as
failed with their error, not hidden.

``python bench/bench_dp.py [--quick]`` or ``main(argv) -> list[dict]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "hooks", "functorch", "ew")


def _one(variant: str, *, size: int, batch: int, width: int, steps: int) -> dict:
    import resource
    import time

    import torch

    sys.path.insert(0, str(ROOT))
    from secgan.gan.models import build_discriminator
    from secgan.gan.config import ModelConfig
    from secgan.core.spec import ImageSpec
    from secgan.gan.step import discriminator_step, generator_gradient

    torch.set_num_threads(1)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model, image = ModelConfig(d_width=width, d_layers=3), ImageSpec(size=size)
    D = build_discriminator(model, image, seed=0).to(dev)
    g = torch.Generator().manual_seed(0)
    rows = [torch.rand(batch, 4, size, size, generator=g).to(dev) for _ in range(4)]
    D_plain = build_discriminator(model, image, seed=0).to(dev)
    opt_plain = torch.optim.Adam(D_plain.parameters(), lr=1e-4)

    def plain_step():
        discriminator_step(D_plain, opt_plain, rows[0], rows[1], rows[2], rows[3], loss="bce")
        generator_gradient(D_plain, rows[2], rows[3], loss="bce")

    if variant == "plain":
        step = plain_step
    else:
        from secgan.privacy.dpsgd import DPSGDDiscriminator

        dp = DPSGDDiscriminator(
            D, lr=1e-4, betas=(0.5, 0.999), noise_multiplier=1.0, clip_norm=1.0, expected_batch_size=batch,
            sample_rate=0.1, noise_generator=torch.Generator(device=dev).manual_seed(0), grad_sample_mode=variant,
        )

        def step():
            dp.step(rows[0], rows[1], rows[2], rows[3], loss="bce")
            generator_gradient(dp.for_gradient, rows[2], rows[3], loss="bce")

    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()  # the first step (and the first failure, if the mode cannot run)
    step()
    peak = torch.cuda.max_memory_allocated() if dev == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        if dev == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    # Time ratios side by side in this process: variant and plain steps interleaved, best of each.
    plain_step()
    best, best_plain = float("inf"), float("inf")
    for _ in range(steps):
        best = min(best, timed(step))
        best_plain = min(best_plain, timed(plain_step))
    return {"seconds": best, "plain_seconds": best_plain, "peak_growth_bytes": max(0, peak - base), "peak_bytes": peak, "device": dev}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench_dp", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = dict(size=32, batch=8, width=16, steps=3) if args.quick else dict(size=64, batch=16, width=32, steps=5)
    if args.one:
        print(json.dumps(_one(args.one, **json.loads(args.params))))
        return []
    results: dict[str, dict] = {}
    for v in VARIANTS:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--one", v, "--params", json.dumps(sizes)],
            capture_output=True, text=True, timeout=600, cwd=ROOT,
        )
        if proc.returncode == 0:
            results[v] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            results[v] = {"error": err[:200]}
    rows: list[dict] = []
    plain = results["plain"]
    print(f"D step + G gradient, image {sizes['size']}, {sizes['batch']} real + {sizes['batch']} fake rows, "
          f"d_width {sizes['width']}, device {plain.get('device', '?')}")
    print(f"  plain      {plain['seconds'] * 1e3:8.1f} ms   peak growth {plain['peak_growth_bytes'] / 2**20:7.1f} MiB")
    for v in VARIANTS[1:]:
        r = results[v]
        if "error" in r:
            print(f"  {v:10s} FAILED: {r['error']}")
            rows.append({"metric": f"dp_step_time_{v}_over_plain", "ratio": float("nan"), "note": f"failed: {r['error']}"})
            continue
        t = r["seconds"] / r["plain_seconds"]
        m = (r["peak_growth_bytes"] + 1) / (plain["peak_growth_bytes"] + 1)
        print(f"  {v:10s} {r['seconds'] * 1e3:8.1f} ms  x{t:5.2f} (plain {r['plain_seconds'] * 1e3:.1f} ms interleaved)   peak growth {r['peak_growth_bytes'] / 2**20:7.1f} MiB  x{m:5.2f}")
        rows.append({"metric": f"dp_step_time_{v}_over_plain", "ratio": t, "note": f"{r['seconds'] * 1e3:.1f} ms vs {r['plain_seconds'] * 1e3:.1f} ms, interleaved"})
        rows.append({"metric": f"dp_step_peak_mem_{v}_over_plain", "ratio": m, "note": "growth of the peak during steps"})
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

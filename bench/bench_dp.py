"""Cost of DP-SGD on a site's discriminator: one D step (Opacus, per grad-sample mode) against the
plain step on the same rows, side by side in one run; and the step's peak-memory growth.

Two shapes, each measured for every mode: ``patch`` (the conditional PatchGAN D of the dataclass
defaults, BCE loss) and ``recommended`` (the demo's and the sweep's D: ``recommended_settings``,
the semantic D with its loss, 32 px, 16 expected real patients + 8 fakes per step). The default
``policy.grad_sample_mode`` is chosen on the ``recommended`` rows.

Each variant runs in its own subprocess so the process high-water mark (``ru_maxrss``; on CUDA,
``max_memory_allocated``) measures that variant alone: reported memory is the growth of the peak
during two steps over the peak after setup (the plain variant's own run is the memory baseline).
Times are best-of-N with every variant's step and a plain one interleaved round-robin in one process
(so all modes meet the same load), with the DP optimiser's stages (clip, noise, Adam) timed in place. Modes Opacus 1.6 cannot run on this D are reported as
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


def _setup(variants: tuple[str, ...], *, size: int, batch: int, width: int, layers: int = 3, arch: str = "patch",
           loss: str = "bce", fakes: int | None = None, **_: object) -> tuple[dict, str, dict]:
    """variant -> one D step + G gradient on the same rows (each variant its own D, same init);
    also the device and, per DP variant, its DPSGDDiscriminator (for the breakdown)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from secgan.gan.models import build_discriminator
    from secgan.gan.config import ModelConfig
    from secgan.core.spec import ImageSpec
    from secgan.gan.step import discriminator_step, generator_gradient

    torch.set_num_threads(1)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model, image = ModelConfig(d_width=width, d_layers=layers, d_arch=arch), ImageSpec(size=size)
    g = torch.Generator().manual_seed(0)
    fakes = batch if fakes is None else fakes

    def cond(n: int) -> torch.Tensor:  # label-map-like conditions (channels 0/1), as the semantic loss reads them
        return (torch.rand(n, 4, size, size, generator=g) > 0.5).float().to(dev)

    rows = [cond(batch), torch.rand(batch, 4, size, size, generator=g).to(dev),
            cond(fakes), torch.rand(fakes, 4, size, size, generator=g).to(dev)]
    steps, dps = {}, {}
    for variant in variants:
        D = build_discriminator(model, image, seed=0).to(dev)
        if variant == "plain":
            opt = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.999))

            def step(D=D, opt=opt):
                discriminator_step(D, opt, rows[0], rows[1], rows[2], rows[3], loss=loss)
                generator_gradient(D, rows[2], rows[3], loss=loss)
        else:
            from secgan.privacy.dpsgd import DPSGDDiscriminator

            dp = DPSGDDiscriminator(
                D, lr=1e-4, betas=(0.5, 0.999), noise_multiplier=1.0, clip_norm=1.0, expected_batch_size=batch,
                sample_rate=0.1, noise_generator=torch.Generator(device=dev).manual_seed(0), grad_sample_mode=variant,
            )
            dps[variant] = dp

            def step(dp=dp):
                dp.step(rows[0], rows[1], rows[2], rows[3], loss=loss)
                generator_gradient(dp.for_gradient, rows[2], rows[3], loss=loss)
        steps[variant] = step
    return steps, dev, dps


def _timer(dev: str):
    import time

    import torch

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        if dev == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return timed


def _one(variant: str, **sizes) -> dict:
    """Peak-memory growth of ``variant`` alone in this process (and its time against a plain step)."""
    import resource

    import torch

    steps, dev, _ = _setup(tuple(dict.fromkeys((variant, "plain"))), **sizes)
    step, plain_step = steps[variant], steps["plain"]
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()  # the first step (and the first failure, if the mode cannot run)
    step()
    peak = torch.cuda.max_memory_allocated() if dev == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_growth_bytes": max(0, peak - base), "peak_bytes": peak, "device": dev}


def _interleaved(variants: tuple[str, ...], **sizes) -> dict:
    """Best-of-N time of every variant, round-robin in this one process (same load for all), and
    for each DP variant where its step's time goes (Opacus's DPOptimizer stages, timed in place)."""
    import time

    steps, dev, dps = _setup(variants, **sizes)
    timed = _timer(dev)
    stages: dict[str, dict[str, float]] = {}
    for v, dp in dps.items():  # time the optimiser's stages of each DP step (best of N each)
        opt, best = dp.optimizer, stages.setdefault(v, {})

        def wrap(name, fn, best=best):
            def inner(*a, **k):
                t0 = time.perf_counter()
                out = fn(*a, **k)
                best[name] = best.get(name, 0.0) + time.perf_counter() - t0
                return out
            return inner

        for name in ("clip_and_accumulate", "add_noise", "scale_grad"):
            setattr(opt, name, wrap(name, getattr(opt, name)))
        opt.original_optimizer.step = wrap("adam_step", opt.original_optimizer.step)
    for fn in steps.values():
        fn()  # warm-up (and the first failure)
    n = sizes.get("steps", 5)
    for st in stages.values():
        st.clear()
    best = {v: float("inf") for v in steps}
    for _ in range(n):
        for v, fn in steps.items():
            best[v] = min(best[v], timed(fn))
    return {"seconds": best, "stages": {v: {k: t / n for k, t in st.items()} for v, st in stages.items()},
            "device": dev}


def _shapes(quick: bool) -> dict[str, dict]:
    """name -> ``_one`` keyword arguments. ``recommended``: the demo's and the sweep's D, read from
    ``recommended_settings`` (32 px; 16 expected real patients as both configure, 8 fakes)."""
    sys.path.insert(0, str(ROOT))
    from secgan.gan.config import recommended_settings

    rec = recommended_settings(32)
    m, t = rec["model"], rec["train"]
    steps = 3 if quick else 7
    patch = dict(size=32, batch=8, width=16) if quick else dict(size=64, batch=16, width=32)
    return {
        "patch": dict(patch, steps=steps),
        "recommended": dict(size=32, batch=16, fakes=t["batch_size"], width=m["d_width"], layers=m["d_layers"],
                            arch=m["d_arch"], loss=t["loss"], steps=steps),
    }


def _run(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    return {"error": ((proc.stderr.strip().splitlines() or ["?"])[-1])[:200]}


def _measure(sizes: dict) -> dict[str, dict]:
    """Memory: each variant alone in its own process. Time: every variant that runs, interleaved in
    one process."""
    results = {v: _run(["--one", v, "--params", json.dumps(sizes)]) for v in VARIANTS}
    ok = tuple(v for v in VARIANTS if "error" not in results[v])
    if "plain" in ok:
        timing = _run(["--interleaved", ",".join(ok), "--params", json.dumps(sizes)])
        for v in ok:
            if "error" in timing:
                results[v] = timing
            else:
                results[v].update(seconds=timing["seconds"][v], plain_seconds=timing["seconds"]["plain"],
                                  stages=timing["stages"].get(v, {}))
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench_dp", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shape", action="append", help="only these shapes (patch, recommended)")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--interleaved", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one, **json.loads(args.params))))
        return []
    if args.interleaved:
        print(json.dumps(_interleaved(tuple(args.interleaved.split(",")), **json.loads(args.params))))
        return []
    rows: list[dict] = []
    for shape, sizes in _shapes(args.quick).items():
        if args.shape and shape not in args.shape:
            continue
        results = _measure(sizes)
        plain = results["plain"]
        fakes = sizes.get("fakes", sizes["batch"])
        print(f"[{shape}] D step + G gradient, image {sizes['size']}, {sizes['batch']} real + {fakes} fake rows, "
              f"d_width {sizes['width']}, d_arch {sizes.get('arch', 'patch')}, device {plain.get('device', '?')}")
        if "error" in plain:
            rows.append({"metric": f"dp_step_time_{shape}", "ratio": float("nan"), "note": f"plain failed: {plain['error']}"})
            continue
        print(f"  plain      {plain.get('seconds', float('nan')) * 1e3:8.1f} ms   peak growth {plain['peak_growth_bytes'] / 2**20:7.1f} MiB")
        for v in VARIANTS[1:]:
            r = results[v]
            if "error" in r:
                print(f"  {v:10s} FAILED: {r['error']}")
                rows.append({"metric": f"dp_step_time_{v}_over_plain ({shape})", "ratio": float("nan"),
                             "note": f"failed: {r['error']}"})
                continue
            t = r["seconds"] / r["plain_seconds"]
            m = (r["peak_growth_bytes"] + 1) / (plain["peak_growth_bytes"] + 1)
            print(f"  {v:10s} {r['seconds'] * 1e3:8.1f} ms  x{t:5.2f} (plain {r['plain_seconds'] * 1e3:.1f} ms "
                  f"interleaved)   peak growth {r['peak_growth_bytes'] / 2**20:7.1f} MiB  x{m:5.2f}")
            st = r.get("stages", {})
            if st:
                rest = r["seconds"] - sum(st.values())
                print("             " + ", ".join(f"{k} {t * 1e3:.1f} ms" for k, t in st.items())
                      + f", forward+backward+G gradient {rest * 1e3:.1f} ms")
            rows.append({"metric": f"dp_step_time_{v}_over_plain ({shape})", "ratio": t,
                         "note": f"{r['seconds'] * 1e3:.1f} ms vs {r['plain_seconds'] * 1e3:.1f} ms, interleaved"})
            rows.append({"metric": f"dp_step_peak_mem_{v}_over_plain ({shape})", "ratio": m,
                         "note": "growth of the peak during steps"})
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

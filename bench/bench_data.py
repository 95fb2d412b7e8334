"""Data-path cost, measured side by side in one run.

1. phantom generation: the test fixture's federation (3 sites x 6 patients, 32x32x16) and the demo's
   (3 x 20, 64x64x32); ratio = demo time / fixture time (absolute seconds in the note);
2. reading back: ``load_site(split="all")`` of every demo site vs generating them;
3. procedural conditions: drawing a batch vs sampling the same number of real slices.

``python bench/bench_data.py [--quick]`` or ``bench.bench_data.main(argv)``; rows for ``python -m bench``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> list[dict]:
    import numpy as np
    import torch

    from secgan.gan.conditions import ProceduralConditions
    from secgan.data.dataset import load_site
    from secgan.data.phantom import write_phantom

    parser = argparse.ArgumentParser(prog="bench_data")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv or [])
    big_patients = 6 if args.quick else 20
    repeat = 1 if args.quick else 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_phantom(root / "warm", sites=1, patients=2, seed=0, size=16, slices=8)  # imports, caches
        small = _best(lambda: write_phantom(root / "s", sites=3, patients=6, seed=1234, size=32, slices=16), repeat)
        big = _best(lambda: write_phantom(root / "b", sites=3, patients=big_patients, seed=1234, size=64, slices=32), repeat)
        rows.append({"metric": f"phantom 3x{big_patients}@64x64x32 / 3x6@32x32x16", "ratio": big / small,
                     "note": f"{big:.2f} s vs {small:.2f} s"})
        load = _best(lambda: [load_site(root / "b" / f"site-{k}", split="all", image_size=64) for k in (1, 2, 3)], repeat)
        rows.append({"metric": "load_site(all) of the demo sites / generating them", "ratio": load / big,
                     "note": f"{load:.2f} s vs {big:.2f} s"})
        ds = load_site(root / "b" / "site-1", split="all", image_size=64)
        n = 64
        src = ProceduralConditions(64)
        g = torch.Generator().manual_seed(0)
        proc = _best(lambda: src.draw(n, generator=g), repeat * 3)
        rng = np.random.default_rng(0)
        idx = rng.integers(ds.n_patients, size=n).tolist()
        real = _best(lambda: ds.sample_slices(idx, generator=rng), repeat * 3)
        rows.append({"metric": f"procedural draw({n}) / sample_slices({n})", "ratio": proc / real,
                     "note": f"{proc * 1e3:.1f} ms vs {real * 1e3:.1f} ms"})
    for r in rows:
        print(f"   {r['metric']}: {r['ratio']:.3g} ({r['note']})", flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

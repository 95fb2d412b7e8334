"""Cost of several slices per patient (``policy.slices_per_patient``): one private D update at a
site (Poisson sample, k slices per sampled patient, one DP-SGD step with the per-patient grouping,
G's gradient) for k = 1 and k = 4, at the sweep's size: 32 px, semantic D of width 8 and 3 layers,
8 fakes, E = 16 of 45 patients (24 slices each). Prints the median and best time of each and the ratio.

``python bench/bench_multislice.py [--steps N] [--mode hooks|functorch] [--quick]`` or ``main(argv) -> list[dict]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dataset(n: int, slices: int, size: int, seed: int = 0):
    import numpy as np

    from secgan.data.dataset import PatientSlices

    rng = np.random.default_rng(seed)
    labs = [rng.integers(0, 4, (slices, size, size)) for _ in range(n)]
    return PatientSlices(
        case_ids=[f"p{i}" for i in range(n)],
        images=[rng.uniform(-1, 1, (slices, 4, size, size)).astype(np.float32) for _ in range(n)],
        conds=[np.eye(4, dtype=np.float32)[lab].transpose(0, 3, 1, 2).copy() for lab in labs],
        segs=[lab.astype(np.int16) for lab in labs],
        image_size=size,
    )


def _time_updates(k: int, *, steps: int, mode: str) -> list[float]:
    import torch

    from secgan.net.schema import FakeBatch
    from sites.learner import SiteLearner
    from secgan.privacy.policy import PrivacyPolicy
    from secgan.gan.config import ModelConfig, TrainConfig
    from secgan.core.spec import ImageSpec

    torch.set_num_threads(1)
    size = 32
    pol = PrivacyPolicy(noise_multiplier=3.4, expected_batch_size=16, slices_per_patient=k, grad_sample_mode=mode,
                        reproducible_noise=True, target_epsilon=1e6)
    model = ModelConfig(d_width=8, d_layers=3, d_arch="semantic")
    train = TrainConfig(batch_size=8, loss="semantic", checkpoint_every=10**6)
    g = torch.Generator().manual_seed(0)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        site = SiteLearner(dataset=_dataset(45, 24, size), policy=pol, model=model, image=ImageSpec(size=size),
                           train=train, state_dir=Path(tmp) / "site", generator_seed=0)
        for s in range(steps + 2):
            lab = torch.randint(0, 4, (8, size, size), generator=g)
            cond = torch.nn.functional.one_hot(lab, 4).permute(0, 3, 1, 2).float()
            msg = FakeBatch(run_id="bench", round=s, step=s, cond=cond, fake=torch.rand(8, 4, size, size, generator=g) * 2 - 1)
            t0 = time.perf_counter()
            site._update_and_release(msg)
            if s >= 2:  # two warm-up updates
                out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench_multislice", description=__doc__)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--mode", choices=("hooks", "functorch"), default="hooks")
    parser.add_argument("--quick", action="store_true", help="3 updates each")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 3
    sys.path.insert(0, str(ROOT))
    res = {k: _time_updates(k, steps=args.steps, mode=args.mode) for k in (1, 4)}
    print(f"private D update + G gradient, 32 px, semantic D width 8, 8 fakes, E = 16 of 45, {args.mode}, "
          f"{args.steps} updates each (1 thread)")
    for k, ts in res.items():
        print(f"  k = {k}: median {statistics.median(ts) * 1e3:7.1f} ms   best {min(ts) * 1e3:7.1f} ms")
    ratio = statistics.median(res[4]) / statistics.median(res[1])
    print(f"  k = 4 / k = 1 (median): {ratio:.2f}x")
    return [{"metric": f"dp_update_k4_over_k1_{args.mode}", "ratio": ratio}]


if __name__ == "__main__":
    main()

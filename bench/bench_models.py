"""Model sizes and CPU seconds per training step (one thread), at 32, 64 and 128 px.

A "D step" is one ``discriminator_step`` on batch real+fake plus one ``generator_gradient``
(what a site does per request); a "G step" is ``make_batch`` + ``apply`` + ``finish_step``
(what the coordinator does per site and step). Ratios are measured side by side in one run.
``python -m bench bench_models [--quick] [--sizes 32,64,128]``.
"""

from __future__ import annotations

import argparse
import time

import torch


def _time(fn, reps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def measure(size: int, batch: int, reps: int) -> dict:
    from secgan.net.schema import GradientReply
    from secgan.gan.models import build_discriminator, build_generator, count_parameters
    from secgan.gan.config import ModelConfig
    from secgan.core.spec import ImageSpec
    from coordinator.core import GeneratorCore
    from secgan.gan.step import discriminator_step, generator_gradient

    model, image = ModelConfig(), ImageSpec(size=size)
    G, D = build_generator(model, image), build_discriminator(model, image)
    gen = torch.Generator().manual_seed(0)

    class Cond:
        def draw(self, n, *, generator):
            return (torch.rand(n, 4, size, size, generator=generator) > 0.7).float()

    core = GeneratorCore(G, torch.optim.Adam(G.parameters(), lr=2e-4), Cond(), batch_size=batch,
                         noise_dim=model.noise_dim, generator=gen)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4)
    real_c = Cond().draw(batch, generator=gen)
    real_x = torch.rand(batch, 4, size, size, generator=gen) * 2 - 1
    fb = core.make_batch(run_id="b", round=0, step=0)
    core.finish_step()
    counter = iter(range(1, 10**9))

    def d_step() -> None:
        discriminator_step(D, opt_d, real_c, real_x, fb.cond, fb.fake, loss="bce")
        generator_gradient(D, fb.cond, fb.fake, loss="bce")

    def g_step() -> None:
        k = next(counter)
        b = core.make_batch(run_id="b", round=k, step=k)
        core.apply(GradientReply(run_id="b", round=k, step=k, grad=torch.zeros_like(b.fake)))
        core.finish_step()

    return {"size": size, "g_params": count_parameters(G), "d_params": count_parameters(D),
            "g_step_s": _time(g_step, reps), "d_step_s": _time(d_step, reps)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench_models")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", default="32,64,128", help="comma-separated slice sizes (32 and 64 always run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    reps = 2 if args.quick else 5
    sizes = sorted({32, 64, *(int(v) for v in args.sizes.split(",") if v.strip())})
    res = {s: measure(s, args.batch, reps) for s in sizes}
    for r in res.values():
        print(f"   {r['size']:3d} px  G {r['g_params']:,} params  D {r['d_params']:,} params  "
              f"G step {r['g_step_s']:.3f} s  D step {r['d_step_s']:.3f} s  (batch {args.batch}, 1 thread)")
    return [
        {"metric": "G step 64px / 32px", "ratio": res[64]["g_step_s"] / res[32]["g_step_s"],
         "note": f"{res[64]['g_step_s']:.3f} s vs {res[32]['g_step_s']:.3f} s"},
        {"metric": "D step 64px / 32px", "ratio": res[64]["d_step_s"] / res[32]["d_step_s"],
         "note": f"{res[64]['d_step_s']:.3f} s vs {res[32]['d_step_s']:.3f} s"},
        {"metric": "G step / D step at 64px", "ratio": res[64]["g_step_s"] / res[64]["d_step_s"],
         "note": f"G {res[64]['g_params']:,} params, D {res[64]['d_params']:,}"},
    ] + [
        {"metric": f"{part} step 128px / 64px", "ratio": res[128][key] / res[64][key],
         "note": f"{res[128][key]:.3f} s vs {res[64][key]:.3f} s (batch {args.batch}, 1 thread)"}
        for part, key in (("G", "g_step_s"), ("D", "d_step_s")) if 128 in res
    ]


if __name__ == "__main__":
    main()

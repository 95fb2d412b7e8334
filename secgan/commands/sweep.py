"""``secgan sweep``: the whole utility comparison (real baselines, Syn-All, AsynDGAN with and without DP)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "utility sweep: Real-All, Real-Subset-n (+synthetic), Syn-All, AsynDGAN and AsynDGAN+DP at several epsilons"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secgan.evaluation.sweep_claims import DEFAULT_LEASE_S
    from secgan.evaluation.sweep_outputs import OUTPUT_FILES

    parser.add_argument("--config", required=True, type=Path, help="sweep config (TOML), e.g. examples/sweep.toml")
    parser.add_argument("--out", required=True, type=Path,
                        help=f"output folder: {', '.join(OUTPUT_FILES)}; "
                             "on a re-run, finished settings whose part of the config is unchanged are kept, the "
                             "others redone; a GAN folder trained with another config is refused")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run the sweep's jobs (GAN runs, U-Net trainings) in this many processes at once, each "
                             "after the jobs it needs (with --engine dask and no --scheduler: the local cluster's "
                             "workers); 1 runs them one after another in this process")
    parser.add_argument("--engine", choices=("local", "dask"), default="local",
                        help="who runs the jobs: local processes (default) or Dask (the optional extra "
                             "secgan[cluster]); the table is the same either way")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="--engine dask: the scheduler to submit to (e.g. tcp://10.0.0.5:8786); "
                             "default a local cluster of --jobs worker processes")
    parser.add_argument("--job", default=None, metavar="ID",
                        help="run only this job (e.g. gan.asyndgan-run1, unet.real-all.seed0) and exit; what a "
                             "line of --jobs-out runs")
    parser.add_argument("--jobs-out", type=Path, default=None, metavar="FILE",
                        help="prepare the data, write the job list (one shell command per line, '# stage S' after "
                             "it; stage S needs only earlier stages) for a Slurm array, and exit")
    parser.add_argument("--lease", type=float, default=None, metavar="SECONDS",
                        help="a job's claim lease: a worker that died leaves a claim another takes over once this "
                             f"long has passed without renewal (default {DEFAULT_LEASE_S:g})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of every job, whichever engine runs it (the table depends on it; the "
                             "same value gives the same table)")
    parser.add_argument("--train-gans", default=None, metavar="NAME:RUN,...",
                        help="train only these GAN runs (e.g. asyndgan:0,syn-all:1) and exit, without job records")


def run(args: argparse.Namespace) -> int:
    import time

    from secgan.evaluation.sweep import run_sweep
    from secgan.evaluation.sweep_outputs import OUTPUT_FILES

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)

    from secgan.core.errors import ConfigError

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    if args.lease is not None and not args.lease > 0:
        raise ConfigError(f"--lease must be > 0 seconds, got {args.lease}")
    if args.scheduler and args.engine != "dask":
        raise ConfigError("--scheduler needs --engine dask")
    parts = [n for n, v in (("--job", args.job), ("--jobs-out", args.jobs_out), ("--train-gans", args.train_gans))
             if v is not None]
    if len(parts) > 1:
        raise ConfigError(f"{' and '.join(parts)} cannot be combined")
    items = [i for i in args.train_gans.split(",") if i] if args.train_gans is not None else None
    rows = run_sweep(args.config, args.out, progress=say, jobs=args.jobs, train_gans=items, job=args.job,
                     jobs_out=args.jobs_out, engine=args.engine, scheduler=args.scheduler, lease_s=args.lease,
                     threads=args.threads)
    if items is not None:
        say(f"trained {len(items)} GAN run(s)")
        return 0
    if args.job is not None or args.jobs_out is not None:
        return 0
    print(f"{'setting':34} {'epsilon':>8} {'dice':>14} {'hd95':>7}")
    for r in rows:
        eps = "-" if r.get("epsilon") is None else f"{r['epsilon']:g}"
        print(f"{r['setting']:34} {eps:>8} {r['dice_mean']:.3f} +- {r['dice_std']:.3f} {r['hd95_mean']:7.2f}")
    first, *others = OUTPUT_FILES
    print(f"wrote {Path(args.out) / first}, {', '.join(others)}")
    return 0

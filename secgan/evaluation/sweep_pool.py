"""The sweep's GAN worker pool (``secgan sweep --jobs N``): the unfinished GAN runs shared out over
N ``secgan sweep --train-gans`` processes, each with ``cpu_count // N`` threads and its own log in
``out/gans/workers/worker-K.log``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from secgan.core.errors import ConfigError


def train_in_workers(todo: list[str], *, jobs: int, config_path: Path, out: Path,
                     progress: Callable[[str], None]) -> None:
    """Train the GAN runs ``todo`` (``name:run``) in at most ``jobs`` worker processes; wait for them
    all, then raise ConfigError naming the shares whose worker failed."""
    if not todo:
        return
    jobs = max(1, min(jobs, len(todo)))
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    shares = [todo[k::jobs] for k in range(jobs)]
    progress(f"training {len(todo)} GAN run(s) in {jobs} processes, {threads} thread(s) each")
    logs = out / "gans" / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for k, share in enumerate(shares):
        log_file = open(logs / f"worker-{k}.log", "wb")  # noqa: SIM115 - closed below
        cmd = [sys.executable, "-m", "secgan", "sweep", "--config", str(config_path), "--out", str(out),
               "--train-gans", ",".join(share)]
        procs.append((subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT), log_file, share))
    failed = []
    for proc, log_file, share in procs:
        code = proc.wait()
        log_file.close()
        if code != 0:
            failed.append(f"{','.join(share)} (exit {code})")
    if failed:
        raise ConfigError(f"GAN worker(s) failed: {'; '.join(failed)}; see {logs}")

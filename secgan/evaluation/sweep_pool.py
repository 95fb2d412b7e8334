"""The local engine (``secgan sweep --jobs N``): the sweep's jobs (``sweep_jobs``) run in up to N
``secgan sweep --job ID`` processes at once, each started once every job it needs is done; each
job's output goes to ``out/jobs/logs/<id>.log``."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from secgan.core.errors import ConfigError
from secgan.evaluation.sweep_jobs import JOBS_DIR, Job, is_done, job_command

POLL_S = 0.2  # how often the pool looks for a finished worker


def run_in_processes(sweep, todo: list[Job], *, jobs: int, config_path: Path, out: Path, lease_s: float,
                     threads: int) -> list[str]:
    """Run the jobs ``todo`` not done yet in at most ``jobs`` processes, in dependency order; returns
    the ids left undone (claimed elsewhere); raises ConfigError naming the jobs whose process failed."""
    pending = [j for j in todo if not is_done(sweep, j)]
    if not pending:
        return []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logs = Path(out) / JOBS_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sweep.progress(f"running {len(pending)} job(s) in up to {jobs} processes, {threads} thread(s) each")
    finished = {j.id for j in todo} - {j.id for j in pending}
    running: dict[str, tuple[subprocess.Popen, object, float]] = {}
    failed: list[str] = []
    while pending or running:
        bad = set(failed)
        for job in [j for j in pending if any(n in bad for n in j.needs)]:
            pending.remove(job)
            failed.append(job.id)  # not started: a job it needs failed
        ready = [j for j in pending if all(n in finished for n in j.needs)]
        for job in ready[: max(0, jobs - len(running))]:
            pending.remove(job)
            log_file = open(logs / f"{job.id}.log", "wb")  # noqa: SIM115 - closed when it exits
            cmd = job_command(config_path=config_path, out=out, job_id=job.id, lease_s=lease_s, threads=threads)
            running[job.id] = (subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT), log_file,
                               time.perf_counter())
        if not running:
            break  # what is left waits on jobs that failed
        time.sleep(POLL_S)
        for job_id, (proc, log_file, t0) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            log_file.close()
            del running[job_id]
            if code == 0:
                finished.add(job_id)
                sweep.progress(f"{job_id}: done ({time.perf_counter() - t0:.0f} s)")
            else:
                failed.append(job_id)
                sweep.progress(f"{job_id}: failed (exit {code}), see {logs / (job_id + '.log')}")
    if failed:
        raise ConfigError(f"sweep job(s) failed or not started: {', '.join(failed)}; see {logs}")
    return []

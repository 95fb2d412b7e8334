"""The Dask engine (``secgan sweep --engine dask [--scheduler ADDRESS]``): the sweep's jobs submitted
to a Dask cluster in dependency order (each task gets the futures of the jobs it needs), or to a
local cluster of ``--jobs`` worker processes when no scheduler is given.

An optional extra (``pip install 'secgan[cluster]'``), imported only here, only on this path. What
crosses Dask is the job's id, the config path, the output folder and a status string; every input
and output of a job goes through the shared folder (``sweep_jobs``), claimed and recorded there as
on any other engine. Dask's own protocol serialises tasks with pickle: run its scheduler and workers
on a network and hosts you trust, as for any cluster tool; it is not part of the federation's wire.
"""

from __future__ import annotations

from pathlib import Path

from secgan.core.errors import ConfigError
from secgan.evaluation.sweep_jobs import Job, is_done

EXTRA = "cluster"  # the pyproject extra that installs Dask


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--engine dask needs Dask's distributed scheduler: pip install 'secgan[{EXTRA}]' "
                          "(dask[distributed])") from None
    return distributed


def run_job_task(config_path: str, out: str, job_id: str, lease_s: float, threads: int, *_needs: str) -> str:
    """One Dask task: run job ``job_id`` in this worker (``_needs``: the statuses of the jobs it
    needs, passed only so Dask runs it after them). Returns "done", "skipped" or "busy"."""
    from secgan.evaluation.sweep import Sweep
    from secgan.evaluation.sweep_config import load_sweep_config
    from secgan.evaluation.sweep_jobs import jobs_by_id, plan_jobs, run_job, set_threads

    set_threads(threads)
    cfg, data_root = load_sweep_config(Path(config_path))
    sweep = Sweep(cfg, data_root, Path(out))
    sweep.start()
    table = jobs_by_id(plan_jobs(sweep))
    return run_job(sweep, table[job_id], table, lease_s=lease_s)


def run_on_dask(sweep, todo: list[Job], *, scheduler: str | None, workers: int, config_path: Path, out: Path,
                lease_s: float, threads: int) -> list[str]:
    """Run the jobs ``todo`` not done yet on Dask; returns the ids left undone (claimed by another
    worker, or needing one of those); raises ConfigError naming the jobs that failed."""
    distributed = _import_distributed()
    pending = [j for j in todo if not is_done(sweep, j)]
    if not pending:
        return []
    cluster = None
    if scheduler:
        client = distributed.Client(scheduler)
        where = f"the Dask scheduler at {scheduler}"
    else:
        cluster = distributed.LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        client = distributed.Client(cluster)
        where = f"a local Dask cluster of {max(1, workers)} worker process(es)"
    try:
        sweep.progress(f"running {len(pending)} job(s) on {where}")
        futures = {}
        for job in pending:  # in dependency order: the futures a job needs exist before it
            needs = [futures[n] for n in job.needs if n in futures]
            futures[job.id] = client.submit(run_job_task, str(config_path), str(out), job.id, lease_s, threads,
                                            *needs, key=f"secgan-sweep-{job.id}", pure=False, retries=0)
        left, failed = [], []
        for job_id, fut in futures.items():
            try:
                status = fut.result()
            except Exception as exc:  # a task's error comes back here; the others still run
                failed.append(f"{job_id} ({type(exc).__name__}: {exc})")
                continue
            if status == "busy":
                left.append(job_id)
            else:
                sweep.progress(f"{job_id}: {status}")
        if failed:
            raise ConfigError(f"sweep job(s) failed on Dask: {'; '.join(failed[:4])}"
                              f"{'; ...' if len(failed) > 4 else ''}")
        return left
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

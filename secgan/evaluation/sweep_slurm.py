"""``secgan sweep --jobs-out FILE``: the sweep's job list for a batch scheduler's array job.

One line per job, in stages: line N is a shell command that runs exactly one job
(``secgan sweep --config C --out O --job ID``), followed by ``# stage S``; every job of stage S needs
only jobs of earlier stages, and the lines of a stage are contiguous. A Slurm array runs one stage
with ``sed -n ${SLURM_ARRAY_TASK_ID}p FILE | sh`` over that stage's line range, the next stage
after it (``--dependency=afterok``); the README has a sample script. The data is prepared before the
list is written, so the array's jobs only read it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

from secgan.core.fsio import atomic_write_bytes
from secgan.evaluation.sweep_jobs import Job, job_command

STAGE_MARK = "# stage "


def job_lines(jobs: list[Job], *, config_path: Path, out: Path, lease_s: float, threads: int) -> list[str]:
    ordered = sorted(jobs, key=lambda j: j.stage)  # stable: the planned order within a stage
    return [" ".join(shlex.quote(a) for a in job_command(config_path=config_path, out=out, job_id=j.id,
                                                          lease_s=lease_s, threads=threads))
            + f"  {STAGE_MARK}{j.stage}" for j in ordered]


def stage_ranges(lines: list[str]) -> dict[int, tuple[int, int]]:
    """``{stage: (first line, last line)}``, 1-based, of a job list."""
    out: dict[int, tuple[int, int]] = {}
    for n, line in enumerate(lines, start=1):
        stage = int(line.rsplit(STAGE_MARK, 1)[1])
        first = out.get(stage, (n, n))[0]
        out[stage] = (first, n)
    return out


def write_job_list(jobs: list[Job], path: Path, *, progress: Callable[[str], None], config_path: Path, out: Path,
                   lease_s: float, threads: int) -> list[str]:
    lines = job_lines(jobs, config_path=config_path, out=out, lease_s=lease_s, threads=threads)
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())
    ranges = stage_ranges(lines)
    progress(f"wrote {len(lines)} job(s) to {path}: " + "; ".join(
        f"stage {s}: lines {a}-{b}" for s, (a, b) in sorted(ranges.items())))
    progress(f"then `secgan sweep --config {config_path} --out {out}` writes the table (running anything left)")
    return lines

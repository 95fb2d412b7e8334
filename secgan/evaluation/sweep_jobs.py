"""The sweep's units of work as independent, resumable jobs over the sweep's output folder.

Jobs (``plan_jobs``), each with a stable id:

- ``gan.<folder>``: GAN run ``name:run`` trained into ``out/gans/<folder>`` (``gan.asyndgan-run1``);
  stage 1, or stage 2 for a run that starts from a public pretraining (a stage-1 job);
- ``unet.<setting>[.runR].seedS``: one U-Net trained on ``setting``'s source with seed S (the GAN
  run R's synthetic pairs for a GAN setting) and scored; for the missing-modality pair, both U-Nets
  of seed S (channel absent and completed);
- ``quality.<setting>``: the image-quality metrics of a GAN setting's first run.

A U-Net or quality job runs in the stage after the GAN job it reads (stage 1 when it reads none), so
every job needs only jobs of earlier stages.

Each job's inputs are named by content (``job_inputs``): the part of the sweep config it depends on,
the data root, and for a job that reads a GAN run's files (a checkpoint, a pretraining's weights)
their paths under ``out`` and SHA-256. A job is done when ``out/jobs/<id>.json`` (its done record:
the inputs' SHA-256 and the job's result, written atomically) matches the current inputs and, for a
GAN job, the run's folder is finished with the recorded files (``gan_outputs``). Otherwise the job runs (again). Two workers never run one job at once: each
job is claimed first (``sweep_claims``: an ``O_EXCL`` claim file with a renewed lease); a worker
that died leaves a claim that is taken over once its lease has passed.

A job's result is a pure function of its inputs and the ``--threads`` it runs with, so the sweep's
table (``sweep.Sweep.assemble``) is the same whichever engine ran the jobs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secgan.core.errors import ConfigError
from secgan.core.fsio import atomic_write_json
from secgan.core.logs import get_logger
from secgan.evaluation.sweep_claims import DEFAULT_LEASE_S, try_claim
from secgan.evaluation.sweep_plan import (
    ASYNDGAN,
    MISSING_PREFIX,
    gan_dir_name,
    gan_runs,
    is_gan_setting,
    missing_settings,
    planned_settings,
    runs_of,
    setting_inputs,
    split_run,
)

if TYPE_CHECKING:
    from secgan.evaluation.sweep import Sweep

log = get_logger(__name__)

JOBS_DIR = "jobs"
GAN, UNET, QUALITY = "gan", "unet", "quality"


@dataclass(frozen=True)
class Job:
    """One unit of work of a sweep; ``needs`` are the ids of the jobs whose outputs it reads."""

    id: str
    kind: str
    stage: int
    setting: str
    run: int = 0
    seed: int | None = None
    needs: tuple[str, ...] = ()


def gan_job_id(name: str, run: int) -> str:
    return f"{GAN}.{gan_dir_name(name, run)}"


def unet_job_id(setting: str, seed: int, run: int | None = None) -> str:
    return f"{UNET}.{setting}" + ("" if run is None else f".run{run}") + f".seed{seed}"


def plan_jobs(sweep: Sweep) -> list[Job]:
    """Every job of the sweep, in an order that runs each job after the jobs it needs."""
    from secgan.evaluation.sweep_public import PUBLIC_ONLY, starts_pretrained

    cfg = sweep.cfg
    gans = []
    for item in gan_runs(cfg):
        name, run = split_run(item)
        pre = starts_pretrained(cfg, name) and name != PUBLIC_ONLY
        gans.append(Job(gan_job_id(name, run), GAN, 2 if pre else 1, name, run,
                        needs=(gan_job_id(PUBLIC_ONLY, run),) if pre else ()))
    have = {j.id for j in gans}
    for run in sorted({j.run for j in gans if j.needs}):  # pretrainings with no public-only row
        if gan_job_id(PUBLIC_ONLY, run) not in have:
            gans.append(Job(gan_job_id(PUBLIC_ONLY, run), GAN, 1, PUBLIC_ONLY, run))
    unets = []
    mm = cfg.missing_modality
    for setting in planned_settings(cfg, sweep.bench.sites()):
        if setting == missing_settings(mm)[1]:
            continue  # made by the jobs of its sibling
        for seed in cfg.seeds:
            if is_gan_setting(setting):
                for run in range(runs_of(cfg, setting)):
                    unets.append(Job(unet_job_id(setting, seed, run), UNET, 0, setting, run, seed,
                                     needs=(gan_job_id(setting, run),)))
            else:
                synthetic = setting.endswith("+synthetic") or setting.startswith(MISSING_PREFIX)
                unets.append(Job(unet_job_id(setting, seed), UNET, 0, setting, 0, seed,
                                 needs=(gan_job_id(ASYNDGAN, 0),) if synthetic else ()))
        if is_gan_setting(setting) and cfg.quality:
            unets.append(Job(f"{QUALITY}.{setting}", QUALITY, 0, setting, 0, None, needs=(gan_job_id(setting, 0),)))
    ordered = sorted(gans, key=lambda j: j.stage) + unets
    depth = {j.id: j.stage for j in gans}
    # a U-Net job runs in the stage after the GAN run it reads (stage 1 when it reads none)
    return [j if j.kind == GAN else dataclasses.replace(j, stage=1 + max((depth[n] for n in j.needs), default=0))
            for j in ordered]


def jobs_by_id(jobs: list[Job]) -> dict[str, Job]:
    return {j.id: j for j in jobs}


def record_path(out: Path, job_id: str) -> Path:
    return Path(out) / JOBS_DIR / f"{job_id}.json"


def claim_path(out: Path, job_id: str) -> Path:
    return Path(out) / JOBS_DIR / f"{job_id}.claim"


def read_record(out: Path, job_id: str) -> dict | None:
    try:
        return json.loads(record_path(out, job_id).read_text())
    except (OSError, ValueError):
        return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gan_outputs(sweep: Sweep, name: str, run: int) -> dict[str, str] | None:
    """What later jobs read of GAN run ``name:run``, by path under ``out`` and SHA-256: its checkpoint
    (the U-Nets sample it) and, for a pretraining, the weights and ``pretrain.json`` a run that
    starts from it loads (``train.init_from``); None while the checkpoint is missing."""
    from secgan.evaluation.baseline import gan_checkpoint
    from secgan.gan.pretrained import AVERAGE_FILE, DISCRIMINATOR_FILE, GENERATOR_FILE, INFO_FILE

    folder = sweep._gan_folder(name, run)
    ck = gan_checkpoint(folder)
    if not ck.is_file():
        return None
    files = [ck] + [folder / f for f in (GENERATOR_FILE, AVERAGE_FILE, DISCRIMINATOR_FILE, INFO_FILE)
                    if (folder / f).is_file()]
    return {f.relative_to(sweep.out).as_posix(): file_sha256(f) for f in files}


def _checkpoint_input(sweep: Sweep, name: str, run: int, *, whole: bool = False) -> dict | None:
    """The checkpoint of GAN run ``name:run`` by path (under ``out``) and content (``whole``: every
    file of ``gan_outputs``); None when it is not trained yet."""
    from secgan.evaluation.baseline import gan_checkpoint

    rec = read_record(sweep.out, gan_job_id(name, run))
    outputs = gan_outputs(sweep, name, run)
    if rec is None or outputs is None:
        return None
    if whole:
        return {"files": outputs}
    path = gan_checkpoint(sweep._gan_folder(name, run)).relative_to(sweep.out).as_posix()
    return {"path": path, "sha256": outputs[path]}


def job_inputs(sweep: Sweep, job: Job) -> dict | None:
    """What ``job``'s output depends on, by content; None while a checkpoint it reads is missing."""
    from secgan.core.config import to_dict
    from secgan.evaluation.baseline import _provenance
    from secgan.evaluation.sweep_public import PUBLIC_ONLY

    base: dict[str, Any] = {"job": job.id, "data_root": str(sweep.source_root)}
    if job.kind == GAN:
        base["run_config"] = _provenance(to_dict(sweep._gan_config(job.setting, job.run)))
        if job.needs:
            init = _checkpoint_input(sweep, PUBLIC_ONLY, job.run, whole=True)
            if init is None:
                return None
            base["init"] = init
        return base
    base["setting"] = setting_inputs(sweep._given, job.setting)
    if job.seed is not None:
        base["seed"] = job.seed
    if job.needs:
        name = ASYNDGAN if not is_gan_setting(job.setting) else job.setting
        ck = _checkpoint_input(sweep, name, job.run)
        if ck is None:
            return None
        base["checkpoint"] = ck
    return base


def inputs_sha256(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def is_done(sweep: Sweep, job: Job, inputs: dict | None = None) -> bool:
    """Whether ``job`` has a done record for its current inputs (and, for a GAN job, its output)."""
    from secgan.evaluation.baseline import run_finished

    rec = read_record(sweep.out, job.id)
    if rec is None:
        return False
    inputs = job_inputs(sweep, job) if inputs is None else inputs
    if inputs is None or rec.get("inputs_sha256") != inputs_sha256(inputs):
        return False
    if job.kind == GAN:
        folder = sweep._gan_folder(job.setting, job.run)
        return (run_finished(folder) is not None
                and gan_outputs(sweep, job.setting, job.run) == rec.get("result", {}).get("outputs"))
    return True


def blocked_by(sweep: Sweep, job: Job, table: dict[str, Job]) -> list[str]:
    """The jobs ``job`` needs that are not done."""
    return [n for n in job.needs if not is_done(sweep, table[n])]


def _execute(sweep: Sweep, job: Job, inputs: dict) -> dict:
    """Run ``job``; returns its result (what its done record keeps)."""
    from secgan.evaluation.baseline import ensure_gan
    from secgan.evaluation.downstream import evaluate_missing_modality, evaluate_source
    from secgan.evaluation.sources import parse_source
    from secgan.evaluation.sweep_public import PUBLIC_ONLY, ensure_public_gan

    cfg = sweep.cfg
    if job.kind == GAN:
        folder = sweep._gan_folder(job.setting, job.run)
        old = read_record(sweep.out, job.id)
        if old is not None and old.get("inputs", {}).get("init") not in (None, inputs.get("init")):
            # its pretraining changed since it ran: what it learnt from the old one is not reused
            log.info("sweep_job_retrain", job=job.id, reason="init checkpoint changed")
            shutil.rmtree(folder, ignore_errors=True)
        run_cfg = sweep._gan_config(job.setting, job.run)
        summary = ensure_public_gan(run_cfg, folder) if job.setting == PUBLIC_ONLY else ensure_gan(run_cfg, folder)
        return {"summary": summary, "outputs": gan_outputs(sweep, job.setting, job.run)}
    ck = sweep.out / inputs["checkpoint"]["path"] if "checkpoint" in inputs else None
    if job.kind == QUALITY:
        return {"quality": sweep._quality(ck)}
    common = dict(segmenter=cfg.segmenter, condition_source=cfg.gan.condition_source,
                  bank_dir=Path(cfg.gan.bank_dir) if cfg.gan.bank_dir else None)
    if job.setting.startswith(MISSING_PREFIX):
        mm = cfg.missing_modality
        absent, completed = evaluate_missing_modality(sweep.bench, site=mm.site, modality=mm.modality, checkpoint=ck,
                                                      seeds=[job.seed], segmenter=cfg.segmenter, draws=mm.draws)
        return {"absent": _one_seed(absent), "completed": _one_seed(completed)}
    spec = parse_source("synthetic") if is_gan_setting(job.setting) else parse_source(job.setting)
    res = evaluate_source(spec, sweep.bench, seeds=[job.seed], checkpoint=ck, n_synthetic=cfg.n_synthetic or None,
                          **common)
    return _one_seed(res)


def _one_seed(summary: dict) -> dict:
    out = {"scores": summary["per_seed"][0]}
    out.update({k: summary[k] for k in ("train_slices", "train_steps", "test_patients") if k in summary})
    return out


def run_job(sweep: Sweep, job: Job, table: dict[str, Job], *, lease_s: float = DEFAULT_LEASE_S) -> str:
    """Run ``job`` unless it is done; returns "done" (ran now), "skipped" (done already), "busy"
    (another worker holds its claim) or raises ConfigError when a job it needs is not done."""
    inputs = job_inputs(sweep, job)
    if inputs is not None and is_done(sweep, job, inputs):
        return "skipped"
    missing = blocked_by(sweep, job, table)
    if missing or inputs is None:
        raise ConfigError(f"job {job.id} needs {', '.join(missing) or 'its checkpoint'}, not done yet; "
                          f"run those first (stage {job.stage - 1} of the job list)")
    claim = try_claim(claim_path(sweep.out, job.id), lease_s=lease_s)
    if claim is None:
        return "busy"
    try:
        if is_done(sweep, job, inputs):  # finished by another worker between our check and our claim
            return "skipped"
        t0 = time.perf_counter()
        log.info("sweep_job_start", job=job.id)
        result = _execute(sweep, job, inputs)
        record = {"id": job.id, "inputs": inputs, "inputs_sha256": inputs_sha256(inputs), "result": result,
                  "wall_seconds": round(time.perf_counter() - t0, 2)}
        if not claim.held():
            log.warning("sweep_job_result_dropped", job=job.id, reason="its claim was taken over")
            return "busy"
        atomic_write_json(record_path(sweep.out, job.id), record)
        log.info("sweep_job_done", job=job.id, seconds=record["wall_seconds"])
        return "done"
    finally:
        claim.release()


def set_threads(threads: int) -> None:
    """Torch's intra-op threads for the jobs of this process (the same on every engine: a job's
    floating-point result can depend on how its sums are split over threads)."""
    import torch

    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def job_command(*, config_path: Path, out: Path, job_id: str, lease_s: float, threads: int) -> list[str]:
    """The command line that runs exactly job ``job_id`` (a pool worker, a job list's line)."""
    import sys

    return [sys.executable, "-m", "secgan", "sweep", "--config", str(config_path), "--out", str(out),
            "--job", job_id, "--lease", f"{lease_s:g}", "--threads", str(threads)]


def run_one(sweep: Sweep, job_id: str, *, lease_s: float) -> str:
    """``secgan sweep --job ID``: prepare (a no-op once the data exists), then run that job; a job
    another worker holds, or one whose inputs are not done, is a ConfigError."""
    sweep.start()
    jobs = plan_jobs(sweep)
    table = jobs_by_id(jobs)
    if job_id not in table:
        near = [j for j in table if j.split(".")[0] == job_id.split(".")[0]][:6]
        raise ConfigError(f"unknown job {job_id!r}; this sweep's jobs include {', '.join(near or list(table)[:6])}")
    t0 = time.perf_counter()
    status = run_job(sweep, table[job_id], table, lease_s=lease_s)
    if status == "busy":
        raise ConfigError(f"job {job_id} is claimed by another worker (see {claim_path(sweep.out, job_id)}); "
                          "it is retried once that claim's lease has passed")
    sweep.progress(f"{job_id}: {'done already, skipped' if status == 'skipped' else 'done'} "
                   f"({time.perf_counter() - t0:.0f} s)")
    return status

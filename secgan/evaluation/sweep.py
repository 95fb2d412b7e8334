"""The utility sweep: every training source, the GAN baselines and AsynDGAN with and without DP.

Settings, in order (names are the ``setting`` column of the results):

- ``real-all``, ``real-subset-K`` for each site K: U-Net on real train slices;
- ``syn-all``: U-Net on synthetic pairs of the centralised GAN (one process, pooled data);
- ``asyndgan``: synthetic pairs of AsynDGAN without DP (``privacy.mode = "off"``);
- ``public-only``: the G pretrained on a public cohort alone (``sweep_public``), the floor of the DP rows;
- ``asyndgan-dp-epsE``: AsynDGAN with DP-SGD at every site, ``target_epsilon = E`` and
  ``planned_steps`` = the run's steps, so the calibrated noise spends the budget over the run
  (from the public pretraining of its seed when ``privacy.pretrained``);
- ``real-subset-K+synthetic``: site K's real slices plus AsynDGAN (no DP) synthetic pairs;
- ``missing-<mod>-site-K`` / ``missing-<mod>-site-K-completed``: site K without one modality,
  channel absent vs completed by the AsynDGAN (no DP) generator (see ``downstream``).

Resumable and distributable: the work is a set of jobs (``sweep_jobs``: one GAN run, one U-Net of
one setting x seed), each recorded in ``out/jobs/<id>.json`` when done and skipped on a rerun while
its inputs are unchanged; each GAN run lives in ``out/gans/<name>/`` (further runs of one setting,
``gan.runs > 1``, in ``out/gans/<name>-runR/``) and is resumed from its checkpoint if it was cut off.
Each setting's row (``out/settings/<setting>.json``) is assembled from its jobs' records, and
``results.csv``/``results.json``, the figure and the HTML page from the rows, so the table is the
same whichever engine ran the jobs and a partial sweep can already be read.

This module is the driver; its parts: ``sweep_config`` (the TOML config), ``sweep_data`` (phantom
and atlas), ``sweep_plan`` (settings, GAN runs, resume decisions), ``baseline`` (one GAN run),
``sweep_jobs`` (the jobs, their inputs and records) with ``sweep_claims`` (who runs a job), the
engines ``sweep_pool`` (``--jobs`` local processes) and ``sweep_dask`` (``--engine dask``),
``sweep_slurm`` (``--jobs-out``, the job list of an array job) and ``sweep_outputs`` (CSV, JSON,
figure, page).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

from secgan.core.config import to_dict
from secgan.core.errors import ConfigError
from secgan.evaluation.sweep_config import SweepConfig, load_sweep_config
from secgan.evaluation.sweep_data import ensure_atlas, ensure_data, ensure_validation, validation_root
from secgan.evaluation.sweep_outputs import write_outputs
from secgan.evaluation.sweep_plan import (
    MISSING_PREFIX,
    epsilon_of,
    gan_config,
    gan_dir_name,
    gan_runs,
    inputs_fingerprint,
    is_dp_setting,
    is_gan_setting,
    missing_settings,
    planned_settings,
    runs_of,
    split_run,
    stale_reason,
)
from secgan.core.fsio import atomic_write_json


def _row(setting: str, summary: dict, **extra: Any) -> dict:
    row = {"setting": setting, "epsilon": None, "epsilon_spent": None}
    row.update({k: v for k, v in summary.items()})
    row.update(extra)
    return row


class Sweep:
    """Runs the settings of one sweep into ``out``; skips what is finished."""

    def __init__(self, cfg: SweepConfig, data_root: Path, out: Path, *, config_text: str = "",
                 progress: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self._given = cfg  # as configured (``_prepare`` may fill in the atlas bank's path)
        # the configured data; with score_on = "validation" every GAN and U-Net works on a copy
        # whose test patients are held-out training patients (``sweep_data.ensure_validation``)
        self.source_root = Path(data_root)
        self.data_root = validation_root(self.source_root) if cfg.score_on == "validation" else self.source_root
        self.out = Path(out)
        self.config_text = config_text
        self.progress = progress or (lambda _m: None)
        self._bench = None

    # -- helpers --------------------------------------------------------------------------------
    @property
    def bench(self):
        from secgan.evaluation.downstream import Workbench

        if self._bench is None:
            self._bench = Workbench(self.data_root, self.cfg.image_size)
        return self._bench

    @property
    def _pooled(self) -> Path:
        """The Syn-All site: every site's cases pooled (built by ``_prepare``)."""
        return self.out / "pooled" / "site-1"

    def setting_path(self, setting: str) -> Path:
        return self.out / "settings" / f"{setting}.json"

    def _gan_folder(self, name: str, run: int = 0) -> Path:
        return self.out / "gans" / gan_dir_name(name, run)

    def finished_rows(self) -> list[dict]:
        rows = []
        for s in planned_settings(self.cfg, self.bench.sites()):
            p = self.setting_path(s)
            if p.is_file():
                rows.append(json.loads(p.read_text()))
        return rows

    def _gan_config(self, name: str, run: int = 0):
        """The run config of GAN run ``name:run`` (the pooled site is built by ``_prepare``)."""
        from secgan.evaluation.sources import site_dirs
        from secgan.evaluation.sweep_public import PUBLIC_ONLY, adapt_gan_config

        plain = None if name == PUBLIC_ONLY else gan_config(self.cfg, list(site_dirs(self.data_root).values()),
                                                             self._pooled, name, run)
        return adapt_gan_config(self.cfg, plain, name, run, data_root=self.source_root, gans=self.out / "gans")

    def _gan(self, name: str, run: int = 0) -> tuple[Path, dict]:
        from secgan.evaluation.baseline import ensure_gan, gan_checkpoint, run_finished
        from secgan.evaluation.sweep_public import PUBLIC_ONLY, ensure_public_gan, starts_pretrained

        cfg = self._gan_config(name, run)
        folder = self._gan_folder(name, run)
        if starts_pretrained(self.cfg, name):
            self._gan(PUBLIC_ONLY, run)  # its pretraining first (shared by every setting of this seed)
        if run_finished(folder) is None:
            self.progress(f"GAN {gan_dir_name(name, run)}: training {cfg.train.steps} steps")
        summary = ensure_public_gan(cfg, folder) if name == PUBLIC_ONLY else ensure_gan(cfg, folder)
        return gan_checkpoint(folder), summary

    def check_gan_folders(self) -> None:
        """Refuse (ConfigError) before any work when a GAN folder in ``out`` was trained with
        another configuration than this sweep's."""
        from secgan.evaluation.baseline import check_gan_folder

        for item in gan_runs(self.cfg):
            name, run = split_run(item)
            check_gan_folder(self._gan_config(name, run), self._gan_folder(name, run))

    def _quality(self, checkpoint: Path) -> dict:
        from secgan.evaluation.quality import image_quality
        from secgan.gan.synthetic import sample_generator

        b = self.bench
        tr_im, tr_co, _ = b.real(None)
        te_im, _, _ = b.real(None, split="test")
        n = min(len(te_im), 1000)
        fake, _ = sample_generator(checkpoint, n=n, seed=self.cfg.seeds[0] + 9173, source=self.cfg.gan.condition_source,
                                   bank_dir=self.cfg.gan.bank_dir)
        return image_quality((tr_im, tr_co), te_im, fake, seed=self.cfg.seeds[0])

    # -- the GAN runs ---------------------------------------------------------------------------
    def train_gans(self, items: list[str]) -> None:
        """Train (or resume, or skip) the GAN runs ``items`` (``name:run``), in order."""
        known = set(gan_runs(self.cfg))
        bad = [i for i in items if i not in known]
        if bad:
            raise ConfigError(f"unknown GAN run(s) {', '.join(bad)}; this sweep has {', '.join(sorted(known))}")
        self._prepare()
        for item in items:
            self._gan(*split_run(item))

    def _prepare(self) -> None:
        """Data, atlas, pooled Syn-All site and output folder; idempotent. Runs before the GAN workers
        start, so they never build these shared folders at the same time."""
        from secgan.evaluation.baseline import pool_sites
        from secgan.evaluation.sources import site_dirs

        self.out.mkdir(parents=True, exist_ok=True)
        ensure_data(self.cfg, self.source_root)
        if self.cfg.score_on == "validation":
            ensure_validation(self.source_root, self.data_root, fraction=self.cfg.validation_fraction)
        pool_sites(list(site_dirs(self.data_root).values()), self._pooled)
        from secgan.evaluation.sweep_public import ensure_public, uses_public

        if uses_public(self.cfg):
            ensure_public(self.cfg, self.source_root)
        if self.cfg.gan.condition_source == "bank" and not self.cfg.gan.bank_dir:
            bank = ensure_atlas(self.cfg, self.source_root)
            self.cfg = dataclasses.replace(self.cfg, gan=dataclasses.replace(self.cfg.gan, bank_dir=str(bank)))

    # -- the jobs and the table ---------------------------------------------------------------
    def start(self) -> None:
        """Checks, data and folders before any job runs (idempotent): the device, the shared data
        (``_prepare``), the GAN folders' configurations, the missing-modality site."""
        if "cuda" in (self.cfg.device, self.cfg.segmenter.device):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("device = 'cuda', but no CUDA device is available")
        self._prepare()
        self.check_gan_folders()  # before anything is written
        mm = self.cfg.missing_modality
        if mm.enabled and mm.site not in self.bench.sites():
            raise ConfigError(f"missing_modality.site = {mm.site}, but the data has sites {self.bench.sites()}")

    def jobs(self):
        from secgan.evaluation.sweep_jobs import plan_jobs

        return plan_jobs(self)

    def say_plan(self, jobs) -> None:
        """One progress line per setting: done already, or why it runs again."""
        from secgan.evaluation.sweep_jobs import is_done

        done = {j.id for j in jobs if is_done(self, j)}
        for setting in planned_settings(self.cfg, self.bench.sites()):
            mine = [j for j in jobs if self._jobs_of(setting, j)]
            stale = stale_reason(self.setting_path(setting), self._given, setting)
            if stale is None and all(j.id in done for j in mine):
                self.progress(f"{setting}: done already, skipped")
            elif stale:
                self.progress(f"{setting}: {stale}; running it again")
            else:
                todo = [j.id for j in mine if j.id not in done]
                self.progress(f"{setting}: {len(todo)} job(s) to run ({', '.join(todo[:3])}"
                              f"{', ...' if len(todo) > 3 else ''})")

    def _jobs_of(self, setting: str, job) -> bool:
        """Whether ``job``'s result is part of ``setting``'s row."""
        from secgan.evaluation.sweep_jobs import GAN

        if setting.startswith(MISSING_PREFIX):
            return job.setting == missing_settings(self.cfg.missing_modality)[0] and job.kind != GAN
        return job.setting == setting and (job.kind != GAN or is_gan_setting(setting))

    def run_jobs_here(self, jobs, *, lease_s: float) -> list[str]:
        """Run the jobs one after another in this process; returns the ids left undone (claimed by
        another worker, or needing one of those)."""
        from secgan.evaluation.sweep_jobs import blocked_by, jobs_by_id, run_job

        table, left = jobs_by_id(jobs), []
        for job in jobs:
            if blocked_by(self, job, table):
                left.append(job.id)
                continue
            t0 = time.perf_counter()
            status = run_job(self, job, table, lease_s=lease_s)
            if status == "busy":
                self.progress(f"{job.id}: claimed by another worker, left to it")
                left.append(job.id)
            elif status == "done":
                self.progress(f"{job.id}: done ({time.perf_counter() - t0:.0f} s)")
        return left

    def _records(self, ids: list[str]) -> list[dict] | None:
        from secgan.evaluation.sweep_jobs import read_record

        recs = [read_record(self.out, i) for i in ids]
        return None if any(r is None for r in recs) else recs

    def setting_rows(self, setting: str) -> dict[str, dict] | None:
        """``setting``'s row (two for the missing-modality pair) from its jobs' done records; None
        while one is missing. A pure function of the records: no timings, no paths."""
        from secgan.evaluation.baseline import spent_epsilon
        from secgan.evaluation.metrics import summarise_runs
        from secgan.evaluation.sweep_jobs import QUALITY, gan_job_id, unet_job_id

        cfg = self.cfg

        def merged(per: list[dict]) -> dict:
            runs = [p["scores"] for p in per]
            out = summarise_runs(runs)
            out.update({k: per[-1][k] for k in ("train_slices", "train_steps", "test_patients") if k in per[-1]})
            out["per_seed"] = runs
            return out

        if setting.startswith(MISSING_PREFIX):
            absent_name, completed_name = missing_settings(cfg.missing_modality)
            recs = self._records([unet_job_id(absent_name, s) for s in cfg.seeds])
            if recs is None:
                return None
            per = [r["result"] for r in recs]
            a, c = merged([p["absent"] for p in per]), merged([p["completed"] for p in per])
            rows = {absent_name: _row(absent_name, a), completed_name: _row(completed_name, c)}
        elif not is_gan_setting(setting):
            recs = self._records([unet_job_id(setting, s) for s in cfg.seeds])
            if recs is None:
                return None
            rows = {setting: _row(setting, merged([r["result"] for r in recs]))}
        else:
            n = runs_of(cfg, setting)
            gans = self._records([gan_job_id(setting, r) for r in range(n)])
            unets = [self._records([unet_job_id(setting, s, r) for s in cfg.seeds]) for r in range(n)]
            quality = self._records([f"{QUALITY}.{setting}"] if cfg.quality else [])
            if gans is None or quality is None or any(u is None for u in unets):
                return None
            results = [merged([r["result"] for r in u]) for u in unets]
            summaries = [g["result"]["summary"] for g in gans]
            per_seed = [s for res in results for s in res["per_seed"]]
            row = _row(setting, {**results[0], **summarise_runs(per_seed), "per_seed": per_seed},
                       gan_runs=n, dice_per_gan=[round(res["dice_mean"], 6) for res in results],
                       gan_steps=summaries[0].get("steps_done"), gan_stopped=summaries[0].get("stopped"))
            if is_dp_setting(setting):
                row["epsilon"] = epsilon_of(cfg, setting)
                spent = [spent_epsilon(s) for s in summaries]
                row["epsilon_spent"] = max((e for e in spent if e is not None), default=None)
            for q in quality:
                row.update(q["result"]["quality"])
            rows = {setting: row}
        for name, r in rows.items():
            r["inputs_sha256"] = inputs_fingerprint(self._given, name)
        return rows

    def assemble(self, jobs, *, wall_s: float | None = None) -> list[dict]:
        """Write each setting whose jobs are all done (``settings/<setting>.json``, rewritten only when
        it changed), ``timings.json`` (the jobs' wall time per setting) and the outputs."""
        from secgan.evaluation.sweep_jobs import read_record

        timings = {}
        for setting in planned_settings(self.cfg, self.bench.sites()):
            rows = self.setting_rows(setting)
            if rows is None:
                continue
            recs = [read_record(self.out, j.id) for j in jobs if self._jobs_of(setting, j)]
            timings[setting] = round(sum(float(r.get("wall_seconds") or 0) for r in recs if r), 2)
            row = rows[setting]
            path = self.setting_path(setting)
            old = json.loads(path.read_text()) if path.is_file() else None
            if old != json.loads(json.dumps(row)):
                atomic_write_json(path, row)
                self.progress(f"{setting}: dice {row['dice_mean']:.3f} +- {row['dice_std']:.3f}, "
                              f"hd95 {row['hd95_mean']:.2f}")
        atomic_write_json(self.out / "timings.json", {"job_seconds_per_setting": timings})
        return self.write_outputs(wall_s=wall_s)

    # -- the whole sweep ------------------------------------------------------------------------
    def run(self, *, engine=None, lease_s: float | None = None) -> list[dict]:
        """Every job not done yet, by ``engine`` (a callable taking the job list; None: one after
        another in this process), then the table from the jobs' records."""
        from secgan.evaluation.sweep_claims import DEFAULT_LEASE_S

        self.start()
        atomic_write_json(self.out / "sweep-config.json", to_dict(self.cfg))
        t_path = self.out / "wall-time.json"
        spent = json.loads(t_path.read_text())["seconds"] if t_path.is_file() else 0.0
        t0 = time.perf_counter()
        jobs = self.jobs()
        self.say_plan(jobs)
        if engine is None:
            left = self.run_jobs_here(jobs, lease_s=lease_s or DEFAULT_LEASE_S)
        else:
            left = engine(jobs)
        spent += time.perf_counter() - t0
        atomic_write_json(t_path, {"seconds": round(spent, 1)})
        rows = self.assemble(jobs, wall_s=spent)
        if left:
            self.progress(f"{len(left)} job(s) not done here ({', '.join(left[:4])}"
                          f"{', ...' if len(left) > 4 else ''}); run the sweep again once their workers finish")
        return rows

    def write_outputs(self, *, wall_s: float | None = None) -> list[dict]:
        return write_outputs(self.out, self.finished_rows(), cfg=self.cfg, n_sites=len(self.bench.sites()),
                             wall_s=wall_s)


def run_sweep(config_path: Path, out: Path, *, progress: Callable[[str], None] | None = None,
              jobs: int = 1, train_gans: list[str] | None = None, job: str | None = None,
              jobs_out: Path | None = None, engine: str = "local", scheduler: str | None = None,
              lease_s: float | None = None, threads: int = 1) -> list[dict]:
    """The whole sweep, or one part of it; returns the rows (none for a part).

    - ``job``: run just that job (``sweep_jobs``; what a job list's line, a pool worker or a Dask
      task runs);
    - ``jobs_out``: prepare the data and write the job list for a Slurm array (``sweep_slurm``);
    - ``train_gans`` (``name:run`` items): train just those GAN runs;
    - otherwise every job not done yet, by ``engine``: "local" (``jobs`` > 1: that many worker
      processes, ``sweep_pool``; 1: one after another in this process) or "dask" (``sweep_dask``:
      the cluster at ``scheduler``, or a local cluster of ``jobs`` workers), then the table.

    Every job runs with ``threads`` torch threads, whatever runs it, so the table is the same."""
    from secgan.evaluation.sweep_claims import DEFAULT_LEASE_S
    from secgan.evaluation.sweep_jobs import set_threads

    cfg, data_root = load_sweep_config(config_path)
    sweep = Sweep(cfg, data_root, out, config_text=Path(config_path).read_text(), progress=progress)
    lease_s = lease_s or DEFAULT_LEASE_S
    set_threads(threads)
    if train_gans is not None:
        sweep.train_gans(train_gans)
        return []
    if job is not None:
        from secgan.evaluation.sweep_jobs import run_one

        run_one(sweep, job, lease_s=lease_s)
        return []
    command = dict(config_path=Path(config_path).resolve(), out=Path(out).resolve(), lease_s=lease_s, threads=threads)
    if jobs_out is not None:
        from secgan.evaluation.sweep_slurm import write_job_list

        sweep.start()
        write_job_list(sweep.jobs(), Path(jobs_out), progress=sweep.progress, **command)
        return []
    if engine == "dask":
        from secgan.evaluation.sweep_dask import run_on_dask

        return sweep.run(engine=lambda js: run_on_dask(sweep, js, scheduler=scheduler, workers=jobs, **command),
                         lease_s=lease_s)
    if jobs > 1:
        from secgan.evaluation.sweep_pool import run_in_processes

        return sweep.run(engine=lambda js: run_in_processes(sweep, js, jobs=jobs, **command), lease_s=lease_s)
    return sweep.run(lease_s=lease_s)

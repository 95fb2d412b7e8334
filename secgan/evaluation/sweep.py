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

Resumable: each finished setting is one JSON file under ``out/settings/``, skipped when present;
each GAN run lives in ``out/gans/<name>/`` (further runs of one setting, ``gan.runs > 1``, in
``out/gans/<name>-runR/``) and is resumed from its checkpoint if it was cut off.
``results.csv``/``results.json``, the figure and the HTML page are rewritten from the finished
settings after each one, so a partial sweep can already be read.

This module is the driver; its parts: ``sweep_config`` (the TOML config), ``sweep_data`` (phantom
and atlas), ``sweep_plan`` (settings, GAN runs, resume decisions), ``baseline`` (one GAN run),
``sweep_pool`` (the ``--jobs`` workers) and ``sweep_outputs`` (CSV, JSON, figure, page).
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
    ASYNDGAN,
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

    def train_gans_in_parallel(self, jobs: int, config_path: Path) -> None:
        """Train every unfinished GAN run in ``jobs`` worker processes (``secgan sweep --train-gans``,
        see ``sweep_pool``); the evaluation then finds them finished."""
        from secgan.evaluation.baseline import run_finished
        from secgan.evaluation.sweep_pool import train_in_workers

        self._prepare()
        self.check_gan_folders()
        todo = [i for i in gan_runs(self.cfg) if run_finished(self._gan_folder(*split_run(i))) is None]
        train_in_workers(todo, jobs=jobs, config_path=config_path, out=self.out, progress=self.progress)

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

    # -- one setting ----------------------------------------------------------------------------
    def run_setting(self, setting: str) -> dict:
        from secgan.evaluation.baseline import spent_epsilon
        from secgan.evaluation.downstream import evaluate_missing_modality, evaluate_source
        from secgan.evaluation.sources import parse_source

        cfg = self.cfg
        common = dict(seeds=cfg.seeds, segmenter=cfg.segmenter, n_synthetic=cfg.n_synthetic or None,
                      condition_source=cfg.gan.condition_source,
                      bank_dir=Path(cfg.gan.bank_dir) if cfg.gan.bank_dir else None)
        t0 = time.perf_counter()
        if setting.startswith("real-"):
            spec = parse_source(setting)
            ck = self._gan(ASYNDGAN)[0] if spec.synthetic else None
            row = _row(setting, evaluate_source(spec, self.bench, checkpoint=ck, **common))
        elif is_gan_setting(setting):
            from secgan.evaluation.metrics import summarise_runs

            results, summaries, checkpoints = [], [], []
            for r in range(runs_of(cfg, setting)):
                ck, summary = self._gan(setting, r)
                results.append(evaluate_source(parse_source("synthetic"), self.bench, checkpoint=ck, **common))
                summaries.append(summary)
                checkpoints.append(ck)
            per_seed = [s for res in results for s in res["per_seed"]]
            per_gan = [round(res["dice_mean"], 6) for res in results]
            merged = {**results[0], **summarise_runs(per_seed), "per_seed": per_seed}
            row = _row(setting, merged, gan_runs=len(results), dice_per_gan=per_gan,
                       gan_steps=summaries[0].get("steps_done"), gan_stopped=summaries[0].get("stopped"),
                       gan_wall_seconds=round(sum(float(s.get("wall_seconds") or 0) for s in summaries), 2))
            if is_dp_setting(setting):
                row["epsilon"] = epsilon_of(cfg, setting)
                spent = [spent_epsilon(s) for s in summaries]
                row["epsilon_spent"] = max((e for e in spent if e is not None), default=None)
            if cfg.quality:
                row.update(self._quality(checkpoints[0]))
        elif setting.startswith(MISSING_PREFIX):
            mm = cfg.missing_modality
            absent_name, completed_name = missing_settings(mm)
            ck = self._gan(ASYNDGAN)[0]
            absent, completed = evaluate_missing_modality(
                self.bench, site=mm.site, modality=mm.modality, checkpoint=ck, seeds=cfg.seeds,
                segmenter=cfg.segmenter, draws=mm.draws,
            )
            # both rows come from one computation: write the sibling too
            wall = round(time.perf_counter() - t0, 2)
            rows = {absent_name: _row(absent_name, absent, wall_seconds=wall),
                    completed_name: _row(completed_name, completed, wall_seconds=wall)}
            for name, r in rows.items():
                r["inputs_sha256"] = inputs_fingerprint(self._given, name)
                atomic_write_json(self.setting_path(name), r)
            return rows[setting]
        else:
            raise ConfigError(f"unknown sweep setting {setting!r}")
        row["wall_seconds"] = round(time.perf_counter() - t0, 2)
        row["inputs_sha256"] = inputs_fingerprint(self._given, setting)
        atomic_write_json(self.setting_path(setting), row)
        return row

    # -- the whole sweep ------------------------------------------------------------------------
    def run(self) -> list[dict]:
        if "cuda" in (self.cfg.device, self.cfg.segmenter.device):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("device = 'cuda', but no CUDA device is available")
        self._prepare()
        self.check_gan_folders()  # before anything is written
        atomic_write_json(self.out / "sweep-config.json", to_dict(self.cfg))
        t_path = self.out / "wall-time.json"
        spent = json.loads(t_path.read_text())["seconds"] if t_path.is_file() else 0.0
        sites = self.bench.sites()
        mm = self.cfg.missing_modality
        if mm.enabled and mm.site not in sites:
            raise ConfigError(f"missing_modality.site = {mm.site}, but the data has sites {sites}")
        for setting in planned_settings(self.cfg, sites):
            stale = stale_reason(self.setting_path(setting), self._given, setting)
            if stale is None:
                self.progress(f"{setting}: done already, skipped")
                continue
            if stale:
                self.progress(f"{setting}: {stale}; running it again")
            t0 = time.perf_counter()
            self.progress(f"{setting}: running")
            row = self.run_setting(setting)
            spent += time.perf_counter() - t0
            atomic_write_json(t_path, {"seconds": round(spent, 1)})
            self.progress(f"{setting}: dice {row['dice_mean']:.3f} +- {row['dice_std']:.3f}, "
                          f"hd95 {row['hd95_mean']:.2f} ({time.perf_counter() - t0:.0f} s)")
            self.write_outputs(wall_s=spent)
        rows = self.write_outputs(wall_s=spent)
        return rows

    def write_outputs(self, *, wall_s: float | None = None) -> list[dict]:
        return write_outputs(self.out, self.finished_rows(), cfg=self.cfg, n_sites=len(self.bench.sites()),
                             wall_s=wall_s)


def run_sweep(config_path: Path, out: Path, *, progress: Callable[[str], None] | None = None,
              jobs: int = 1, train_gans: list[str] | None = None) -> list[dict]:
    """The whole sweep. ``jobs`` > 1 trains the GAN runs in that many worker processes first;
    ``train_gans`` (``name:run`` items) trains just those runs and returns no rows (a worker's job)."""
    cfg, data_root = load_sweep_config(config_path)
    sweep = Sweep(cfg, data_root, out, config_text=Path(config_path).read_text(), progress=progress)
    if train_gans is not None:
        sweep.train_gans(train_gans)
        return []
    if jobs > 1:
        sweep.train_gans_in_parallel(jobs, Path(config_path))
    return sweep.run()

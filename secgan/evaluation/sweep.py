"""The utility sweep: every training source, the GAN baselines and AsynDGAN with and without DP.

Settings, in order (names are the ``setting`` column of the results):

- ``real-all``, ``real-subset-K`` for each site K: U-Net on real train slices;
- ``syn-all``: U-Net on synthetic pairs of the centralised GAN (one process, pooled data);
- ``asyndgan``: synthetic pairs of AsynDGAN without DP (``privacy.mode = "off"``);
- ``asyndgan-dp-epsE``: AsynDGAN with DP-SGD at every site, ``target_epsilon = E`` and
  ``planned_steps`` = the run's steps, so the calibrated noise spends the budget over the run;
- ``real-subset-K+synthetic``: site K's real slices plus AsynDGAN (no DP) synthetic pairs;
- ``missing-<mod>-site-K`` / ``missing-<mod>-site-K-completed``: site K without one modality,
  channel absent vs completed by the AsynDGAN (no DP) generator (see ``downstream``).

Resumable: each finished setting is one JSON file under ``out/settings/``, skipped when present;
each GAN run lives in ``out/gans/<name>/`` (further runs of one setting, ``gan.runs > 1``, in
``out/gans/<name>-runR/``) and is resumed from its checkpoint if it was cut off.
``results.csv``/``results.json``, the figure and the HTML page are rewritten from the finished
settings after each one, so a partial sweep can already be read.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from secgan.config import choices, load_dataclass, read_toml, rng, to_dict
from secgan.errors import ConfigError
from secgan.evaluation.segmenter import SegmenterConfig
from secgan.fsio import atomic_write_bytes, atomic_write_json
from secgan.logs import get_logger
from secgan.spec import IMAGE_CHANNELS

log = get_logger(__name__)


@dataclass(frozen=True)
class PhantomConfig:
    """Used only when the data folder is missing: the phantom federation to generate there."""

    sites: int = field(default=3, metadata=rng(min=2, max=16))
    patients: int = field(default=24, metadata=rng(min=4, max=1000))
    size: int = field(default=32, metadata=rng(min=16, max=256))
    slices: int = field(default=24, metadata=rng(min=4, max=256))
    seed: int = field(default=7, metadata=rng(min=0))
    test_fraction: float = field(default=0.25, metadata=rng(min=0.05, max=0.9))


@dataclass(frozen=True)
class AtlasConfig:
    """The public label-map atlas of the phantom world: label maps of made-up patients who belong to
    no site, standing in for a public annotated set (such as the BraTS training labels). Generated
    next to the data (``<data>-atlas``) and used as the GAN's condition bank when
    ``gan.condition_source = "bank"`` and ``gan.bank_dir`` is not set. Same image size and slice
    count as ``[phantom]``; another seed, so no patient is shared with any site."""

    sites: int = field(default=3, metadata=rng(min=1, max=16))
    patients: int = field(default=60, metadata=rng(min=2, max=1000))
    seed: int = field(default=1234, metadata=rng(min=0))


@dataclass(frozen=True)
class GanConfig:
    """The GAN runs (AsynDGAN, DP variants and Syn-All share it)."""

    steps: int = field(default=300, metadata=rng(min=1))
    batch_size: int = field(default=8, metadata=rng(min=1, max=1024))
    g_width: int = field(default=16, metadata=rng(min=4, max=256))
    g_depth: int = field(default=3, metadata=rng(min=1, max=6))
    d_width: int = field(default=16, metadata=rng(min=4, max=256))
    d_layers: int = field(default=3, metadata=rng(min=1, max=5))
    noise_dim: int = field(default=8, metadata=rng(min=1, max=512))
    lr_g: float = field(default=2e-4, metadata=rng(min=0.0, max=1.0, min_exclusive=True))
    lr_d: float = field(default=2e-4, metadata=rng(min=0.0, max=1.0, min_exclusive=True))
    loss: str = field(default="bce", metadata=choices("bce", "hinge", "minimax", "semantic"))
    # "patch" (conditional PatchGAN) or "semantic" (per-pixel class discriminator, needs loss "semantic")
    d_arch: str = field(default="patch", metadata=choices("patch", "semantic"))
    beta1: float = field(default=0.5, metadata=rng(min=0.0, max=0.999))
    beta2: float = field(default=0.999, metadata=rng(min=0.0, max=0.9999))
    # decay of the moving average of G's weights that is sampled (0: off; see train.g_average)
    g_average: float = field(default=0.0, metadata=rng(min=0.0, max=0.9999))
    seed: int = field(default=0, metadata=rng(min=0))
    # GANs trained per GAN setting, seeded seed, seed + 1, ...; a setting's Dice mean and spread are
    # then over every (GAN, U-Net seed) pair, so they include the GAN's own run-to-run variation.
    # Each DP run spends its own budget on the same patients (independent repeats of one experiment).
    runs: int = field(default=1, metadata=rng(min=1, max=16))
    # label maps of the GAN runs and of the synthetic training pairs: "procedural" (no data at all)
    # or "bank" (bank_dir, or the generated public atlas of [atlas] when bank_dir is not set)
    condition_source: str = field(default="procedural", metadata=choices("procedural", "bank"))
    bank_dir: str | None = None


@dataclass(frozen=True)
class DPConfig:
    epsilons: tuple[float, ...] = (1.0, 3.0, 10.0)
    delta: float = field(default=1e-5, metadata=rng(min=0.0, max=0.1, min_exclusive=True))
    clip_norm: float = field(default=1.0, metadata=rng(min=0.0, min_exclusive=True))
    expected_batch_size: int = field(default=6, metadata=rng(min=1))
    # generator steps of the DP runs (0: gan.steps). At a fixed epsilon, fewer steps mean less
    # noise per step, so the best step count of a DP run is usually below the non-private one
    steps: int = field(default=0, metadata=rng(min=0))

    def __post_init__(self) -> None:
        if any(not e > 0 for e in self.epsilons) or len(set(self.epsilons)) != len(self.epsilons):
            raise ValueError("epsilons must be distinct positive numbers")


@dataclass(frozen=True)
class MissingModalityConfig:
    enabled: bool = True
    site: int = field(default=1, metadata=rng(min=1))
    modality: str = field(default="flair", metadata=choices(*IMAGE_CHANNELS))
    # completion: best of this many G draws, matched on the present channels
    draws: int = field(default=4, metadata=rng(min=1, max=64))


@dataclass(frozen=True)
class SweepConfig:
    # the data root (site-K folders with split.json); relative to the config file
    data: str = "data/phantom"
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    atlas: AtlasConfig = field(default_factory=AtlasConfig)
    image_size: int = field(default=32, metadata=rng(min=16, max=512))
    seeds: tuple[int, ...] = (0, 1)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    privacy: DPConfig = field(default_factory=DPConfig)
    missing_modality: MissingModalityConfig = field(default_factory=MissingModalityConfig)
    # synthetic pairs per U-Net training set (0: as many as Real-All's train slices for a synthetic
    # source, one per real slice for real-subset-K+synthetic)
    n_synthetic: int = field(default=0, metadata=rng(min=0))
    augment_subsets: bool = True
    quality: bool = True
    device: str = field(default="cpu", metadata=choices("cpu", "cuda"))

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError("seeds must be a non-empty list of distinct non-negative integers")
        if self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")


def load_sweep_config(path: str | Path) -> tuple[SweepConfig, Path]:
    """The sweep config and its data root resolved against the config file's folder."""
    path = Path(path)
    cfg = load_dataclass(SweepConfig, read_toml(path))
    data = Path(cfg.data).expanduser()
    if not data.is_absolute():
        data = (path.parent / data).resolve()
    return cfg, data


def ensure_data(cfg: SweepConfig, data_root: Path) -> Path:
    """Generate the configured phantom federation if ``data_root`` does not exist yet."""
    from secgan.data.phantom import write_phantom

    if data_root.exists():
        return data_root
    p = cfg.phantom
    log.info("phantom_generating", sites=p.sites, patient_count=p.patients, size=p.size, seed=p.seed)
    tmp = data_root.with_name(data_root.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    write_phantom(tmp, sites=p.sites, patients=p.patients, seed=p.seed, size=p.size, slices=p.slices,
                  test_fraction=p.test_fraction)
    tmp.rename(data_root)  # a cut-off generation never looks like finished data
    return data_root


def ensure_atlas(cfg: SweepConfig, data_root: Path) -> Path:
    """The condition bank made from the public atlas (``<data>-atlas/bank``); generated if missing."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from secgan.data.phantom import write_phantom
    from secgan.evaluation.sources import load_real_slices

    root = data_root.with_name(data_root.name + "-atlas")
    bank = root / "bank"
    if (bank / "conds.safetensors").is_file():
        return bank
    a, p = cfg.atlas, cfg.phantom
    if not (root / "site-1" / "split.json").is_file():
        log.info("atlas_generating", sites=a.sites, patient_count=a.patients, seed=a.seed)
        write_phantom(root, sites=a.sites, patients=a.patients, seed=a.seed, size=p.size, slices=p.slices)
    conds = np.concatenate([load_real_slices(root, site=None, image_size=cfg.image_size, split=part)[1]
                            for part in ("train", "test")])
    bank.mkdir(parents=True, exist_ok=True)
    tmp = bank / "conds.safetensors.partial"
    save_file({"conds": torch.from_numpy(np.ascontiguousarray(conds))}, str(tmp))
    tmp.rename(bank / "conds.safetensors")
    return bank


def eps_name(eps: float) -> str:
    return f"asyndgan-dp-eps{eps:g}"


def gan_dir_name(name: str, run: int) -> str:
    """Folder of GAN run ``run`` (0-based) of setting ``name`` under ``out/gans``."""
    return name if run == 0 else f"{name}-run{run}"


def gan_run_config(cfg: SweepConfig, site_dirs: list[Path], *, epsilon: float | None, run: int = 0):
    """RunConfig of an AsynDGAN run over ``site_dirs``; DP-SGD at ``epsilon`` or privacy off (None).
    ``run`` (0-based) seeds the GAN with ``gan.seed + run``."""
    from secgan.privacy.policy import PrivacyPolicy
    from secgan.runconfig import DataConfig, ModelConfig, RunConfig, TrainConfig
    from secgan.spec import ImageSpec

    g = cfg.gan
    steps = g.steps
    if epsilon is None:
        policy = PrivacyPolicy(mode="off", allow_off=True)
        run_id = "asyndgan"
    else:
        steps = cfg.privacy.steps or g.steps
        policy = PrivacyPolicy(
            mode="dpsgd",
            target_epsilon=float(epsilon),
            delta=cfg.privacy.delta,
            clip_norm=cfg.privacy.clip_norm,
            planned_steps=steps,
            expected_batch_size=cfg.privacy.expected_batch_size,
        )
        run_id = eps_name(epsilon)
    run_id = gan_dir_name(run_id, run)
    try:
        return RunConfig(
            image=ImageSpec(size=cfg.image_size),
            model=ModelConfig(g_width=g.g_width, g_depth=g.g_depth, d_width=g.d_width, d_layers=g.d_layers,
                              noise_dim=g.noise_dim, d_arch=g.d_arch),
            train=TrainConfig(steps=steps, batch_size=g.batch_size, lr_g=g.lr_g, lr_d=g.lr_d, loss=g.loss,
                              beta1=g.beta1, beta2=g.beta2, g_average=g.g_average, seed=g.seed + run,
                              checkpoint_every=max(1, min(100, steps))),
            data=DataConfig(site_dirs=tuple(str(d) for d in site_dirs), condition_source=g.condition_source,
                            bank_dir=g.bank_dir),
            privacy=policy,
            run_id=run_id,
            device=cfg.device,
            previews=False,
        )
    except ValueError as exc:
        raise ConfigError(f"gan: {exc}") from None


def planned_settings(cfg: SweepConfig, sites: list[int]) -> list[str]:
    """Every setting the sweep will run, in order."""
    out = ["real-all"] + [f"real-subset-{k}" for k in sites] + ["syn-all", "asyndgan"]
    out += [eps_name(e) for e in cfg.privacy.epsilons]
    if cfg.augment_subsets:
        out += [f"real-subset-{k}+synthetic" for k in sites]
    mm = cfg.missing_modality
    if mm.enabled:
        stem = f"missing-{mm.modality}-site-{mm.site}"
        out += [stem, stem + "-completed"]
    return out


def setting_inputs(cfg: SweepConfig, setting: str) -> dict:
    """The parts of the sweep config that ``setting``'s result depends on; a resumed sweep reuses a
    saved result only when they are unchanged (``inputs_fingerprint``)."""
    whole = to_dict(cfg)
    seg = {k: v for k, v in whole["segmenter"].items() if k != "device"}
    out: dict[str, Any] = {"phantom": whole["phantom"], "image_size": cfg.image_size, "seeds": whole["seeds"],
                           "segmenter": seg}
    real_only = setting.startswith("real-") and not setting.endswith("+synthetic")
    if real_only:
        return out
    out["gan"] = whole["gan"]
    out["n_synthetic"] = cfg.n_synthetic
    if cfg.gan.condition_source == "bank" and not cfg.gan.bank_dir:
        out["atlas"] = whole["atlas"]
    if setting in ("syn-all", "asyndgan") or setting.startswith("asyndgan-dp-eps"):
        out["quality"] = cfg.quality
    else:
        out["gan"] = {k: v for k, v in whole["gan"].items() if k != "runs"}  # these use the first GAN only
    if setting.startswith("asyndgan-dp-eps"):
        out["privacy"] = {k: v for k, v in whole["privacy"].items() if k != "epsilons"}
        out["epsilon"] = next(e for e in cfg.privacy.epsilons if eps_name(e) == setting)
    if setting.startswith("missing-"):
        out["missing_modality"] = whole["missing_modality"]
    return out


def inputs_fingerprint(cfg: SweepConfig, setting: str) -> str:
    """SHA-256 of ``setting_inputs`` in canonical JSON."""
    import hashlib

    text = json.dumps(setting_inputs(cfg, setting), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


CSV_COLUMNS = (
    "setting", "epsilon", "epsilon_spent", "dice_mean", "dice_std", "hd95_mean", "hd95_std",
    "dice_wt_mean", "dice_wt_std", "dice_tc_mean", "dice_tc_std", "dice_et_mean", "dice_et_std",
    "hd95_wt_mean", "hd95_tc_mean", "hd95_et_mean", "train_slices", "test_patients", "seeds",
    "w1_t1", "w1_t1ce", "w1_t2", "w1_flair", "w1_mean", "precision", "recall", "gan_steps", "gan_runs", "wall_seconds",
)


def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r[k]))
                    for k in CSV_COLUMNS})
    return buf.getvalue()


def check_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, evaluated honestly on the finished rows (missing rows: not checked)."""
    by = {r["setting"]: r for r in rows}
    out = []
    subsets = [r for r in rows if r["setting"].startswith("real-subset-") and "+" not in r["setting"]]
    a, ra = by.get("asyndgan"), by.get("real-all")
    if a and ra:
        ratio = a["dice_mean"] / ra["dice_mean"] if ra["dice_mean"] > 0 else float("nan")
        out.append({"ok": ratio >= 0.9, "text": f"AsynDGAN Dice {a['dice_mean']:.3f} is {ratio:.2f} x Real-All "
                                                 f"{ra['dice_mean']:.3f} (target >= 0.9 x)"})
    if a and subsets:
        best = max(subsets, key=lambda r: r["dice_mean"])
        out.append({"ok": a["dice_mean"] > best["dice_mean"],
                    "text": f"AsynDGAN Dice {a['dice_mean']:.3f} vs best Real-Subset-n ({best['setting']}) "
                            f"{best['dice_mean']:.3f} (target: above)"})
    dp = sorted((r for r in rows if r["setting"].startswith("asyndgan-dp")), key=lambda r: r["epsilon"])
    if a and dp:
        below = all(r["dice_mean"] <= a["dice_mean"] + max(a["dice_std"], r["dice_std"]) for r in dp)
        pts = ", ".join(f"eps {r['epsilon']:g}: {r['dice_mean']:.3f}" for r in dp)
        out.append({"ok": below, "text": f"DP points ({pts}) at or below AsynDGAN without DP "
                                         f"{a['dice_mean']:.3f} within one std (the cost of privacy)"})
    return out


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
        self.data_root = Path(data_root)
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

    def _stale_reason(self, setting: str) -> str | None:
        """None when the setting's saved result was made with this configuration; "" when there is
        none; otherwise why it cannot be reused."""
        path = self.setting_path(setting)
        if not path.is_file():
            return ""
        try:
            saved = json.loads(path.read_text()).get("inputs_sha256")
        except (OSError, ValueError, AttributeError):
            return "its saved result is unreadable"
        if saved is None:
            return "its saved result does not record the configuration it was made with"
        if saved != inputs_fingerprint(self._given, setting):
            return "the configuration it depends on changed since it ran"
        return None

    def finished_rows(self) -> list[dict]:
        rows = []
        for s in planned_settings(self.cfg, self.bench.sites()):
            p = self.setting_path(s)
            if p.is_file():
                rows.append(json.loads(p.read_text()))
        return rows

    def _gan_config(self, name: str, run: int = 0):
        """The run config of GAN run ``name:run`` (``syn-all``, ``asyndgan`` or a DP setting)."""
        from secgan.evaluation.baseline import syn_all_config
        from secgan.evaluation.sources import site_dirs

        dirs = list(site_dirs(self.data_root).values())
        if name == "syn-all":  # the pooled site is built by ``_prepare``
            cfg = syn_all_config(gan_run_config(self.cfg, dirs, epsilon=None, run=run), self._pooled, len(dirs))
            return dataclasses.replace(cfg, run_id=gan_dir_name("syn-all", run))
        if name == "asyndgan":
            return gan_run_config(self.cfg, dirs, epsilon=None, run=run)
        eps = next(e for e in self.cfg.privacy.epsilons if eps_name(e) == name)
        return gan_run_config(self.cfg, dirs, epsilon=eps, run=run)

    def _gan(self, name: str, run: int = 0) -> tuple[Path, dict]:
        from secgan.evaluation.baseline import ensure_gan, gan_checkpoint, run_finished

        cfg = self._gan_config(name, run)
        folder = self.out / "gans" / gan_dir_name(name, run)
        if run_finished(folder) is None:
            self.progress(f"GAN {gan_dir_name(name, run)}: training {cfg.train.steps} steps")
        summary = ensure_gan(cfg, folder)
        return gan_checkpoint(folder), summary

    def check_gan_folders(self) -> None:
        """Refuse (ConfigError) before any work when a GAN folder in ``out`` was trained with
        another configuration than this sweep's."""
        from secgan.evaluation.baseline import check_gan_folder

        for item in self.gan_runs():
            name, run = _split_item(item)
            check_gan_folder(self._gan_config(name, run), self.out / "gans" / gan_dir_name(name, run))

    def _quality(self, checkpoint: Path) -> dict:
        from secgan.evaluation.quality import image_quality
        from secgan.synthetic import sample_generator

        b = self.bench
        tr_im, tr_co, _ = b.real(None)
        te_im, _, _ = b.real(None, split="test")
        n = min(len(te_im), 1000)
        fake, _ = sample_generator(checkpoint, n=n, seed=self.cfg.seeds[0] + 9173, source=self.cfg.gan.condition_source,
                                   bank_dir=self.cfg.gan.bank_dir)
        return image_quality((tr_im, tr_co), te_im, fake, seed=self.cfg.seeds[0])

    def gan_runs(self) -> list[str]:
        """Every GAN run the sweep needs, as ``name:run`` (``gan.runs`` per GAN setting)."""
        names = ["syn-all", "asyndgan"] + [eps_name(e) for e in self.cfg.privacy.epsilons]
        return [f"{n}:{r}" for n in names for r in range(self.cfg.gan.runs)]

    def train_gans(self, items: list[str]) -> None:
        """Train (or resume, or skip) the GAN runs ``items`` (``name:run``), in order."""
        known = set(self.gan_runs())
        bad = [i for i in items if i not in known]
        if bad:
            raise ConfigError(f"unknown GAN run(s) {', '.join(bad)}; this sweep has {', '.join(sorted(known))}")
        self._prepare()
        for item in items:
            self._gan(*_split_item(item))

    def train_gans_in_parallel(self, jobs: int, config_path: Path) -> None:
        """Train every unfinished GAN run in ``jobs`` worker processes (``secgan sweep --train-gans``),
        each with ``cpu_count // jobs`` threads; the evaluation then finds them finished."""
        import os
        import subprocess
        import sys

        from secgan.evaluation.baseline import run_finished

        self._prepare()
        self.check_gan_folders()
        todo = [i for i in self.gan_runs()
                if run_finished(self.out / "gans" / gan_dir_name(*_split_item(i))) is None]
        if not todo:
            return
        jobs = max(1, min(jobs, len(todo)))
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        shares = [todo[k::jobs] for k in range(jobs)]
        self.progress(f"training {len(todo)} GAN run(s) in {jobs} processes, {threads} thread(s) each")
        logs = self.out / "gans" / "workers"
        logs.mkdir(parents=True, exist_ok=True)
        procs = []
        for k, share in enumerate(shares):
            log_file = open(logs / f"worker-{k}.log", "wb")  # noqa: SIM115 - closed below
            cmd = [sys.executable, "-m", "secgan", "sweep", "--config", str(config_path), "--out", str(self.out),
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

    def _prepare(self) -> None:
        """Data, atlas, pooled Syn-All site and output folder; idempotent. Runs before the GAN workers
        start, so they never build these shared folders at the same time."""
        from secgan.evaluation.baseline import pool_sites
        from secgan.evaluation.sources import site_dirs

        self.out.mkdir(parents=True, exist_ok=True)
        ensure_data(self.cfg, self.data_root)
        pool_sites(list(site_dirs(self.data_root).values()), self._pooled)
        if self.cfg.gan.condition_source == "bank" and not self.cfg.gan.bank_dir:
            bank = ensure_atlas(self.cfg, self.data_root)
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
            ck = self._gan("asyndgan")[0] if spec.synthetic else None
            row = _row(setting, evaluate_source(spec, self.bench, checkpoint=ck, **common))
        elif setting in ("syn-all", "asyndgan") or setting.startswith("asyndgan-dp-eps"):
            from secgan.evaluation.metrics import summarise_runs

            results, summaries, checkpoints = [], [], []
            for r in range(cfg.gan.runs):
                ck, summary = self._gan(setting, r)
                results.append(evaluate_source(parse_source("synthetic"), self.bench, checkpoint=ck, **common))
                summaries.append(summary)
                checkpoints.append(ck)
            per_seed = [s for res in results for s in res["per_seed"]]
            per_gan = [round(res["dice_mean"], 6) for res in results]
            merged = {**results[0], **summarise_runs(per_seed), "per_seed": per_seed}
            row = _row(setting, merged, gan_runs=cfg.gan.runs, dice_per_gan=per_gan,
                       gan_steps=summaries[0].get("steps_done"), gan_stopped=summaries[0].get("stopped"),
                       gan_wall_seconds=round(sum(float(s.get("wall_seconds") or 0) for s in summaries), 2))
            if setting.startswith("asyndgan-dp-eps"):
                row["epsilon"] = next(e for e in cfg.privacy.epsilons if eps_name(e) == setting)
                spent = [spent_epsilon(s) for s in summaries]
                row["epsilon_spent"] = max((e for e in spent if e is not None), default=None)
            if cfg.quality:
                row.update(self._quality(checkpoints[0]))
        elif setting.startswith("missing-"):
            mm = cfg.missing_modality
            stem = f"missing-{mm.modality}-site-{mm.site}"
            ck = self._gan("asyndgan")[0]
            absent, completed = evaluate_missing_modality(
                self.bench, site=mm.site, modality=mm.modality, checkpoint=ck, seeds=cfg.seeds,
                segmenter=cfg.segmenter, draws=mm.draws,
            )
            # both rows come from one computation: write the sibling too
            wall = round(time.perf_counter() - t0, 2)
            rows = {stem: _row(stem, absent, wall_seconds=wall),
                    stem + "-completed": _row(stem + "-completed", completed, wall_seconds=wall)}
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
            stale = self._stale_reason(setting)
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
        from secgan.evaluation.plots import plot_dice_vs_epsilon
        from secgan.evaluation.report import write_report

        rows = self.finished_rows()
        slim = [{k: v for k, v in r.items() if k != "per_seed"} for r in rows]
        atomic_write_json(self.out / "results.json", slim)
        atomic_write_bytes(self.out / "results.csv", results_csv(slim).encode("utf-8"))
        if not rows:
            return slim
        fig = plot_dice_vs_epsilon(slim, self.out / "dice_vs_epsilon.png",
                                   title=self._figure_title())
        claims = check_targets(slim)
        write_report(self.out / "report.html", slim, figure_png=fig, claims=claims, notes=self.notes(slim),
                     config_text=json.dumps(to_dict(self.cfg), indent=2), wall_s=wall_s)
        return slim

    def _figure_title(self) -> str:
        c = self.cfg
        dp_steps = c.privacy.steps or c.gan.steps
        steps = f"{c.gan.steps} GAN steps" + (f" (DP runs {dp_steps})" if dp_steps != c.gan.steps else "")
        return f"{len(self.bench.sites())} sites, {steps}, {c.gan.runs} GAN(s) x {len(c.seeds)} U-Net seed(s)"

    def notes(self, rows: list[dict]) -> list[str]:
        by = {r["setting"]: r for r in rows}
        mm = self.cfg.missing_modality
        stem = f"missing-{mm.modality}-site-{mm.site}"
        out = [
            "Training uses tumour-bearing slices for every source; each test patient is scored on all of its "
            "brain slices (3-D Dice/HD95 per patient, then averaged).",
            "Syn-All: the same G and D trained by the same runner on one site pooling every site's patients, "
            "with the per-step batch times the number of sites.",
            "DP runs: DP-SGD at each site (Opacus, Poisson sampling of patients, RDP accounting), noise "
            "calibrated so the planned steps spend the target epsilon; epsilon_spent is the largest spent "
            "epsilon reported by a site.",
        ]
        if stem in by and stem + "-completed" in by:
            a, c = by[stem], by[stem + "-completed"]
            out.append(
                f"Missing modality: a U-Net for site {mm.site} without {mm.modality} scores Dice {a['dice_mean']:.3f}; "
                f"with the channel completed by the AsynDGAN generator (best of {mm.draws} draws matched on the "
                f"present channels; test-time label maps predicted without the channel) {c['dice_mean']:.3f}. "
                "Simplification: that generator was trained with every site holding all four modalities; the "
                "site's missing channel is removed only for its segmenter and for the test images."
            )
        return out


def _split_item(item: str) -> tuple[str, int]:
    name, run = item.rsplit(":", 1)
    return name, int(run)


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

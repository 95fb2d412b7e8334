"""``secgan demo [--domain brain|nuclei|derm]``: the whole product end to end on built-in phantom data.

phantom data for 3 hospitals -> a public cohort of another phantom distribution and a non-private
pretraining on it (G and D) -> provisioning (keys, configs, signed manifest; every party starts from
the pretraining) -> the coordinator and 3 sites as separate processes over CURVE on 127.0.0.1 with
DP-SGD on -> synthetic samples ->
a signed privacy audit at each site -> downstream Dice of synthetic-trained vs real baselines ->
one summary page, ``OUT/index.html``.

Each stage is one function, the same for every domain: what differs (the phantom, the image spec
the run configs carry, the model's changes, the page's words) is one row of
:data:`secgan.commands.demo_domains.DOMAINS`; the downstream score follows the spec's condition kind.
The page is written by :mod:`secgan.commands.demo_page`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELP = ("run the whole pipeline on phantom data (3 sites over CURVE, DP-SGD, audits, downstream score) and write a "
        "summary page")


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    # which phantom and task: brain (MRI, U-Net Dice), nuclei (H&E tiles, Dice/F1/AJI), derm (lesions, TSTR)
    domain: str = "brain"
    sites: int = 3
    patients: int = 60
    test_fraction: float = 0.33
    size: int = 32
    slices: int = 24
    # generator steps of the private run: 150, each with the fine-tuning recipe's 2 private D steps
    # (recommended_settings "fine_tune": 300 charged D steps, as the 300 x 1 it replaces)
    steps: int = 150
    batch_size: int = 8
    target_epsilon: float = 10.0
    samples: int = 256
    seg_epochs: int = 10
    expected_batch_size: int = 16
    # the public cohort (secgan.data.phantom.PUBLIC_STYLE) and its non-private pretraining
    public_patients: int = 60
    pretrain_steps: int = 200
    seed: int = 0
    timeout_s: float = 1800.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoConfig(out=Path("runs/demo"))
    from secgan.commands.demo_domains import DEMO_DOMAINS

    parser.add_argument("--out", type=Path, default=d.out, help="output folder (default runs/demo; wiped first)")
    parser.add_argument("--domain", choices=DEMO_DOMAINS, default=d.domain,
                        help="brain MRI (default), H&E nuclei tiles (nuclei) or dermoscopy lesions (derm)")
    parser.add_argument("--sites", type=int, default=d.sites, help=f"hospitals (default {d.sites})")
    parser.add_argument("--patients", type=int, default=d.patients, help=f"patients per hospital (default {d.patients})")
    parser.add_argument("--size", type=int, default=d.size, help=f"in-plane image size (default {d.size})")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"generator steps (default {d.steps})")
    parser.add_argument("--epsilon", type=float, default=d.target_epsilon,
                        help=f"each site's target epsilon (default {d.target_epsilon})")
    parser.add_argument("--samples", type=int, default=d.samples, help=f"synthetic slices to release (default {d.samples})")
    parser.add_argument("--seg-epochs", type=int, default=d.seg_epochs, help=f"U-Net epochs (default {d.seg_epochs})")
    parser.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps,
                        help=f"steps of the public pretraining (default {d.pretrain_steps})")
    parser.add_argument("--public-patients", type=int, default=d.public_patients,
                        help=f"patients of the public cohort (default {d.public_patients})")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--timeout", type=float, default=d.timeout_s, help="give up training after this many seconds")


class _Stages:
    """Numbered progress lines and a timing per stage, for the page and the README."""

    def __init__(self, total: int) -> None:
        self.total, self.k, self.t0 = total, 0, time.perf_counter()
        self.timings: dict[str, float] = {}
        self._name, self._start = "", 0.0

    def start(self, name: str, what: str) -> None:
        self._close()
        self.k += 1
        self._name, self._start = name, time.perf_counter()
        print(f"[{self.k}/{self.total}] {what}", flush=True)

    def _close(self) -> None:
        if self._name:
            self.timings[self._name] = round(time.perf_counter() - self._start, 1)

    def finish(self) -> float:
        self._close()
        return round(time.perf_counter() - self.t0, 1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rewrite_toml(path: Path, updates: dict[str, Any]) -> None:
    """Apply nested ``updates`` to a generated config file, keeping it a valid config."""
    from secgan.commands.provision import to_toml
    from secgan.core.config import read_toml

    data = read_toml(path)
    for key, value in updates.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    header = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#")
                       for ln in path.read_text().splitlines() if ln.startswith("#"))
    path.write_text(to_toml(data, header=header))


def _domain(cfg: DemoConfig):
    from secgan.commands.demo_domains import DOMAINS

    return DOMAINS[cfg.domain]


def _spec(cfg: DemoConfig):
    return _domain(cfg).spec(cfg.size)


def _model_settings(cfg: DemoConfig) -> dict[str, Any]:
    # The recommended G and semantic D (what makes a DP-SGD generator follow its label maps here),
    # with the domain's changes (a class condition takes the projection D).
    from secgan.gan.config import recommended_settings

    return {**recommended_settings(cfg.size)["model"], **_domain(cfg).model}


def _train_settings(cfg: DemoConfig) -> dict[str, Any]:
    from secgan.gan.config import recommended_settings

    return {**recommended_settings(cfg.size)["train"], **_domain(cfg).train, "steps": cfg.steps,
            "batch_size": cfg.batch_size, "checkpoint_every": max(10, cfg.steps // 4), "seed": cfg.seed}


def _expected_batch(cfg: DemoConfig) -> int:
    """Patients per DP step: the configured size, at most half of a site's training patients."""
    train_patients = int(cfg.patients * (1 - cfg.test_fraction))
    return max(1, min(cfg.expected_batch_size, train_patients // 2))


def stage_data(cfg: DemoConfig) -> list[Path]:
    return _domain(cfg).write(cfg.out / "data", sites=cfg.sites, patients=cfg.patients, seed=cfg.seed,
                              size=cfg.size, slices=cfg.slices, test_fraction=cfg.test_fraction)


def stage_pretrain(cfg: DemoConfig) -> Path:
    """The public cohort (the domain's, :mod:`secgan.commands.demo_domains`) and G and D pretrained on
    it without privacy (public data costs nothing); every party of the federation starts from it
    (``train.init_from``), as the sweep chose."""
    from secgan.simulation.pretrain import pretrain
    from secgan.privacy.policy import PrivacyPolicy
    from secgan.gan.config import ModelConfig, TrainConfig
    from secgan.run.config import DataConfig, RunConfig

    (site,) = _domain(cfg).write(cfg.out / "public", sites=1, patients=cfg.public_patients, seed=cfg.seed + 4242,
                                 size=cfg.size, slices=cfg.slices, test_fraction=0.05, public=True)
    train = {**_train_settings(cfg), "steps": cfg.pretrain_steps, "checkpoint_every": cfg.pretrain_steps}
    run = RunConfig(image=_spec(cfg), model=ModelConfig(**_model_settings(cfg)),
                    train=TrainConfig(**train), data=DataConfig(site_dirs=(str(site),), split="all"),
                    privacy=PrivacyPolicy(mode="off", allow_off=True), run_id="pretrain", previews=False)
    out = cfg.out / "pretrained"
    pretrain(run, site, out)
    return out


def stage_provision(cfg: DemoConfig, pretrained: Path) -> dict[str, Path]:
    from secgan.commands.provision import provision
    from secgan.core.config import to_dict

    port = _free_port()
    kits = provision(cfg.out / "kits", sites=cfg.sites, port=port, run_id=f"demo-{cfg.seed}",
                     data_root=cfg.out / "data", image_size=cfg.size)
    from secgan.gan.config import recommended_settings

    fine_tune = recommended_settings(cfg.size)["fine_tune"]  # the private run starts from the pretraining
    train = {**_train_settings(cfg), **fine_tune["train"], "init_from": str(pretrained.resolve())}
    image = to_dict(_spec(cfg))  # every party's [image]: the Welcome carries it, a site with another stops
    _rewrite_toml(kits["coordinator"], {
        "min_sites": max(1, cfg.sites - 1), "round_deadline_s": 60.0, "run_json_every_s": 1.0,
        "heartbeat_timeout_s": 30.0, "image": image, "model": _model_settings(cfg), "train": train,
    })
    for k in range(1, cfg.sites + 1):
        _rewrite_toml(kits[f"site-{k}"], {
            "seed": cfg.seed * 100 + k, "image": image, "model": _model_settings(cfg), "train": train,
            "policy": {"mode": "dpsgd", "target_epsilon": cfg.target_epsilon, "delta": 1e-5, "clip_norm": 1.0,
                       "planned_steps": cfg.steps, "expected_batch_size": _expected_batch(cfg),
                       **fine_tune["policy"]},
        })
    return kits


def _ledger_epsilon(site_toml: Path | None) -> float | None:
    from secgan.core.errors import SecganError
    from secgan.privacy.ledger import PrivacyLedger
    from secgan.settings import load_site_config

    if site_toml is None:
        return None
    try:
        return PrivacyLedger.read(load_site_config(site_toml).state_dir).epsilon
    except SecganError:
        return None


def stage_train(cfg: DemoConfig, kits: dict[str, Path]) -> dict:
    """Coordinator and sites as separate OS processes over CURVE; progress from run.json."""
    from tqdm import tqdm

    from coordinator.config import load_coordinator_config

    ccfg = load_coordinator_config(kits["coordinator"])
    logs = cfg.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    py = [sys.executable, "-m", "secgan", "--log-json"]
    procs: dict[str, subprocess.Popen] = {}
    files = []
    try:
        def spawn(name: str, argv: list[str]) -> None:
            fh = open(logs / f"{name}.log", "wb")
            files.append(fh)
            procs[name] = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)

        spawn("coordinator", py + ["coordinator", "--config", str(kits["coordinator"]), "--no-progress"])
        for k in range(1, cfg.sites + 1):
            spawn(f"site-{k}", py + ["site", "--config", str(kits[f"site-{k}"])])
        run_json = Path(ccfg.state_dir) / "run.json"
        deadline = time.monotonic() + cfg.timeout_s
        reported = 0
        # A bar on a terminal; on a pipe or CI log, one line per tenth of the run instead.
        with tqdm(total=cfg.steps, desc="generator steps", unit="step", file=sys.stdout,
                  disable=not sys.stdout.isatty(), mininterval=1.0) as bar:
            while procs["coordinator"].poll() is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"training did not finish within {cfg.timeout_s:.0f} s; logs in {logs}")
                dead = [n for n, p in procs.items() if n != "coordinator" and p.poll() not in (None, 0)]
                if len(dead) == cfg.sites:
                    raise RuntimeError(f"every site exited with an error; see {logs}")
                done = _steps_done(run_json)
                if bar.disable and done * 10 // cfg.steps > reported * 10 // cfg.steps:
                    print(f"      {done}/{cfg.steps} generator steps", flush=True)
                    reported = done
                bar.update(max(0, done - bar.n))
                time.sleep(0.5)
            bar.update(max(0, _steps_done(run_json) - bar.n))
        if procs["coordinator"].returncode != 0:
            raise RuntimeError(f"the coordinator exited with code {procs['coordinator'].returncode}; see {logs / 'coordinator.log'}")
        for name, p in procs.items():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.terminate()
        return json.loads(run_json.read_text())
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for fh in files:
            fh.close()


def _steps_done(run_json: Path) -> int:
    try:
        return int(json.loads(run_json.read_text()).get("steps_done", 0))
    except (OSError, ValueError):
        return 0


def stage_sample(cfg: DemoConfig, kits: dict[str, Path]) -> Path:
    import numpy as np

    from secgan.gan.checkpoint import CHECKPOINT_FILE
    from secgan.data.dataset import load_site
    from coordinator.config import load_coordinator_config
    from secgan.gan.synthetic import sample_generator, save_grid, write_synthetic

    ccfg = load_coordinator_config(kits["coordinator"])
    checkpoint = Path(ccfg.state_dir) / CHECKPOINT_FILE
    images, conds = sample_generator(checkpoint, n=cfg.samples, seed=cfg.seed + 7, source="procedural")
    out = cfg.out / "synthetic"
    write_synthetic(out, images, conds, generator_checkpoint=checkpoint)
    spec = _spec(cfg)
    real = load_site(cfg.out / "data" / "site-1", split="train", image_size=cfg.size, image=spec)
    r_images, r_conds, _, _ = real.all_slices()
    pick = np.linspace(0, len(r_images) - 1, 6).astype(int)
    save_grid(cfg.out / "real_vs_synthetic.png", r_images[pick], np.asarray(images[:6]), np.asarray(conds[:6]),
              image=spec)
    return checkpoint


def stage_audit(cfg: DemoConfig, kits: dict[str, Path], checkpoint: Path) -> dict[str, dict]:
    from audits.api import run_audit
    from audits.core import AuditConfig

    # The projection attack dominates an audit's time; the demo runs a lighter one (fewer steps and
    # restarts). A site's own audit (`secgan audit run`) keeps the defaults.
    audit_cfg = AuditConfig(seed=cfg.seed, projection_restarts=1, projection_steps=12, projection_slices_per_patient=1)
    reports = {}
    for k in range(1, cfg.sites + 1):
        site = f"site-{k}"
        reports[site] = run_audit(site_config_path=kits[site], synthetic_dir=cfg.out / "synthetic",
                                  out_dir=cfg.out / "audits" / site, generator_checkpoint=checkpoint, seed=cfg.seed,
                                  config=audit_cfg)
        print(f"      {site}: verdict {reports[site]['verdict']}", flush=True)
    # The coordinator's side: verify every site's signature against the signed manifest, summarise.
    from audits.merge import merge_reports
    from audits.signing import load_public_keys

    kit = cfg.out / "kits" / "coordinator"
    site_keys, _ = load_public_keys(manifest=kit / "manifest.json", coordinator_key=kit / "signing.pub")
    summary = merge_reports([cfg.out / "audits" / s / "report.json" for s in reports],
                            out_dir=cfg.out / "audits", site_keys=site_keys)
    print(f"      federation summary (signatures verified): {summary.get('verdict', '?')}", flush=True)
    return reports


SOURCE_LABELS = {
    "real-all": "real data, all sites pooled (Real-All)",
    "real-subset-1": "real data of site 1 alone (Real-Subset-1)",
    "synthetic": "synthetic data only (secgan generator, DP, epsilon {eps:g})",
    "public-only": "synthetic data of the public pretraining alone (no site data)",
}


def stage_utility(cfg: DemoConfig, checkpoint: Path, pretrained: Path) -> list[dict]:
    """The downstream model trained on real data of all sites, on one site alone, on synthetic data
    only, and on the synthetic data of the public pretraining alone (what the private training adds
    is the difference), scored on real test patients: the brain U-Net's Dice, or for another
    condition kind :func:`secgan.evaluation.image_utility.image_utility`."""
    if cfg.domain != "brain":
        return _image_utility(cfg, checkpoint, pretrained)
    from secgan.gan.checkpoint import checkpoint_file
    from secgan.evaluation.downstream import Workbench, evaluate_source
    from secgan.evaluation.segmenter import SegmenterConfig
    from secgan.evaluation.sources import parse_source

    bench = Workbench(cfg.out / "data", cfg.size)
    seg = SegmenterConfig(channels=(16, 32, 64), epochs=cfg.seg_epochs)
    rows = []
    for name, label in (("real-all", "real data, all sites pooled (Real-All)"),
                        ("real-subset-1", "real data of site 1 alone (Real-Subset-1)"),
                        ("synthetic", f"synthetic data only (secgan generator, DP, epsilon {cfg.target_epsilon:g})"),
                        ("public-only", "synthetic data of the public pretraining alone (no site data)")):
        ck = {"synthetic": checkpoint, "public-only": checkpoint_file(pretrained / "checkpoint")}.get(name)
        source = parse_source("synthetic" if name == "public-only" else name)
        result = evaluate_source(source, bench, seeds=[cfg.seed], segmenter=seg, checkpoint=ck)
        row = {"setting": label, "source": name, **{k: v for k, v in result.items() if k != "per_seed"}}
        row.update({f"dice_{r}": result[f"dice_{r}_mean"] for r in ("wt", "tc", "et")})
        rows.append(row)
        print(f"      {label}: mean Dice {row['dice_mean']:.3f}", flush=True)
    from secgan.core.fsio import atomic_write_json

    atomic_write_json(cfg.out / "utility" / "results.json", rows)
    by = {r["source"]: r["dice_mean"] for r in rows}
    print(f"      synthetic Dice at epsilon {cfg.target_epsilon:g}: {by['synthetic']:.3f} "
          f"(public-only {by['public-only']:.3f}; Real-All {by['real-all']:.3f})", flush=True)
    return rows


def _image_utility(cfg: DemoConfig, checkpoint: Path, pretrained: Path) -> list[dict]:
    from secgan.core.fsio import atomic_write_json
    from secgan.evaluation.image_utility import METRICS, image_utility
    from secgan.gan.checkpoint import checkpoint_file
    from secgan.gan.synthetic import read_synthetic, sample_generator

    spec = _spec(cfg)
    public = sample_generator(checkpoint_file(pretrained / "checkpoint"), n=cfg.samples, seed=cfg.seed + 7)
    rows = image_utility(site_dirs=[cfg.out / "data" / f"site-{k}" for k in range(1, cfg.sites + 1)], image=spec,
                         synthetic={"synthetic": read_synthetic(cfg.out / "synthetic"), "public-only": public},
                         epochs=cfg.seg_epochs, seed=cfg.seed)
    (key, label), *rest = METRICS[spec.condition]
    for row in rows:
        row["setting"] = SOURCE_LABELS[row["source"]].format(eps=cfg.target_epsilon)
        more = ", ".join(f"{lab} {row[k]:.3f}" for k, lab in rest)
        print(f"      {row['setting']}: {label} {row[key]:.3f}, {more}", flush=True)
    atomic_write_json(cfg.out / "utility" / "results.json", rows)
    by = {r["source"]: r[key] for r in rows}
    print(f"      synthetic {label} at epsilon {cfg.target_epsilon:g}: {by['synthetic']:.3f} "
          f"(public-only {by['public-only']:.3f}; Real-All {by['real-all']:.3f})", flush=True)
    return rows


def run(args: argparse.Namespace) -> int:
    from secgan.commands.demo_page import write_index
    from secgan.core.logs import setup_logging

    cfg = DemoConfig(out=args.out, domain=args.domain, sites=args.sites, patients=args.patients, size=args.size, steps=args.steps,
                     target_epsilon=args.epsilon, samples=args.samples, seg_epochs=args.seg_epochs,
                     pretrain_steps=args.pretrain_steps, public_patients=args.public_patients,
                     seed=args.seed, timeout_s=args.timeout)
    if cfg.out.exists():
        shutil.rmtree(cfg.out)
    (cfg.out / "logs").mkdir(parents=True)
    # This process's own structured logs go to a file; the terminal shows the stages.
    log_file = open(cfg.out / "logs" / "demo.log", "w", encoding="utf-8")
    setup_logging(args.log_level, as_json=True, stream=log_file)
    stages = _Stages(total=8)
    domain = _domain(cfg)
    stages.start("data", f"phantom data: {cfg.sites} hospitals x {cfg.patients} {domain.patient}s, {cfg.size}x{cfg.size}, "
                         f"{domain.data_what}")
    stage_data(cfg)
    stages.start("pretrain", f"public pretraining: {cfg.public_patients} {domain.patient}s of another phantom distribution, "
                             f"{cfg.pretrain_steps} steps, no privacy needed")
    pretrained = stage_pretrain(cfg)
    stages.start("provision", "provisioning: CURVE and Ed25519 keys, configs, signed manifest")
    kits = stage_provision(cfg, pretrained)
    stages.start("train", f"training: coordinator + {cfg.sites} sites over CURVE on 127.0.0.1, DP-SGD "
                          f"(target epsilon {cfg.target_epsilon:g} per site)")
    run_summary = stage_train(cfg, kits)
    for site, info in sorted(run_summary.get("sites", {}).items()):
        # the coordinator is told only a coarse budget_left; the demo runs every party, so it reads
        # each site's own ledger for the exact epsilon spent
        info["epsilon"] = _ledger_epsilon(kits.get(site))
        eps = info.get("epsilon")
        print(f"      {site}: epsilon spent {eps if eps is None else f'{eps:.2f}'}, "
              f"steps served {info.get('steps_served')}, stopped: {info.get('stop_reason') or '-'}", flush=True)
    stages.start("sample", f"sampling {cfg.samples} synthetic images from the generator")
    checkpoint = stage_sample(cfg, kits)
    stages.start("audit", "auditing at each site (membership inference, memorisation), signed reports")
    reports = stage_audit(cfg, kits, checkpoint)
    stages.start("utility", domain.task)
    utility = stage_utility(cfg, checkpoint, pretrained)
    stages.start("page", "summary page")
    wall = stages.finish()
    index = write_index(cfg.out, run_summary=run_summary, reports=reports, utility=utility,
                        timings=stages.timings, wall_s=wall, settings=cfg, domain=cfg.domain, image=_spec(cfg))
    print(f"\nDone in {wall:.0f} s. Open {index}", flush=True)
    return 0

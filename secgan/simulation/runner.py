"""AsynDGAN in one process: the coordinator's GeneratorCore and every site's learner side by side.

Messages pass as Python objects (the same FakeBatch / GradientReply / Refusal the network carries),
so this runner exercises exactly the step core the distributed coordinator uses, minus transport:
the core is built and resumed by the coordinator's own ``coordinator.build.build_generator_core``,
and every site, whatever its privacy mode, is the site node's own ``sites.learner.SiteLearner``
with its ledger under ``out_dir/sites/<site>/``. It needs both roles, so this package sits above
them in the layers (``tests/unit/project/test_architecture.py``), beside evaluation and commands.

Layout of ``out_dir``: ``checkpoint/checkpoint.safetensors`` (G, Adam, step, RNG), ``sites/site-K/``
(site state), ``previews/step-XXXXXX.png``, ``run.json`` (summary).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from secgan.core.errors import ConfigError, DataError
from secgan.core.fsio import atomic_write_json
from secgan.core.logs import get_logger
from secgan.net.schema import GradientReply, Refusal
from secgan.run.config import RunConfig

from coordinator.core import GeneratorCore
from sites.learner import SiteLearner

log = get_logger(__name__)

# consecutive rounds in which every active site refused (without withdrawing) before giving up
MAX_IDLE_ROUNDS = 10


def _site_seeds(seed: int, n: int) -> list[int]:
    """Independent per-site seeds derived from the run seed (no global RNG)."""
    return [int(s.generate_state(1, dtype=np.uint64)[0] >> 1) for s in np.random.SeedSequence(seed).spawn(n)]


def check_inprocess_config(cfg: RunConfig) -> None:
    """Refuse what the in-process runner cannot do, before any data is read."""
    if cfg.data.condition_source == "site":
        raise ConfigError(
            "data.condition_source = 'site' is not supported by the in-process runner yet "
            "(and train.l1_weight needs it); use 'procedural' or 'bank'"
        )
    if cfg.train.l1_weight > 0:
        raise ConfigError("train.l1_weight > 0 is not supported by the in-process runner (it needs the 'site' source)")
    if not cfg.data.site_dirs:
        raise ConfigError("data.site_dirs: at least one site folder is needed")
    if cfg.data.condition_source not in cfg.privacy.accept_sources:
        raise ConfigError(
            f"privacy.accept_sources {list(cfg.privacy.accept_sources)} does not include "
            f"data.condition_source {cfg.data.condition_source!r}: every site would refuse"
        )
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda' but no CUDA device is available")


def _build_learners(cfg: RunConfig, datasets: list, out_dir: Path) -> dict[str, SiteLearner]:
    """One ``sites.learner.SiteLearner`` per site, whatever the privacy mode (state under out_dir/sites/)."""
    seeds = _site_seeds(cfg.train.seed, len(datasets))
    learners: dict[str, SiteLearner] = {}
    for k, (ds, seed) in enumerate(zip(datasets, seeds)):
        name = f"site-{k + 1}"
        state_dir = out_dir / "sites" / name
        state_dir.mkdir(parents=True, exist_ok=True)
        learners[name] = SiteLearner(
            dataset=ds, policy=cfg.privacy, model=cfg.model, image=cfg.image, train=cfg.train,
            state_dir=state_dir, generator_seed=seed, device=cfg.device,
        )
        refusal = learners[name].refuses_source(cfg.data.condition_source)
        if refusal:
            raise ConfigError(f"{name} refuses condition source {cfg.data.condition_source!r}: {refusal}")
    return learners


def _site_moments(cfg: RunConfig, learners: dict[str, SiteLearner]) -> dict[str, np.ndarray] | None:
    """Each site's one DP statistics release (released now if its policy says so and it has not yet),
    averaged over the sites, as the target of G's moment-matching term (None when nobody released)."""
    released = []
    for name, learner in learners.items():
        stats = learner.release_stats()
        if stats is not None:
            released.append(stats)
            log.info("site_stats_received", site=name)
    if cfg.train.stats_weight > 0 and not released:
        raise ConfigError("train.stats_weight > 0 needs sites that release statistics (privacy.release_stats = true)")
    if not released:
        return None
    return {k: np.mean([np.asarray(s[k], dtype=np.float64) for s in released], axis=0) for k in ("mean", "std")}


def _preview(core: GeneratorCore, cfg: RunConfig, path: Path, n: int = 6) -> None:
    from secgan.gan.synthetic import save_grid

    gen = torch.Generator().manual_seed(cfg.train.seed + 7919)  # fixed preview conditions, separate stream
    core.G.eval()
    with torch.no_grad():
        cond = core.conditions.draw(n, generator=gen).to(torch.float32)
        z = torch.randn(n, cfg.model.noise_dim, generator=gen)
        fake = core.G(cond.to(core.device), z.to(core.device)).cpu()
    core.G.train()
    save_grid(path, None, fake.numpy(), cond.numpy(), image=cfg.image)


def run_inprocess(
    cfg: RunConfig,
    *,
    out_dir: Path,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    datasets: list | None = None,
) -> dict:
    """Train for ``cfg.train.steps`` steps (or until every site refused for good). Returns run.json's content.

    ``stop_at``: leave after that many steps in total (checkpointed; ``--resume`` continues), e.g. to
    split a long run into sessions. ``datasets``: the sites' datasets already in memory, one per
    site (e.g. another domain's reader), instead of loading ``data.site_dirs``; each must hold
    ``cfg.image``'s shapes (its ``spec``).
    """
    from tqdm import tqdm

    from secgan.data.dataset import load_site
    from secgan.gan.checkpoint import checkpoint_file, load_checkpoint

    from coordinator.build import build_generator_core, save_generator_core

    check_inprocess_config(cfg)
    out_dir = Path(out_dir)
    ck_dir = out_dir / "checkpoint"
    existing = checkpoint_file(ck_dir).is_file()
    if existing and not resume:
        raise ConfigError(f"{out_dir} already holds a checkpoint: pass --resume to continue it, or choose another folder")
    if resume and not existing:
        raise ConfigError(f"{out_dir}: nothing to resume (no checkpoint)")
    out_dir.mkdir(parents=True, exist_ok=True)

    if datasets is None:
        datasets = [
            load_site(Path(d), split=cfg.data.split, image_size=cfg.image.size, image=cfg.image,
                      **cfg.data.load_options())
            for d in cfg.data.site_dirs
        ]
    for k, ds in enumerate(datasets):
        spec = getattr(ds, "spec", None)
        if spec is not None and spec != cfg.image:
            raise ConfigError(f"site-{k + 1}'s dataset holds images of another spec than image.* ({spec})")
    learners = _build_learners(cfg, datasets, out_dir)
    core, start_at = build_generator_core(cfg, load_checkpoint(ck_dir) if resume else None,
                                          moments=_site_moments(cfg, learners))
    start, rnd = start_at.step, start_at.round  # rounds always advance, steps only when G was updated
    status = {name: {"steps_served": 0, "refusals": {}, "active": True, "epsilon": None} for name in learners}
    if resume:
        saved = start_at.meta.get("sites")
        if not isinstance(saved, dict):
            raise DataError(f"{ck_dir}: checkpoint lacks the runner's site status")
        if set(saved) != set(status):
            raise ConfigError(f"{ck_dir}: the checkpoint has sites {sorted(saved)}, the config {sorted(status)}")
        status = saved

    def save(step: int) -> None:
        for learner in learners.values():
            learner.save()
        save_generator_core(ck_dir, core, cfg, step=step, round=rnd, meta={"sites": status})

    t0 = time.perf_counter()
    step = start
    stopped = "completed"
    idle = 0
    bar = tqdm(total=cfg.train.steps, initial=start, disable=not progress, desc="train", unit="step")
    try:
        while step < cfg.train.steps:
            if stop_at is not None and step >= stop_at:
                stopped = "stopped_early"
                break
            active = [n for n, s in status.items() if s["active"]]
            if not active:
                stopped = "no_site_left"
                break
            for name in active:
                batch = core.make_batch(run_id=cfg.run_id, round=rnd, step=step, site=name)
                reply = learners[name].serve(batch)
                if isinstance(reply, GradientReply):
                    core.apply(reply, site=name)
                    status[name]["steps_served"] += 1
                    status[name]["epsilon"] = learners[name].epsilon()  # in-process: the site's own ledger
                elif isinstance(reply, Refusal):
                    core.drop(run_id=cfg.run_id, round=rnd, step=step, site=name)
                    status[name]["refusals"][reply.code] = status[name]["refusals"].get(reply.code, 0) + 1
                    if reply.final:
                        status[name]["active"] = False
                        log.info("site_withdrew", site=name, step=step, code=reply.code)
                else:
                    raise DataError(f"{name} answered with an unexpected {type(reply).__name__}")
            info = core.finish_step()
            rnd += 1
            if info["stepped"]:
                idle = 0
                step += 1
                bar.update(1)
                if step % cfg.train.checkpoint_every == 0 and step < cfg.train.steps:
                    save(step)
                    if cfg.previews:
                        _preview(core, cfg, out_dir / "previews" / f"step-{step:06d}.png")
            else:
                idle += 1
                if idle >= MAX_IDLE_ROUNDS:
                    stopped = "no_replies"
                    break
    finally:
        bar.close()
    save(step)
    if cfg.previews:
        _preview(core, cfg, out_dir / "previews" / f"step-{step:06d}.png")
    for name, learner in learners.items():
        status[name]["epsilon"] = learner.epsilon()
    summary = {
        "run_id": cfg.run_id,
        "steps_done": step,
        "steps_planned": cfg.train.steps,
        "started_at_step": start,
        "stopped": stopped,
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "privacy_mode": cfg.privacy.mode,
        "condition_source": cfg.data.condition_source,
        "sites": status,
        "checkpoint": "checkpoint/checkpoint.safetensors",
    }
    atomic_write_json(out_dir / "run.json", summary)
    log.info("run_done", steps=step, stopped=stopped, seconds=summary["wall_seconds"])
    return summary

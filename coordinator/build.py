"""Build the generator core, fresh or from a checkpoint, and write its checkpoints: one recipe for
the coordinator service and the in-process runner alike.

The resume rule (one, for both): a checkpoint continues only the run it was written for. Its stored
run config must agree with the new one on everything G's state depends on, the run id, the image,
the model, the condition source and bank, and the training recipe; only ``RESUMABLE_TRAIN_FIELDS``
(how long the run goes on and how often it checkpoints) may change. What the sites train is theirs
to check: each site's ledger refuses a restart with another policy or another dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secgan.core.config import to_dict
from secgan.core.errors import ConfigError, DataError
from secgan.core.logs import get_logger
from secgan.gan.checkpoint import Checkpoint
from secgan.run.config import RunConfig

from coordinator.core import GeneratorCore

log = get_logger(__name__)

# the train.* fields a resumed run may change (everything else G's state depends on must agree)
RESUMABLE_TRAIN_FIELDS = ("steps", "checkpoint_every")


@dataclass(frozen=True)
class ResumePoint:
    """Where a built core starts: step 0 of round 0, or a checkpoint's step, round and meta."""

    step: int = 0
    round: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def generator_recipe(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a stored run config (``to_dict(RunConfig)``) that G's state depends on."""
    train = {k: v for k, v in dict(config.get("train") or {}).items() if k not in RESUMABLE_TRAIN_FIELDS}
    data = dict(config.get("data") or {})
    return {"run_id": config.get("run_id"), "image": _image_as_spec(config.get("image")), "model": config.get("model"),
            "train": train, "data.condition_source": data.get("condition_source"), "data.bank_dir": data.get("bank_dir")}


def _image_as_spec(image: Any) -> Any:
    """A stored image table with every field of the spec (a checkpoint written before a field existed
    holds its default), so an old brain checkpoint and a new brain config agree."""
    from secgan.core.config import load_dataclass
    from secgan.core.spec import ImageSpec

    try:
        return to_dict(load_dataclass(ImageSpec, image or {}, prefix="image."))
    except ConfigError:
        return image


def check_resumable(config: RunConfig, checkpoint: Checkpoint) -> None:
    """The resume rule (module doc): ConfigError naming what differs."""
    if not isinstance(checkpoint.config, dict):
        raise DataError(f"{checkpoint.path}: checkpoint has no run config; refusing to resume")
    stored, wanted = generator_recipe(checkpoint.config), generator_recipe(to_dict(config))
    differ = []
    for key, value in wanted.items():
        old = stored.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            differ += [f"{key}.{k}" for k in sorted(set(value) | set(old)) if value.get(k) != old.get(k)]
        elif value != old:
            differ.append(key)
    if differ:
        raise ConfigError(f"{checkpoint.path}: the checkpoint was written with a different run config "
                          f"({', '.join(differ)} differ); refusing to resume")


def build_generator_core(
    config: RunConfig,
    checkpoint: Checkpoint | None,
    *,
    moments: dict[str, np.ndarray] | None = None,
) -> tuple[GeneratorCore, ResumePoint]:
    """G, its optimiser, the condition source and the core's RNG from ``config``; with a
    ``checkpoint`` (already loaded), resumed from it under the resume rule, else a fresh run (from
    ``train.init_from``'s pretrained G when given). ``moments``: the sites' averaged DP statistics,
    the target of G's moment-matching term (``train.stats_weight``)."""
    from secgan.gan.conditions import build_condition_source
    from secgan.gan.models import build_generator

    train, device = config.train, torch.device(config.device)
    G = build_generator(config.model, config.image, seed=train.seed).to(device)
    optimizer = torch.optim.Adam(G.parameters(), lr=train.lr_g, betas=(train.beta1, train.beta2))
    rng = torch.Generator().manual_seed(train.seed)
    conditions = build_condition_source(config.data.condition_source, size=config.image.size,
                                        bank_dir=Path(config.data.bank_dir) if config.data.bank_dir else None,
                                        image=config.image)
    core = GeneratorCore(G, optimizer, conditions, batch_size=train.batch_size, noise_dim=config.model.noise_dim,
                         generator=rng, device=device, average=train.g_average, moments=moments,
                         moment_weight=train.stats_weight, image=config.image)
    if checkpoint is None:
        if train.init_from:  # a fresh run starts from the pretrained G; a resumed one never
            from secgan.gan.pretrained import init_generator

            init_generator(train.init_from, G, model=config.model, image=config.image, average=core.G_average)
        return core, ResumePoint()
    from secgan.gan.checkpoint import restore_optimizer

    check_resumable(config, checkpoint)
    G.load_state_dict(checkpoint.generator_state)
    core.restore_average(checkpoint.average_state)
    restore_optimizer(optimizer, checkpoint.optimizer_state, where=checkpoint.path)
    state = checkpoint.rng_state.get("core")
    try:
        rng.set_state(state.to(torch.uint8))
        round_number = int(checkpoint.meta.get("round", checkpoint.step))
    except (AttributeError, RuntimeError, TypeError, ValueError) as exc:
        raise DataError(f"{checkpoint.path}: checkpoint lacks the generator core's state ({exc})") from None
    log.info("resumed", step=checkpoint.step, round=round_number)
    return core, ResumePoint(step=checkpoint.step, round=round_number, meta=dict(checkpoint.meta))


def save_generator_core(path: str | Path, core: GeneratorCore, config: RunConfig, *, step: int, round: int,
                        meta: dict[str, Any] | None = None) -> Path:
    """Atomically checkpoint the core (G, optimiser, moving average, RNG) with its run config, so
    :func:`build_generator_core` can resume it. ``meta``: what the caller keeps beside it."""
    from secgan.gan.checkpoint import save_checkpoint

    return save_checkpoint(path, generator=core.G, optimizer=core.optimizer, step=step,
                           rng_state={"core": core.generator.get_state()},
                           meta={**(meta or {}), "run_id": config.run_id, "round": round},
                           config=to_dict(config), average=core.G_average)

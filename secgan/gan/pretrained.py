"""Public pretraining: G and D trained non-privately on a public cohort, then used as the starting
point of private runs (``train.init_from``).

A pretrain folder (``secgan pretrain``) holds
- the in-process run that trained it (``checkpoint/``, ``sites/site-1/``, ``run.json``: one
  simulated site over the public cohort, privacy mode "off", the run's model settings);
- ``generator.safetensors``, ``generator-average.safetensors`` (when the run kept a moving average)
  and ``discriminator.safetensors``: weights only, safetensors, never pickle;
- ``pretrain.json``, written last (its presence means "done"): what was trained on (the public
  cohort's folder name, patient count and salted fingerprint), the model and image settings, the
  steps, and a recommended ``clip_norm``: quantiles of the per-row gradient norms of the pretrained D
  on public rows, the rows a site would clip, for 0, 1, 2 frozen stages.

Public data costs no privacy: the pretrained weights are data-independent of every site, so
starting a DP run from them changes no accounting. Loading checks the recorded model settings and
every tensor's shape against the run's model and refuses a mismatch with a message naming it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from secgan.core.errors import ConfigError, DataError
from secgan.core.logs import get_logger

log = get_logger(__name__)

INFO_FILE = "pretrain.json"
GENERATOR_FILE = "generator.safetensors"
AVERAGE_FILE = "generator-average.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
FORMAT = 1
FINGERPRINT_SALT = b"secgan.pretrained.v1"
# the model settings each network's shape depends on (checked before any tensor is read)
GENERATOR_KEYS = ("g_width", "g_depth", "noise_dim", "noise_mode", "g_norm", "norm_groups")
DISCRIMINATOR_KEYS = ("d_width", "d_layers", "d_arch", "norm_groups")
# frozen-stage counts the clip-norm calibration reports
CALIBRATED_FREEZES = (0, 1, 2)
QUANTILES = {"q10": 0.10, "q25": 0.25, "median": 0.50, "q75": 0.75, "q90": 0.90}


# ------------------------------------------------------------------------------------ reading


def read_info(folder: str | Path) -> dict[str, Any]:
    """``pretrain.json`` of a finished pretrain folder (ConfigError naming what is missing)."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise ConfigError(f"train.init_from: {folder} is not a finished pretrain folder (no {INFO_FILE}; "
                          f"`secgan pretrain` writes it last)")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{path}: not a pretrain record of format {FORMAT}")
    return info


def check_compatible(info: dict[str, Any], model, image, *, part: str, where: str | Path) -> None:
    """Refuse (ConfigError) weights pretrained for another shape of ``part`` ("generator" or
    "discriminator"), naming every setting that differs.

    The record's settings are read the way a checkpoint's are (``load_dataclass``): a key the record
    lacks, because it was written before the key existed, takes its default, which is what the
    record's weights were trained with (a brain pretraining from before ``image.condition`` existed
    fits a brain run)."""
    keys = GENERATOR_KEYS if part == "generator" else DISCRIMINATOR_KEYS
    from secgan.core.config import load_dataclass, to_dict

    try:
        saved_model = to_dict(load_dataclass(type(model), info.get("model") or {}, prefix="model."))
        saved_image = to_dict(load_dataclass(type(image), info.get("image") or {}, prefix="image."))
    except ConfigError as exc:
        raise ConfigError(f"train.init_from: {where}: the pretrain record's settings are invalid ({exc})") from None
    ours_model, ours_image = to_dict(model), to_dict(image)
    diffs = [f"model.{k} {saved_model.get(k)!r} (pretrained) vs {ours_model[k]!r} (this run)"
             for k in keys if saved_model.get(k) != ours_model[k]]
    diffs += [f"image.{k} {saved_image.get(k)!r} (pretrained) vs {v!r} (this run)"
              for k, v in ours_image.items() if saved_image.get(k) != v]
    if diffs:
        raise ConfigError(f"train.init_from: {where}: the pretrained {part} does not fit this run's model: "
                          + "; ".join(diffs))


def _load_weights(path: Path, module: nn.Module, *, part: str) -> None:
    from secgan.gan.checkpoint import load_module_state

    if not path.is_file():
        raise ConfigError(f"train.init_from: {path.parent}: {path.name} is missing")
    try:
        load_module_state(path, module, None)
    except DataError as exc:  # a tensor of another shape or name: say which
        raise ConfigError(f"train.init_from: the pretrained {part} does not fit this run's model: {exc}") from None


def init_generator(folder: str | Path, G: nn.Module, *, model, image, average: nn.Module | None = None) -> None:
    """Load the pretrained G into ``G`` (and its moving average, or G itself when the pretraining
    kept none, into ``average``)."""
    folder = Path(folder)
    info = read_info(folder)
    check_compatible(info, model, image, part="generator", where=folder)
    _load_weights(folder / GENERATOR_FILE, G, part="generator")
    if average is not None:
        avg = folder / AVERAGE_FILE
        _load_weights(avg if avg.is_file() else folder / GENERATOR_FILE, average, part="generator")
    log.info("generator_initialised", source="pretrained", steps=info.get("steps"))


def init_discriminator(folder: str | Path, D: nn.Module, *, model, image) -> None:
    """Load the pretrained D into ``D`` (a plain module, before any Opacus wrapping)."""
    folder = Path(folder)
    info = read_info(folder)
    check_compatible(info, model, image, part="discriminator", where=folder)
    _load_weights(folder / DISCRIMINATOR_FILE, D, part="discriminator")
    log.info("discriminator_initialised", source="pretrained", steps=info.get("steps"))


# ------------------------------------------------------------------------------------ clip norm


def per_row_gradient_norms(D: nn.Module, cond: torch.Tensor, img: torch.Tensor, *, loss: str, fake: bool,
                           freezes: tuple[int, ...] = CALIBRATED_FREEZES) -> dict[int, np.ndarray]:
    """Per-row L2 norm of D's loss gradient, one row at a time (what DP-SGD clips), over the
    parameters left trainable when the first k stages are frozen, for each k in ``freezes``."""
    from secgan.gan.models import discriminator_stages
    from secgan.gan.step import discriminator_loss

    stages = discriminator_stages(D)
    owner = {id(p): i for i, st in enumerate(stages) for p in st.parameters()}
    params = list(D.parameters())
    no_cond, no_img = cond[:0], img[:0]  # the other side's empty batch (the image and condition shapes differ)
    sq = np.zeros((cond.shape[0], len(stages)))
    D.train()
    for r in range(cond.shape[0]):
        c, x = cond[r:r + 1], img[r:r + 1]
        rows = (discriminator_loss(D, no_cond, no_img, c, x, loss=loss) if fake
                else discriminator_loss(D, c, x, no_cond, no_img, loss=loss))
        grads = torch.autograd.grad(rows.sum(), params, allow_unused=True)
        for p, g in zip(params, grads):
            if g is not None:
                sq[r, owner[id(p)]] += float(g.pow(2).sum())
    return {k: np.sqrt(sq[:, k:].sum(axis=1)) for k in freezes if k < len(stages)}


def _quantiles(values: np.ndarray) -> dict[str, float]:
    out = {name: round(float(np.quantile(values, q)), 6) for name, q in QUANTILES.items()}
    out["max"] = round(float(values.max()), 6)
    out["rows"] = int(values.size)
    return out


def calibrate_clip_norm(D: nn.Module, G: nn.Module, dataset, cfg, *, draws: int = 4, seed: int = 0) -> dict[str, Any]:
    """Quantiles of per-row gradient norms of the pretrained D on public rows: ``draws`` slices per
    public patient (real rows, one patient one row as at a site) and as many fakes of the pretrained
    G on procedural conditions. ``recommended``: the median over real rows with nothing frozen."""
    from secgan.gan.conditions import build_condition_source

    rng = np.random.default_rng(seed)
    real_img, real_cond = [], []
    for _ in range(draws):
        im, co = dataset.sample_slices(list(range(dataset.n_patients)), generator=rng)
        real_img.append(np.asarray(im, np.float32))
        real_cond.append(np.asarray(co, np.float32))
    img = torch.as_tensor(np.concatenate(real_img))
    cond = torch.as_tensor(np.concatenate(real_cond))
    gen = torch.Generator().manual_seed(seed)
    source = build_condition_source("procedural", size=cfg.image.size, image=cfg.image)
    with torch.no_grad():
        f_cond = source.draw(img.shape[0], generator=gen).to(torch.float32)
        f_img = G.eval()(f_cond, torch.randn(img.shape[0], cfg.model.noise_dim, generator=gen))
    real = per_row_gradient_norms(D, cond, img, loss=cfg.train.loss, fake=False)
    fakes = per_row_gradient_norms(D, f_cond, f_img, loss=cfg.train.loss, fake=True)
    by_freeze = {str(k): {"real_rows": _quantiles(real[k]), "fake_rows": _quantiles(fakes[k])} for k in real}
    return {
        "recommended": by_freeze["0"]["real_rows"]["median"],
        "rule": "median per-row gradient norm of the pretrained D over public real rows (nothing frozen)",
        "by_frozen_stages": by_freeze,
    }


# ------------------------------------------------------------------------------------ pretraining

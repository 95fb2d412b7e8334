"""One downstream evaluation: train the U-Net on a source for each seed, score it on the real test set.

:class:`Workbench` keeps the arrays of one data root in memory so a sweep reads each NIfTI once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from secgan.core.errors import ConfigError
from secgan.evaluation.metrics import summarise_runs
from secgan.evaluation.segmenter import (
    HeldOutPatient,
    SegmenterConfig,
    evaluate_segmenter,
    predict_regions,
    step_budget,
    train_segmenter,
)
from secgan.evaluation.sources import (
    SourceSpec,
    load_real_slices,
    load_test_patients,
    site_dirs,
    synthetic_pairs,
)
from secgan.core.logs import get_logger
from secgan.core.spec import IMAGE_CHANNELS

log = get_logger(__name__)


@dataclass
class Workbench:
    """A data root's real slices, loaded lazily and cached (train per site, test patients)."""

    data_root: Path
    image_size: int
    # further keyword arguments of load_site (skip_bad, layout, ...)
    load_options: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    def sites(self) -> list[int]:
        return list(site_dirs(self.data_root))

    def real(self, site: int | None, *, split: str = "train", modalities: tuple[str, ...] = IMAGE_CHANNELS):
        """(images, conds, segs) of tumour-bearing slices."""
        key = ("real", site, split, modalities)
        if key not in self._cache:
            self._cache[key] = load_real_slices(
                self.data_root, site=site, split=split, image_size=self.image_size, modalities=modalities,
                load_options=self.load_options,
            )
        return self._cache[key]

    def steps_for(self, config: SegmenterConfig) -> int | None:
        """The shared optimiser-step budget (``config.equal_steps``), or None for epochs over own data."""
        return step_budget(config, len(self.real(None)[0])) if config.equal_steps else None

    def test_patients(self, modalities: tuple[str, ...] = IMAGE_CHANNELS) -> list[HeldOutPatient]:
        key = ("test", modalities)
        if key not in self._cache:
            self._cache[key] = load_test_patients(self.data_root, image_size=self.image_size, modalities=modalities,
                                                  load_options=self.load_options)
        return self._cache[key]


def training_set(
    spec: SourceSpec,
    bench: Workbench,
    *,
    seed: int,
    checkpoint: Path | None,
    n_synthetic: int | None,
    condition_source: str = "procedural",
    bank_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(images, segs) for ``spec``; synthetic pairs are drawn with ``seed`` (fresh per seed).

    ``n_synthetic`` None: a real+synthetic source gets one synthetic pair per real slice (1:1
    augmentation), a synthetic-only source as many pairs as Real-All has train slices.
    """
    images, segs = [], []
    if spec.real:
        im, _, sg = bench.real(spec.site)
        images.append(im)
        segs.append(sg)
    if spec.synthetic:
        if checkpoint is None:
            raise ConfigError(f"source {spec.name} needs a generator checkpoint")
        n = n_synthetic or (len(images[0]) if images else len(bench.real(None)[0]))
        im, sg = synthetic_pairs(
            checkpoint, n=n, seed=seed, source=condition_source, bank_dir=bank_dir, image_size=bench.image_size
        )
        images.append(im)
        segs.append(sg)
    return np.concatenate(images), np.concatenate(segs)


def evaluate_source(
    spec: SourceSpec,
    bench: Workbench,
    *,
    seeds: Sequence[int],
    segmenter: SegmenterConfig,
    checkpoint: Path | None = None,
    n_synthetic: int | None = None,
    condition_source: str = "procedural",
    bank_dir: Path | None = None,
) -> dict:
    """Train on ``spec`` once per seed; returns the summary (``dice_mean`` ...) plus ``per_seed`` scores."""
    if not seeds:
        raise ConfigError("at least one seed is needed")
    test = bench.test_patients()
    runs, n_train = [], 0
    t0 = time.perf_counter()
    for seed in seeds:
        images, segs = training_set(
            spec, bench, seed=seed, checkpoint=checkpoint, n_synthetic=n_synthetic,
            condition_source=condition_source, bank_dir=bank_dir,
        )
        n_train = len(images)
        model = train_segmenter(images, segs, config=segmenter, seed=seed, steps=bench.steps_for(segmenter))
        scores = evaluate_segmenter(model, test, device=segmenter.device)
        log.info("segmenter_scored", source=spec.name, seed=seed, dice=round(scores["mean"]["dice"], 4))
        runs.append(scores)
    out = summarise_runs(runs)
    out.update(train_slices=n_train, train_steps=bench.steps_for(segmenter), test_patients=len(test), per_seed=runs,
               wall_seconds=round(time.perf_counter() - t0, 2))
    return out


def evaluate_missing_modality(
    bench: Workbench,
    *,
    site: int,
    modality: str,
    checkpoint: Path,
    seeds: Sequence[int],
    segmenter: SegmenterConfig,
    draws: int = 4,
) -> tuple[dict, dict]:
    """Site ``site`` without ``modality``: U-Net with the channel absent (-1) vs completed by G.

    Training images are completed from their reference label maps (known at training time). Test
    images are completed from label maps predicted by the absent-channel U-Net of the same seed (the
    test labels are never used as input). Both models are scored on every site's test patients with
    the channel absent, respectively completed. Returns (absent summary, completed summary).
    """
    from secgan.gan.checkpoint import load_checkpoint
    from secgan.evaluation.completion import complete_modality, conds_from_regions

    if modality not in IMAGE_CHANNELS:
        raise ConfigError(f"missing modality {modality!r} is not one of {', '.join(IMAGE_CHANNELS)}")
    present = tuple(m for m in IMAGE_CHANNELS if m != modality)
    G = load_checkpoint(checkpoint).build_generator()
    tr_images, tr_conds, tr_segs = bench.real(site, modalities=present)
    test = bench.test_patients(modalities=present)
    absent_runs, completed_runs = [], []
    for seed in seeds:
        steps = bench.steps_for(segmenter)
        absent = train_segmenter(tr_images, tr_segs, config=segmenter, seed=seed, steps=steps)
        absent_runs.append(evaluate_segmenter(absent, test, device=segmenter.device))
        tr_completed = complete_modality(G, tr_images, tr_conds, missing=[modality], draws=draws, seed=seed)
        completed = train_segmenter(tr_completed, tr_segs, config=segmenter, seed=seed, steps=steps)
        test_completed = []
        for i, p in enumerate(test):
            regions = predict_regions(absent, p.images, device=segmenter.device)
            conds = conds_from_regions(regions, p.images)
            filled = complete_modality(G, p.images, conds, missing=[modality], draws=draws, seed=seed * 100_003 + i)
            test_completed.append(HeldOutPatient(images=filled, segs=p.segs))
        completed_runs.append(evaluate_segmenter(completed, test_completed, device=segmenter.device))
    a, c = summarise_runs(absent_runs), summarise_runs(completed_runs)
    a.update(train_slices=len(tr_images), test_patients=len(test), per_seed=absent_runs)
    c.update(train_slices=len(tr_images), test_patients=len(test), per_seed=completed_runs)
    return a, c


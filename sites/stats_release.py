"""The site's one DP statistics release (``secgan.privacy.stats``): charged once, kept, then free."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secgan.core.fsio import atomic_write_json
from secgan.core.logs import get_logger
from secgan.privacy import stats as S
from secgan.privacy.recovery import STATS_KIND  # the release log's kind of the statistics release

log = get_logger("sites.learner")

STATS_FILE = "stats.json"  # the site's one DP statistics release, kept (post-processing from then on)


def release_stats_once(state_dir: Path, *, ledger: Any, release_log: Any, dataset: Any, noise_multiplier: float,
                       clip_norm: float, generator: np.random.Generator) -> dict[str, Any]:
    """The kept release from ``state_dir/stats.json``; else charge the ledger one (sigma_s, q = 1)
    Gaussian step, durably, BEFORE the noised sum is computed, log the release and keep it. A budget
    too small for it raises BudgetExhausted (from the ledger) and nothing is computed."""
    path = Path(state_dir) / STATS_FILE
    if path.exists():
        kept = json.loads(path.read_text())
        return {k: np.asarray(v) if isinstance(v, list) else v for k, v in kept.items()}
    eps = ledger.reserve_step(noise_multiplier=noise_multiplier, sample_rate=1.0)
    vectors = np.stack([S.patient_vector(dataset.images(i), dataset.conds(i)) for i in range(dataset.n_patients)])
    noised = S.noised_sum(vectors, clip_norm=clip_norm, noise_multiplier=noise_multiplier, generator=generator)
    del vectors
    release_log.append(step=-1, round=-1, run_id="stats", tensors={STATS_KIND: torch.as_tensor(noised)},
                       epsilon_after=eps)
    out = {**S.debias(noised), "classes": list(S.STATS_CLASSES)}
    atomic_write_json(path, {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in out.items()})
    log.info("site_stats_released", epsilon=eps, releases=ledger.releases)
    return out

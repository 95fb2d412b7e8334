"""The audit itself, on plain arrays: members, non-members and synthetic images in, results out.

No file is read here; the CLI glue (``audits.api``) loads the site's data, ledger and models and
calls :func:`audit_arrays`. Every random choice comes from generators derived from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from audits import membership as mia
from audits.cohort import Cohort, check_compatible, make_cohort
from audits.copies import CopySearchConfig, find_copies
from audits.features import EmbeddingConfig, pixel_features, train_embedding
from audits.memorisation import MemorisationConfig, memorisation_tests
from audits.stats import max_resolvable_epsilon
from secgan.core.config import rng
from secgan.core.errors import DataError
from secgan.core.logs import get_logger
from secgan.gan.inversion import DEFAULT_RESTARTS, DEFAULT_STEPS

log = get_logger(__name__)

# Tags that derive independent random streams from the one audit seed.
_TAGS = {"subsample": 1, "embedding": 2, "attacks": 3, "memorisation": 4, "projection": 5, "split": 6, "permutation": 7}


@dataclass(frozen=True)
class AuditConfig:
    seed: int = 0
    confidence: float = field(default=0.95, metadata=rng(min=0.5, max=0.999))
    delta: float = field(default=1e-5, metadata=rng(min=0.0, max=0.1))
    max_slices_per_patient: int = field(default=16, metadata=rng(min=1))
    max_synthetic: int = field(default=5000, metadata=rng(min=1))
    min_patients: int = field(default=4, metadata=rng(min=2))  # per side (members, non-members)
    domias_dims: int = field(default=8, metadata=rng(min=1))
    projection_restarts: int = field(default=DEFAULT_RESTARTS, metadata=rng(min=1))
    projection_steps: int = field(default=DEFAULT_STEPS, metadata=rng(min=1))
    projection_slices_per_patient: int = field(default=2, metadata=rng(min=1))
    device: str = "cpu"
    embedding: EmbeddingConfig = EmbeddingConfig()
    memorisation: MemorisationConfig = MemorisationConfig()
    copies: CopySearchConfig = CopySearchConfig()

    def stream(self, name: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, _TAGS[name]])

    def torch_seed(self, name: str) -> int:
        return int(self.stream(name).integers(2**62))


def cap_slices(c: Cohort, per_patient: int, g: np.random.Generator) -> Cohort:
    """At most ``per_patient`` slices per patient (random, sorted), so big volumes do not dominate."""
    keep = []
    for p in np.unique(c.groups):
        idx = np.nonzero(c.groups == p)[0]
        if len(idx) > per_patient:
            idx = np.sort(g.choice(idx, size=per_patient, replace=False))
        keep.append(idx)
    k = np.concatenate(keep)
    return Cohort(c.name, c.images[k], c.conds[k], c.groups[k])


def search_copies(members: Cohort, nonmembers: Cohort, others: Cohort | None, synthetic: Cohort,
                  config: AuditConfig) -> dict:
    """The copy search over EVERY real slice of the site (uncapped): members, non-members, others.
    ``_real`` keeps (set index, patient index within its cohort, slice index) per real image, for the annex."""
    cohorts = [members, nonmembers] + ([others] if others is not None else [])
    images, patients, sets, local = [], [], [], []
    offset = 0
    for s, c in enumerate(cohorts):
        ids, inv = np.unique(c.groups, return_inverse=True)
        images.append(c.images)
        patients.append(inv.reshape(-1) + offset)
        sets.append(np.full(len(c), s, dtype=np.int64))
        local.append(np.stack([np.full(len(c), s), c.groups, np.arange(len(c))], 1))
        offset += len(ids)
    out = find_copies(synthetic.images, np.concatenate(images), np.concatenate(patients), np.concatenate(sets),
                      config=config.copies, device=config.device)
    out["_real"] = np.concatenate(local)
    return out


def _attack_seeded(config: AuditConfig, name: str) -> np.random.Generator:
    return np.random.default_rng([config.seed, _TAGS["attacks"], sum(map(ord, name))])


def audit_arrays(
    members: Cohort,
    nonmembers: Cohort,
    synthetic: Cohort,
    *,
    config: AuditConfig = AuditConfig(),
    discriminator: torch.nn.Module | None = None,
    discriminator_absent_reason: str = "the site's discriminator was not available",
    generator: torch.nn.Module | None = None,
    noise_dim: int | None = None,
    generator_absent_reason: str = "no generator checkpoint given (--generator)",
    others: Cohort | None = None,
    cache_dir=None,
) -> dict:
    """Run every attack and memorisation test. Returns JSON-ready results plus ``_plots`` (arrays).

    ``others`` are real images of the site's other patients (neither training nor held-out): the
    copy search looks for them too, as it does for every slice of the members and non-members.
    ``cache_dir``: where the trained embedding of these real images is cached (keyed by their hash).
    """
    for c, label in ((members, "members"), (nonmembers, "non-members")):
        if c.n_patients < config.min_patients:
            raise DataError(f"{label}: need at least {config.min_patients} patients for an audit, got {c.n_patients}")
    check_compatible(members, nonmembers, synthetic, *([others] if others is not None else []))
    if len(synthetic) > config.max_synthetic:
        k = np.sort(config.stream("subsample").choice(len(synthetic), size=config.max_synthetic, replace=False))
        synthetic = make_cohort("synthetic", synthetic.images[k], synthetic.conds[k])
    copies = search_copies(members, nonmembers, others, synthetic, config)
    g_sub = config.stream("subsample")
    members = cap_slices(members, config.max_slices_per_patient, g_sub)
    nonmembers = cap_slices(nonmembers, config.max_slices_per_patient, g_sub)

    # Feature spaces.
    emb = train_embedding(
        np.concatenate([members.images, nonmembers.images]),
        seed=config.torch_seed("embedding"),
        config=config.embedding,
        cache_dir=cache_dir,
    )
    spaces = {
        "pixels": tuple(pixel_features(c.images) for c in (members, nonmembers, synthetic)),
        "embedding": tuple(emb.transform(c.images) for c in (members, nonmembers, synthetic)),
    }
    log.info("audit_features", spaces=len(spaces), member_slices=len(members), nonmember_slices=len(nonmembers),
             synthetic_count=len(synthetic))

    # Membership scores (higher = member).
    mg, ng = members.groups, nonmembers.groups
    raw: list[tuple[str, str, np.ndarray, np.ndarray, dict]] = []
    nn_kw = {"device": config.device}
    for space, (fm, fn, fs) in spaces.items():
        sm, sn = mia.gan_leaks(fm, fn, fs, **nn_kw)
        raw.append(("gan_leaks", space, sm, sn, {}))
        sm, sn = mia.gan_leaks_calibrated(fm, fn, fs, member_groups=mg, nonmember_groups=ng,
                                          rng=_attack_seeded(config, f"cal-{space}"), **nn_kw)
        raw.append(("gan_leaks_cal", space, sm, sn, {"reference": "non-member patients, leave one patient out"}))
    fm, fn, fs = spaces["embedding"]
    sm, sn, info = mia.domias(fm, fn, fs, member_groups=mg, nonmember_groups=ng,
                              rng=_attack_seeded(config, "domias"), dims=config.domias_dims)
    raw.append(("domias", "embedding", sm, sn, info))
    skipped: list[dict] = []
    if discriminator is not None:
        sm = mia.discriminator_scores(discriminator, members.images, members.conds)
        sn = mia.discriminator_scores(discriminator, nonmembers.images, nonmembers.conds)
        raw.append(("discriminator", "model", sm, sn, {}))
    else:
        skipped.append(mia.not_run("discriminator", discriminator_absent_reason))
    if generator is not None:
        if not noise_dim:
            raise DataError("projection attack: the generator's noise dimension is unknown")
        g_proj = config.stream("projection")
        pm = cap_slices(members, config.projection_slices_per_patient, g_proj)
        pn = cap_slices(nonmembers, config.projection_slices_per_patient, g_proj)
        tg = torch.Generator().manual_seed(config.torch_seed("projection"))
        kw = {"noise_dim": noise_dim, "generator": tg, "restarts": config.projection_restarts, "steps": config.projection_steps}
        sm = mia.projection_scores(generator, pm.images, pm.conds, **kw)
        sn = mia.projection_scores(generator, pn.images, pn.conds, **kw)
        raw.append(("projection", "model", sm, sn, {"restarts": config.projection_restarts, "steps": config.projection_steps,
                                                     "groups": (pm.groups, pn.groups)}))
    else:
        skipped.append(mia.not_run("projection", generator_absent_reason))

    # Bonferroni over the attacks: the largest per-attack bound is then a joint lower bound.
    k = len(raw)
    eps_conf = 1.0 - (1.0 - config.confidence) / k
    ev = mia.EvalConfig(delta=config.delta, confidence=config.confidence, epsilon_confidence=eps_conf)
    attacks = []
    for name, space, sm, sn, info in raw:
        groups = info.pop("groups", (mg, ng))
        res = mia.evaluate_attack(name, sm, groups[0], sn, groups[1], rng=config.stream("split"), config=ev, details=info)
        res["space"] = space
        res["label"] = f"{name}/{space}" if space != "model" else name
        attacks.append(res)
    attacks += skipped

    memo = {}
    for space, (fm, fn, fs) in spaces.items():
        memo[space] = memorisation_tests(fm, fn, fs, rng=config.stream("memorisation"), config=config.memorisation,
                                         device=config.device, train_groups=mg, hold_groups=ng,
                                         perm_rng=config.stream("permutation"))

    run = [a for a in attacks if a["status"] == "run"]
    best = max(run, key=lambda a: a["epsilon"]["epsilon_lb"])
    n_pos = min(a["split"]["evaluation"]["members"] for a in run)
    n_neg = min(a["split"]["evaluation"]["nonmembers"] for a in run)
    return {
        "attacks": attacks,
        "memorisation": memo,
        "copies": copies,
        "epsilon": {
            "empirical_lb": best["epsilon"]["epsilon_lb"],
            "best_attack": best["label"],
            "confidence": config.confidence,
            "per_attack_confidence": eps_conf,
            "delta_used": config.delta,
            "max_resolvable": max_resolvable_epsilon(n_pos=n_pos, n_neg=n_neg, delta=config.delta, confidence=eps_conf),
            "n_eval_members": n_pos,
            "n_eval_nonmembers": n_neg,
        },
        "sizes": {
            "member_patients": members.n_patients,
            "member_slices": len(members),
            "nonmember_patients": nonmembers.n_patients,
            "nonmember_slices": len(nonmembers),
            "synthetic": len(synthetic),
            "other_patients": 0 if others is None else others.n_patients,
            "image_shape": list(members.images.shape[1:]),
        },
        "feature_spaces": {"pixels": {"name": "pixels", "dims": int(spaces["pixels"][0].shape[1])},
                           "embedding": emb.describe()},
        "_members": members,
        "_synthetic": synthetic,
    }

"""Membership-inference attacks and their evaluation. Member = positive throughout.

Every attack gives each real slice a score (higher = "more likely a training member"); scores are
pooled per patient by their maximum (the attacker's best evidence about that patient), and every
rate, interval and split is over patients.

Attacks (name, version):
- ``gan_leaks`` v1 (Chen et al. 2020, full black-box): minus the distance to the nearest synthetic sample.
- ``gan_leaks_cal`` v1: the same, calibrated by the distance to a reference set of real non-member
  data: score = d(x, reference) - d(x, synthetic). The reference set is every non-member patient
  except one: a non-member query leaves out its own patient; a member query leaves out one
  non-member patient drawn at random, so every query sees a reference of the same size.
- ``domias`` v1 (van Breugel et al. 2023 style): log KDE density of the synthetic set minus log KDE
  density of the same leave-one-patient-out reference, in the embedding reduced to a few principal axes.
- ``discriminator`` v1: mean patch logit of the site's own discriminator on the real (condition, image) pair.
- ``projection`` v1: minus the best reconstruction error of the real image by the generator under its
  own label map, optimising the noise vector z (few restarts, few Adam steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from audits import stats
from audits.neighbours import nearest, pairwise_sq_dists_blocks
from secgan.core.errors import DataError
from secgan.gan.inversion import DEFAULT_BATCH, DEFAULT_LR, DEFAULT_RESTARTS, DEFAULT_STEPS, invert

ATTACK_VERSIONS = {"gan_leaks": 1, "gan_leaks_cal": 1, "domias": 1, "discriminator": 1, "projection": 1}
FPR_TARGETS = (0.01, 0.001)


# ---------------------------------------------------------------------------------------------
# reference sets (leave one non-member patient out)


def reference_exclusions(member_groups: np.ndarray, nonmember_groups: np.ndarray, *, rng: np.random.Generator):
    """Per query slice, the non-member patient left out of its reference set."""
    nm_patients = np.unique(nonmember_groups)
    if len(nm_patients) < 2:
        raise DataError("calibrated attacks need at least 2 non-member patients (one is always left out)")
    m_patients = np.unique(member_groups)
    drawn = dict(zip(m_patients.tolist(), rng.choice(nm_patients, size=len(m_patients)).tolist()))
    excl_members = np.array([drawn[g] for g in member_groups.tolist()], dtype=np.int64)
    return excl_members, nonmember_groups.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# distance and density attacks


def gan_leaks(f_members: np.ndarray, f_nonmembers: np.ndarray, f_synth: np.ndarray, **kw) -> tuple[np.ndarray, np.ndarray]:
    dm, _ = nearest(f_members, f_synth, **kw)
    dn, _ = nearest(f_nonmembers, f_synth, **kw)
    return -dm[:, 0], -dn[:, 0]


def gan_leaks_calibrated(
    f_members, f_nonmembers, f_synth, *, member_groups, nonmember_groups, rng: np.random.Generator, **kw
) -> tuple[np.ndarray, np.ndarray]:
    excl_m, excl_n = reference_exclusions(member_groups, nonmember_groups, rng=rng)
    sm, sn = gan_leaks(f_members, f_nonmembers, f_synth, **kw)
    rm, _ = nearest(f_members, f_nonmembers, ref_groups=nonmember_groups, exclude_group=excl_m, **kw)
    rn, _ = nearest(f_nonmembers, f_nonmembers, ref_groups=nonmember_groups, exclude_group=excl_n, **kw)
    return rm[:, 0] + sm, rn[:, 0] + sn


def _pca(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    keep = max(1, min(dims, int((s > 1e-8 * max(s[0], 1e-30)).sum()))) if len(s) else 1
    scale = s[:keep] / np.sqrt(max(len(x) - 1, 1))
    scale[scale <= 0] = 1.0
    return mean, (vt[:keep].T / scale)  # whitening projection


def kde_logpdf(
    queries: np.ndarray,
    points: np.ndarray,
    *,
    bandwidth: float,
    point_groups: np.ndarray | None = None,
    exclude_group: np.ndarray | None = None,
) -> np.ndarray:
    """Log density of an isotropic Gaussian KDE (whitened space) at each query, optionally leaving a group out."""
    d = points.shape[1]
    q = torch.as_tensor(queries, dtype=torch.float64)
    p = torch.as_tensor(points, dtype=torch.float64)
    out = np.empty(len(queries))
    pg = None if point_groups is None else torch.as_tensor(point_groups)
    eg = None if exclude_group is None else torch.as_tensor(exclude_group)
    log_norm = -0.5 * d * np.log(2 * np.pi * bandwidth**2)
    for i0, d2 in pairwise_sq_dists_blocks(q, p, chunk=1024):
        logk = -0.5 * d2 / bandwidth**2
        count = torch.full((d2.shape[0],), float(p.shape[0]), dtype=torch.float64)
        if pg is not None:
            mask = eg[i0 : i0 + d2.shape[0], None] == pg[None, :]
            logk = logk.masked_fill(mask, float("-inf"))
            count = count - mask.sum(1)
        out[i0 : i0 + d2.shape[0]] = (torch.logsumexp(logk, 1) - torch.log(count)).numpy() + log_norm
    return out


def domias(
    f_members, f_nonmembers, f_synth, *, member_groups, nonmember_groups, rng: np.random.Generator, dims: int = 8
) -> tuple[np.ndarray, np.ndarray, dict]:
    excl_m, excl_n = reference_exclusions(member_groups, nonmember_groups, rng=rng)
    mean, proj = _pca(np.concatenate([f_synth, f_nonmembers]).astype(np.float64), dims)
    z = lambda f: (np.asarray(f, dtype=np.float64) - mean) @ proj  # noqa: E731
    zs, zr, zm, zn = z(f_synth), z(f_nonmembers), z(f_members), z(f_nonmembers)
    k = zs.shape[1]
    # Scott's rule on whitened data, one bandwidth per density.
    bw_s = len(zs) ** (-1.0 / (k + 4))
    bw_r = max(len(zr) - 1, 1) ** (-1.0 / (k + 4))
    ps_m = kde_logpdf(zm, zs, bandwidth=bw_s)
    ps_n = kde_logpdf(zn, zs, bandwidth=bw_s)
    pr_m = kde_logpdf(zm, zr, bandwidth=bw_r, point_groups=nonmember_groups, exclude_group=excl_m)
    pr_n = kde_logpdf(zn, zr, bandwidth=bw_r, point_groups=nonmember_groups, exclude_group=excl_n)
    return ps_m - pr_m, ps_n - pr_n, {"pca_dims": int(k), "bandwidth_synthetic": bw_s, "bandwidth_reference": bw_r}


# ---------------------------------------------------------------------------------------------
# model-based attacks


@torch.no_grad()
def discriminator_scores(D: torch.nn.Module, images: np.ndarray, conds: np.ndarray, *, batch: int = 256) -> np.ndarray:
    D.eval()
    out = []
    for i in range(0, len(images), batch):
        img = torch.as_tensor(images[i : i + batch], dtype=torch.float32)
        cond = torch.as_tensor(conds[i : i + batch], dtype=torch.float32)
        logits = D(cond, img)
        out.append(logits.reshape(logits.shape[0], -1).mean(1).double())
    return torch.cat(out).numpy()


def projection_scores(
    G: torch.nn.Module,
    images: np.ndarray,
    conds: np.ndarray,
    *,
    noise_dim: int,
    generator: torch.Generator,
    restarts: int = DEFAULT_RESTARTS,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    batch: int = DEFAULT_BATCH,
) -> np.ndarray:
    """Minus the best per-image MSE of G(cond, z) to the image over z (restarts x Adam steps;
    :func:`secgan.gan.inversion.invert`, G frozen and left as it was)."""
    best, _ = invert(G, images, conds, noise_dim=noise_dim, generator=generator, restarts=restarts, steps=steps,
                     lr=lr, batch=batch)
    return -best


# ---------------------------------------------------------------------------------------------
# evaluation


def per_patient(scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(patient ids, max score per patient)."""
    scores = np.asarray(scores, dtype=np.float64)
    ids, inv = np.unique(groups, return_inverse=True)
    out = np.full(len(ids), -np.inf)
    np.maximum.at(out, inv, scores)
    return ids, out


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    h = (n + 1) // 2
    return np.sort(perm[:h]), np.sort(perm[h:])


@dataclass(frozen=True)
class EvalConfig:
    delta: float = 1e-5
    confidence: float = 0.95  # Clopper-Pearson intervals on reported rates
    epsilon_confidence: float = 0.95  # the epsilon bound (core.py lowers it per attack, Bonferroni)
    roc_points: int = 200


def _downsample_roc(fpr: np.ndarray, tpr: np.ndarray, points: int) -> tuple[list[float], list[float]]:
    if len(fpr) <= points:
        return fpr.tolist(), tpr.tolist()
    idx = np.unique(np.r_[np.linspace(0, len(fpr) - 1, points).astype(int), len(fpr) - 1])
    return fpr[idx].tolist(), tpr[idx].tolist()


def evaluate_attack(
    name: str,
    member_scores: np.ndarray,
    member_groups: np.ndarray,
    nonmember_scores: np.ndarray,
    nonmember_groups: np.ndarray,
    *,
    rng: np.random.Generator,
    config: EvalConfig = EvalConfig(),
    details: dict | None = None,
) -> dict:
    """AUC and ROC on all patients; thresholds chosen on a calibration half, rates on the evaluation half."""
    _, pm = per_patient(member_scores, member_groups)
    _, pn = per_patient(nonmember_scores, nonmember_groups)
    if len(pm) < 2 or len(pn) < 2:
        raise DataError(f"{name}: need at least 2 member and 2 non-member patients, got {len(pm)} and {len(pn)}")
    scores = np.r_[pm, pn]
    labels = np.r_[np.ones(len(pm), bool), np.zeros(len(pn), bool)]
    auc, auc_p = stats.auc_score(scores, labels)
    fpr, tpr, _ = stats.roc_curve(scores, labels)
    roc_f, roc_t = _downsample_roc(fpr, tpr, config.roc_points)

    cal_m, ev_m = _halves(len(pm), rng)
    cal_n, ev_n = _halves(len(pn), rng)
    pos_cal, pos_ev, neg_cal, neg_ev = pm[cal_m], pm[ev_m], pn[cal_n], pn[ev_n]

    at_fpr = {}
    for target in FPR_TARGETS:
        t = stats.threshold_at_fpr(neg_cal, target)
        tp, fp = int((pos_ev >= t).sum()), int((neg_ev >= t).sum())
        tpr_ci = stats.clopper_pearson(tp, len(pos_ev), confidence=config.confidence)
        fpr_ci = stats.clopper_pearson(fp, len(neg_ev), confidence=config.confidence)
        at_fpr[f"{target:g}"] = {
            "target_fpr": target,
            "threshold": t if np.isfinite(t) else None,
            "tpr": tp / len(pos_ev),
            "tpr_ci": list(tpr_ci),
            "fpr": fp / len(neg_ev),
            "fpr_ci": list(fpr_ci),
            # with n non-members per half the smallest non-zero FPR one can aim at (and measure) is 1/n
            "resolvable": target >= 1.0 / min(len(neg_cal), len(neg_ev)),
        }

    ec = config.epsilon_confidence
    t_eps = stats.best_epsilon_threshold(pos_cal, neg_cal, delta=config.delta, confidence=ec)
    tp, fp = int((pos_ev >= t_eps).sum()), int((neg_ev >= t_eps).sum())
    eb = stats.epsilon_lower_bound(tp=tp, n_pos=len(pos_ev), fp=fp, n_neg=len(neg_ev), delta=config.delta, confidence=ec)
    eps = {
        "epsilon_lb": eb.epsilon_lb,
        "threshold": t_eps if np.isfinite(t_eps) else None,
        "tpr": eb.tpr,
        "fpr": eb.fpr,
        "tpr_ci": list(eb.tpr_ci),
        "fpr_ci": list(eb.fpr_ci),
        "confidence": ec,
        "max_resolvable": stats.max_resolvable_epsilon(n_pos=len(pos_ev), n_neg=len(neg_ev), delta=config.delta, confidence=ec),
    }

    # Member-vs-member control: two disjoint halves of the members, one labelled non-member.
    ca, cb = _halves(len(pm), rng)
    if len(ca) and len(cb):
        c_auc, c_p = stats.auc_score(np.r_[pm[ca], pm[cb]], np.r_[np.ones(len(ca), bool), np.zeros(len(cb), bool)])
        control = {"auc": c_auc, "p_value": c_p, "n_a": int(len(ca)), "n_b": int(len(cb))}
    else:
        control = {"auc": None, "p_value": None, "n_a": int(len(ca)), "n_b": int(len(cb))}

    return {
        "name": name,
        "version": ATTACK_VERSIONS.get(name, 1),
        "status": "run",
        "positive": "member",
        "unit": "patient (slice scores pooled by maximum)",
        "n_members": int(len(pm)),
        "n_nonmembers": int(len(pn)),
        "split": {
            "calibration": {"members": int(len(cal_m)), "nonmembers": int(len(cal_n))},
            "evaluation": {"members": int(len(ev_m)), "nonmembers": int(len(ev_n))},
        },
        "auc": auc,
        "auc_p_value": auc_p,
        "roc": {"fpr": roc_f, "tpr": roc_t},
        "tpr_at_fpr": at_fpr,
        "epsilon": eps,
        "control": control,
        "details": details or {},
    }


def not_run(name: str, reason: str) -> dict:
    return {"name": name, "version": ATTACK_VERSIONS.get(name, 1), "status": "not run", "reason": reason}

"""The verdict: a versioned rubric file maps audit results to Green / Amber / Inconclusive / Red / Critical.

Every check yields a finding with its level and a plain-language reason; the overall verdict is
the worst finding. The rubric is data (``rubric-v3.toml``; older versions stay beside it so old
reports can be re-graded as they were), so changing a threshold means writing a new version, and
each report records which version (and its SHA-256) graded it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from secgan.core.config import choices, load_dataclass, read_toml, rng
from secgan.core.errors import ConfigError

# Inconclusive (rubric-v3 on): the audit could not resolve the claim at these sample sizes. It is no
# pass: it ranks above Amber, and a Red or Critical finding still decides the verdict.
LEVELS = ("Green", "Amber", "Inconclusive", "Red", "Critical")
DEFAULT_RUBRIC = Path(__file__).with_name("rubric-v3.toml")


@dataclass(frozen=True)
class MembershipRubric:
    auc_amber: float = field(default=0.60, metadata=rng(min=0.5, max=1.0))
    auc_red: float = field(default=0.75, metadata=rng(min=0.5, max=1.0))
    p_amber: float = field(default=0.05, metadata=rng(min=0.0, max=1.0))
    p_red: float = field(default=0.01, metadata=rng(min=0.0, max=1.0))
    tpr_at_1pct_lo_amber: float = field(default=0.05, metadata=rng(min=0.0, max=1.0))
    tpr_at_1pct_lo_red: float = field(default=0.20, metadata=rng(min=0.0, max=1.0))
    control_auc_deviation: float = field(default=0.25, metadata=rng(min=0.0, max=0.5))
    # Holm-Bonferroni-adjust the attacks' p-values across all attacks run before comparing them with
    # p_amber / p_red, so running more attacks does not raise the chance of a false alarm.
    family_wise: bool = False
    # Added in rubric-v3 (the defaults grade as v1/v2 did). The member-vs-member controls are
    # Holm-adjusted like the attacks, and a control resting on fewer patients per half than this is
    # reported as noise, never graded.
    control_family_wise: bool = False
    control_min_patients: int = field(default=0, metadata=rng(min=0))
    # Level of a low-FPR check that the non-member count cannot resolve ("green" in v1/v2).
    unresolvable_fpr: str = field(default="green", metadata=choices("green", "inconclusive"))


@dataclass(frozen=True)
class CopiesRubric:
    # Added in rubric-v3: this many synthetic images that copy a real image of the site (any
    # patient) make a Red finding on their own; 0 disables the check (v1/v2).
    red_min_images: int = field(default=0, metadata=rng(min=0))


@dataclass(frozen=True)
class SampleRubric:
    # Added in rubric-v3 (0 disables each check): fewer synthetic images than this make the audit
    # Inconclusive; so does a claimed epsilon above max_resolvable / resolvable_fraction.
    min_synthetic: int = field(default=0, metadata=rng(min=0))
    resolvable_fraction: float = field(default=0.0, metadata=rng(min=0.0, max=1.0))


@dataclass(frozen=True)
class MemorisationRubric:
    ct_amber: float = -2.0
    ct_red: float = -5.0
    copies_fraction_amber: float = field(default=0.03, metadata=rng(min=0.0, max=1.0))
    copies_fraction_red: float = field(default=0.10, metadata=rng(min=0.0, max=1.0))
    copies_p: float = field(default=0.01, metadata=rng(min=0.0, max=1.0))
    dcr_excess_amber: float = field(default=0.10, metadata=rng(min=0.0, max=1.0))
    dcr_excess_red: float = field(default=0.30, metadata=rng(min=0.0, max=1.0))
    dcr_p: float = field(default=0.01, metadata=rng(min=0.0, max=1.0))
    # Added in rubric-v2; the defaults leave a rubric-v1 file grading exactly as it did.
    ct_p: float = field(default=1.0, metadata=rng(min=0.0, max=1.0))  # 1.0: C_T needs no p-value
    red_min_patients: int = field(default=0, metadata=rng(min=0))  # fewer distinct patients: at most Amber
    slice_level_copies_amber: bool = False


_LEVEL_CHOICES = choices("green", "amber", "inconclusive", "red", "critical")


@dataclass(frozen=True)
class EpsilonRubric:
    lb_fraction_amber: float = field(default=0.5, metadata=rng(min=0.0, max=1.0))
    dp_off: str = field(default="red", metadata=_LEVEL_CHOICES)
    missing_ledger: str = field(default="amber", metadata=_LEVEL_CHOICES)


@dataclass(frozen=True)
class Rubric:
    version: str
    membership: MembershipRubric = MembershipRubric()
    memorisation: MemorisationRubric = MemorisationRubric()
    epsilon: EpsilonRubric = EpsilonRubric()
    copies: CopiesRubric = CopiesRubric()
    sample: SampleRubric = SampleRubric()

    def __post_init__(self) -> None:
        m, r = self.membership, self.memorisation
        if m.auc_red < m.auc_amber or m.tpr_at_1pct_lo_red < m.tpr_at_1pct_lo_amber:
            raise ValueError("membership: red thresholds must be at least the amber ones")
        if r.ct_red > r.ct_amber or r.copies_fraction_red < r.copies_fraction_amber or r.dcr_excess_red < r.dcr_excess_amber:
            raise ValueError("memorisation: red thresholds must be at least as severe as the amber ones")


def load_rubric(path: Path | None = None) -> tuple[Rubric, dict]:
    """(rubric, provenance {path name, version, sha256}); ConfigError names a bad key."""
    path = Path(path) if path is not None else DEFAULT_RUBRIC
    try:
        raw = path.read_bytes()
    except OSError:
        raise ConfigError(f"{path}: rubric file not found or unreadable") from None
    rubric = load_dataclass(Rubric, read_toml(path))
    return rubric, {"file": path.name, "version": rubric.version, "sha256": hashlib.sha256(raw).hexdigest()}


def worst(levels) -> str:
    levels = list(levels)
    return max(levels, key=LEVELS.index) if levels else "Green"


def _f(level: str, area: str, subject: str, reason: str, **values) -> dict:
    return {"level": level, "area": area, "subject": subject, "reason": reason, "values": values}


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), monotone and capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _control_p(c: dict) -> float | None:
    """Two-sided p-value of a member-vs-member control (its AUC far from 0.5 either way)."""
    p = c.get("p_value")
    return None if p is None else min(1.0, 2 * min(p, 1 - p))


def _grade_attack(a: dict, m: MembershipRubric, *, p_adjusted: float | None = None,
                  control_p: float | None = None) -> list[dict]:
    out = []
    subj = a["label"]
    auc = a["auc"]
    p = a["auc_p_value"] if p_adjusted is None else p_adjusted
    if auc >= m.auc_red and p < m.p_red:
        lvl = "Red"
    elif auc >= m.auc_amber and p < m.p_amber:
        lvl = "Amber"
    else:
        lvl = "Green"
    reason = {
        "Red": f"the attack tells members from non-members well (AUC {auc:.2f}, p={p:.2g})",
        "Amber": f"the attack tells members from non-members somewhat better than chance (AUC {auc:.2f}, p={p:.2g})",
        "Green": f"the attack is not significantly better than guessing (AUC {auc:.2f}, p={p:.2g})",
    }[lvl]
    if p_adjusted is not None:
        reason = reason.replace(f"p={p:.2g}", f"Holm-adjusted p={p:.2g}")
    out.append(_f(lvl, "membership", subj, reason, auc=auc, p_value=p))
    t1 = a["tpr_at_fpr"].get("0.01")
    if t1 is not None and not t1.get("resolvable", True):
        ev = a.get("split", {}).get("evaluation", {}).get("nonmembers")
        need = f" (needs at least 100 in the evaluation half, has {ev})" if ev is not None else ""
        out.append(_f(m.unresolvable_fpr.capitalize(), "membership", subj,
                      f"too few non-member patients to measure the attack at a 1% false-positive rate{need}",
                      nonmembers_evaluation=ev))
    elif t1 is not None:
        lo = t1["tpr_ci"][0]
        lvl = "Red" if lo >= m.tpr_at_1pct_lo_red else "Amber" if lo >= m.tpr_at_1pct_lo_amber else "Green"
        out.append(_f(lvl, "membership", subj,
                      f"at a 1% false-positive rate (measured {100 * t1['fpr']:.1f}%) it finds members at rate "
                      f"{t1['tpr']:.2f} (95% CI lower bound {lo:.2f})",
                      tpr=t1["tpr"], tpr_lo=lo, fpr=t1["fpr"]))
    c = a["control"]
    cp = _control_p(c) if control_p is None else control_p
    if c.get("auc") is not None and abs(c["auc"] - 0.5) >= m.control_auc_deviation and cp is not None and cp < m.p_amber:
        few = min(c.get("n_a") or 0, c.get("n_b") or 0)
        adj = "Holm-adjusted " if control_p is not None else ""
        if few < m.control_min_patients:
            out.append(_f("Green", "membership", subj,
                          f"member-vs-member control AUC {c['auc']:.2f} ({adj}p={cp:.2g}) rests on {few} patient(s) a "
                          f"half: noise, not graded (a control needs {m.control_min_patients} a half)",
                          control_auc=c["auc"], control_p=cp))
        else:
            out.append(_f("Amber", "membership", subj,
                          f"member-vs-member control is far from chance (AUC {c['auc']:.2f}, {adj}p={cp:.2g}); this "
                          "attack's evaluation is unreliable", control_auc=c["auc"], control_p=cp))
    return out


def _patients_cap(lvl: str, patients: int | None, m: MemorisationRubric) -> tuple[str, str]:
    """A finding driven by fewer than ``red_min_patients`` distinct patients is at most Amber:
    with so few, patient-level chance and copying cannot be told apart."""
    if lvl == "Red" and patients is not None and patients < m.red_min_patients:
        return "Amber", (f"; at most Amber because it rests on {patients} patient(s), too few to tell "
                         f"copying from chance (Red needs {m.red_min_patients})")
    return lvl, ""


def _p_text(r: dict) -> str:
    if str(r.get("test", "")).startswith("patient permutation"):
        return f"patient-level permutation p={r['p_value']:.2g}"
    return f"p={r['p_value']:.2g}"


def _grade_memorisation(space: str, r: dict, m: MemorisationRubric) -> list[dict]:
    out = []
    subj = f"memorisation/{space}"
    dct = r["data_copying"]
    ct = dct.get("c_t")
    if ct is None:
        out.append(_f("Green", "memorisation", subj, f"data-copying test not computable: {dct.get('reason')}"))
    else:
        p = dct.get("p_value")
        significant = m.ct_p >= 1.0 or p is None or p < m.ct_p
        lvl = "Red" if ct <= m.ct_red else "Amber" if ct <= m.ct_amber else "Green"
        msg = {"Red": "synthetic images sit much closer to training images than new patients do (data-copying)",
               "Amber": "synthetic images sit somewhat closer to training images than new patients do",
               "Green": "no sign of data-copying"}[lvl]
        extra = ""
        if p is not None:
            extra = f", {_p_text(dct)}"
        if lvl != "Green" and not significant:
            lvl, msg = "Green", "no significant sign of data-copying at the patient level"
        patients = dct.get("distinct_nearest_train_patients")
        lvl, cap = _patients_cap(lvl, patients, m)
        if patients is not None:
            extra += f", closest training images from {patients} patient(s)"
        out.append(_f(lvl, "memorisation", subj, f"{msg} (C_T = {ct:.2f}{extra}){cap}", c_t=ct, p_value=p,
                      patients=patients))

    d = r["near_duplicates"]
    frac, p = d["fraction"], d["p_value"]
    patients = d.get("distinct_patients")
    lvl = "Green"
    if p < m.copies_p:
        lvl = "Red" if frac >= m.copies_fraction_red else "Amber" if frac >= m.copies_fraction_amber else "Green"
    lvl, cap = _patients_cap(lvl, patients, m)
    chance = d.get("slice_expected_fraction", d["expected_fraction"])
    who = f" of {patients} patient(s)" if patients is not None and d["count"] else ""
    reason = (f"{d['count']} of {r['n_synthetic']} synthetic images are near-duplicates of training images{who} "
              f"({100 * frac:.1f}%, about {100 * chance:.0f}% expected by chance")
    reason += f"; {_p_text(d)})" if "test" in d else ")"
    slice_p = d.get("slice_binomial_p")
    if (lvl == "Green" and m.slice_level_copies_amber and slice_p is not None and slice_p < m.copies_p
            and frac >= m.copies_fraction_amber):
        lvl = "Amber"
        reason += ("; more than chance if the images were independent, but they rest on too few patients "
                   "to be significant at the patient level: the site should look at them")
    out.append(_f(lvl, "memorisation", subj, reason + cap, fraction=frac, p_value=p, patients=patients))

    dc = r["dcr"]
    excess = dc.get("excess", dc["fraction_closer_to_train"] - dc["expected_fraction"])
    lvl = "Green"
    if dc["p_value"] < m.dcr_p:
        lvl = "Red" if excess >= m.dcr_excess_red else "Amber" if excess >= m.dcr_excess_amber else "Green"
    patients = dc.get("distinct_patients_closer_to_train")
    lvl, cap = _patients_cap(lvl, patients, m)
    if "test" in dc:
        reason = (f"{100 * dc['fraction_closer_to_train']:.0f}% of synthetic images are closer to training than to "
                  f"held-out images ({100 * dc['expected_fraction']:.0f}% expected when patients are re-assigned at "
                  f"random; {_p_text(dc)}; nearest images from {dc.get('distinct_nearest_patients')} patient(s))")
    else:
        reason = (f"{100 * dc['fraction_closer_to_train']:.0f}% of synthetic images are closer to training than to "
                  f"held-out images ({100 * dc['expected_fraction']:.0f}% expected)")
    out.append(_f(lvl, "memorisation", subj, reason + cap, excess=excess, p_value=dc["p_value"], patients=patients))
    return out


def _grade_epsilon(e: dict, r: EpsilonRubric) -> list[dict]:
    out = []
    lb, claim = e["empirical_lb"], e.get("claimed")
    if e.get("mode") == "off":
        out.append(_f(r.dp_off.capitalize(), "epsilon", "privacy",
                      "differential privacy is OFF for this site: there is no formal privacy guarantee"))
    elif claim is None:
        out.append(_f(r.missing_ledger.capitalize(), "epsilon", "privacy",
                      "no privacy ledger was found, so the claimed epsilon cannot be checked"))
    if claim is not None:
        if lb > claim:
            out.append(_f("Critical", "epsilon", "privacy",
                          f"measured leakage contradicts the privacy claim: epsilon is at least {lb:.2f} "
                          f"(95% confidence) but the ledger claims {claim:.2f}", empirical_lb=lb, claimed=claim))
        elif lb > r.lb_fraction_amber * claim:
            out.append(_f("Amber", "epsilon", "privacy",
                          f"measured leakage (epsilon >= {lb:.2f}) is close to the claimed {claim:.2f}",
                          empirical_lb=lb, claimed=claim))
        else:
            out.append(_f("Green", "epsilon", "privacy",
                          f"measured leakage (epsilon >= {lb:.2f}) is consistent with the claimed {claim:.2f}; "
                          f"at these sample sizes no audit could show more than {e['max_resolvable']:.2f}",
                          empirical_lb=lb, claimed=claim))
    return out


def _grade_copies(c: dict, r: CopiesRubric) -> list[dict]:
    n, by = c["count"], c.get("by_set") or {}
    if n >= r.red_min_images:
        parts = [f"{v['images']} image(s) of {v['patients']} {k} patient(s)" for k, v in by.items() if v["images"]]
        return [_f("Red", "copies", "copies of real images",
                   f"{n} synthetic image(s) are copies of real images of this site ({', '.join(parts)}; "
                   f"{c['exact']} exact): each is a leaked patient image, whatever any population test says. "
                   "Which patients is kept out of this report, for the site's local review only", count=n, patients=c["patients"], by_set=by)]
    return [_f("Green", "copies", "copies of real images",
               f"no synthetic image is a copy of any of the site's {c['n_real']} real images of "
               f"{c['real_patients']} patients (exact, or under small warps, gain, blur and noise)", count=n)]


def patients_to_resolve(claimed: float, *, delta: float, confidence: float, limit: int = 10**9) -> int | None:
    """Smallest n such that n member and n non-member patients in the evaluation half let a perfect
    attack show epsilon >= ``claimed`` (None if no n up to ``limit`` does)."""
    from audits.stats import max_resolvable_epsilon

    def ok(n: int) -> bool:
        return max_resolvable_epsilon(n_pos=n, n_neg=n, delta=delta, confidence=confidence) >= claimed

    hi = 2
    while not ok(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = hi // 2
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _grade_sample(results: dict, r: SampleRubric) -> list[dict]:
    out = []
    n_syn = (results.get("sizes") or {}).get("synthetic")
    if r.min_synthetic and n_syn is not None and n_syn < r.min_synthetic:
        out.append(_f("Inconclusive", "sample", "synthetic sample size",
                      f"only {n_syn} synthetic image(s): too few for the tests to see anything (the rubric needs at "
                      f"least {r.min_synthetic}); audit a larger sample of the release", synthetic=n_syn,
                      needed=r.min_synthetic))
    e = results["epsilon"]
    claim, top = e.get("claimed"), e.get("max_resolvable")
    if r.resolvable_fraction and claim is not None and top is not None and e.get("mode") != "off" \
            and top < r.resolvable_fraction * claim:
        conf = float(e.get("per_attack_confidence") or e.get("confidence") or 0.95)
        need = patients_to_resolve(claim, delta=float(e.get("delta_used", e.get("delta", 1e-5))), confidence=conf)
        have = f"{e.get('n_eval_members')} member and {e.get('n_eval_nonmembers')} non-member"
        ask = (f"resolving it needs about {need} member and {need} non-member patients in the evaluation half "
               f"(about {2 * need} of each in all)" if need else "no sample size resolves it at this delta")
        out.append(_f("Inconclusive", "sample", "privacy claim",
                      f"this audit cannot check the claimed epsilon {claim:.2f}: with {have} patients in the "
                      f"evaluation half even a perfect attack shows at most epsilon {top:.2f}; {ask}",
                      claimed=claim, max_resolvable=top, patients_needed=need))
    return out


def grade(results: dict, rubric: Rubric) -> tuple[str, list[dict]]:
    """(overall verdict, findings sorted worst first)."""
    findings: list[dict] = []
    run = [a for a in results["attacks"] if a["status"] == "run"]
    m = rubric.membership
    adjusted = holm_adjust([a["auc_p_value"] for a in run]) if m.family_wise and run else [None] * len(run)
    controls: list[float | None] = [None] * len(run)
    if m.control_family_wise and run:
        raw = [_control_p(a["control"]) for a in run]
        known = [i for i, p in enumerate(raw) if p is not None]
        for i, p_adj in zip(known, holm_adjust([raw[i] for i in known])):
            controls[i] = p_adj
    unmeasured = []
    for a, p_adj, c_adj in zip(run, adjusted, controls):
        for f in _grade_attack(a, m, p_adjusted=p_adj, control_p=c_adj):
            if f["level"] == "Inconclusive" and "nonmembers_evaluation" in f["values"]:
                unmeasured.append(f)  # one finding for all attacks, not one each
            else:
                findings.append(f)
    if unmeasured:
        ev = unmeasured[0]["values"]["nonmembers_evaluation"]
        findings.append(_f("Inconclusive", "sample", "non-member sample size",
                           f"too few non-member patients to measure any attack at a 1% false-positive rate: the "
                           f"evaluation half holds {ev}, a 1% rate needs at least 100 (about 200 held-out patients "
                           "in all)", nonmembers_evaluation=ev, needed=100))
    for space, r in results["memorisation"].items():
        findings += _grade_memorisation(space, r, rubric.memorisation)
    if results.get("copies") is not None and rubric.copies.red_min_images > 0:
        findings += _grade_copies(results["copies"], rubric.copies)
    findings += _grade_epsilon(results["epsilon"], rubric.epsilon)
    findings += _grade_sample(results, rubric.sample)
    findings.sort(key=lambda f: -LEVELS.index(f["level"]))
    return worst(f["level"] for f in findings), findings

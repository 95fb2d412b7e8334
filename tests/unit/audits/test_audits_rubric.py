from __future__ import annotations

from pathlib import Path

import pytest

from audits.rubric import DEFAULT_RUBRIC, grade, load_rubric, worst
from secgan.core.errors import ConfigError


def _results(*, lb: float, claimed: float | None, mode: str = "dpsgd") -> dict:
    return {"attacks": [], "memorisation": {},
            "epsilon": {"empirical_lb": lb, "claimed": claimed, "mode": mode, "max_resolvable": 3.0}}


def test_default_rubric_is_versioned_and_hashed() -> None:
    rubric, meta = load_rubric()
    assert rubric.version == "rubric-v3" and meta["file"] == DEFAULT_RUBRIC.name == "rubric-v3.toml"
    assert len(meta["sha256"]) == 64
    assert rubric.memorisation.red_min_patients == 3 and rubric.memorisation.ct_p == 0.01
    assert rubric.copies.red_min_images == 1 and rubric.sample.min_synthetic == 50
    # rubric-v2 stays loadable and grades as it did: no copy check, no Inconclusive
    v2, meta2 = load_rubric(DEFAULT_RUBRIC.with_name("rubric-v2.toml"))
    assert v2.version == "rubric-v2" and v2.copies.red_min_images == 0 and v2.sample.min_synthetic == 0
    assert v2.membership.unresolvable_fpr == "green" and meta2["sha256"] != meta["sha256"]
    # the earlier version stays loadable, so old reports can be re-graded as they were
    v1, meta1 = load_rubric(DEFAULT_RUBRIC.with_name("rubric-v1.toml"))
    assert v1.version == "rubric-v1" and meta1["sha256"] != meta["sha256"]
    assert v1.memorisation.red_min_patients == 0 and v1.memorisation.ct_p == 1.0


def _memo(*, dcr_p: float, patients: int, ct: float = 0.0, ct_p: float = 0.5) -> dict:
    return {"n_synthetic": 100,
            "dcr": {"fraction_closer_to_train": 0.95, "expected_fraction": 0.6, "excess": 0.35, "p_value": dcr_p,
                    "test": "patient permutation", "distinct_nearest_patients": patients,
                    "distinct_patients_closer_to_train": patients},
            "near_duplicates": {"fraction": 0.0, "count": 0, "expected_fraction": 0.0, "slice_expected_fraction": 0.01,
                                "p_value": 1.0, "slice_binomial_p": 1.0, "test": "patient permutation",
                                "distinct_patients": 0},
            "data_copying": {"c_t": ct, "p_value": ct_p, "test": "patient permutation (cells fixed)",
                             "distinct_nearest_train_patients": patients, "cells": []}}


def _memo_levels(memo: dict, rubric_file: str | None = None) -> dict[str, str]:
    r = _results(lb=0.0, claimed=1.0)
    r["memorisation"] = {"pixels": memo}
    rubric = load_rubric(None if rubric_file is None else DEFAULT_RUBRIC.with_name(rubric_file))[0]
    out = {}
    for f in grade(r, rubric)[1]:
        if f["area"] == "memorisation":
            key = "ct" if "C_T" in f["reason"] else "dcr" if "closer to training than" in f["reason"] else "dup"
            out[key] = f["level"], f["reason"]
    return out


def test_findings_resting_on_two_patients_are_at_most_amber() -> None:
    assert _memo_levels(_memo(dcr_p=0.001, patients=5))["dcr"][0] == "Red"
    level, reason = _memo_levels(_memo(dcr_p=0.001, patients=2))["dcr"]
    assert level == "Amber" and "rests on 2 patient(s)" in reason
    assert _memo_levels(_memo(dcr_p=0.3, patients=5))["dcr"][0] == "Green"
    # rubric-v1 knew nothing of patient counts
    assert _memo_levels(_memo(dcr_p=0.001, patients=2), "rubric-v1.toml")["dcr"][0] == "Red"


def test_data_copying_needs_a_significant_permutation_p_value_in_v2() -> None:
    assert _memo_levels(_memo(dcr_p=0.5, patients=5, ct=-7.0, ct_p=0.001))["ct"][0] == "Red"
    level, reason = _memo_levels(_memo(dcr_p=0.5, patients=5, ct=-7.0, ct_p=0.4))["ct"]
    assert level == "Green" and "permutation p=0.4" in reason
    assert _memo_levels(_memo(dcr_p=0.5, patients=1, ct=-7.0, ct_p=0.001))["ct"][0] == "Amber"
    assert _memo_levels(_memo(dcr_p=0.5, patients=5, ct=-7.0, ct_p=0.4), "rubric-v1.toml")["ct"][0] == "Red"


def test_lower_bound_above_claim_is_critical() -> None:
    verdict, findings = grade(_results(lb=2.5, claimed=1.0), load_rubric()[0])
    assert verdict == "Critical"
    assert "contradicts" in findings[0]["reason"]


def test_lower_bound_close_to_claim_is_amber_and_far_below_is_green() -> None:
    assert grade(_results(lb=0.8, claimed=1.0), load_rubric()[0])[0] == "Amber"
    assert grade(_results(lb=0.1, claimed=1.0), load_rubric()[0])[0] == "Green"


def test_dp_off_is_red_and_missing_ledger_amber() -> None:
    assert grade(_results(lb=0.0, claimed=None, mode="off"), load_rubric()[0])[0] == "Red"
    assert grade(_results(lb=0.0, claimed=None), load_rubric()[0])[0] == "Amber"


def test_worst_orders_levels() -> None:
    assert worst(["Green", "Amber", "Green"]) == "Amber"
    assert worst(["Red", "Critical", "Amber"]) == "Critical"
    assert worst([]) == "Green"


def test_bad_rubric_files_name_the_key(tmp_path: Path) -> None:
    p = tmp_path / "r.toml"
    p.write_text('version = "x"\n[membership]\nauc_red = 1.5\n')
    with pytest.raises(ConfigError, match="membership.auc_red"):
        load_rubric(p)
    p.write_text('version = "x"\n[membership]\nauc_amber = 0.8\nauc_red = 0.7\n')
    with pytest.raises(ConfigError, match="red thresholds"):
        load_rubric(p)
    p.write_text('version = "x"\nsurprise = 1\n')
    with pytest.raises(ConfigError, match="unknown key surprise"):
        load_rubric(p)
    with pytest.raises(ConfigError, match="not found"):
        load_rubric(tmp_path / "missing.toml")


def _attack(*, auc: float, p: float, tpr_lo: float, resolvable: bool) -> dict:
    return {"status": "run", "label": "gan_leaks/pixels", "auc": auc, "auc_p_value": p,
            "tpr_at_fpr": {"0.01": {"tpr": 1.0, "tpr_ci": [tpr_lo, 1.0], "fpr": 0.01, "resolvable": resolvable}},
            "control": {"auc": 0.5, "p_value": 0.5}}


def test_tpr_at_low_fpr_counts_only_when_the_sample_can_resolve_it() -> None:
    rubric = load_rubric()[0]
    base = _results(lb=0.0, claimed=1.0)
    base["attacks"] = [_attack(auc=0.5, p=0.5, tpr_lo=0.9, resolvable=False)]
    # rubric-v3: a check the sample cannot make is Inconclusive, never a pass; rubric-v2 read it as Green
    assert grade(base, rubric)[0] == "Inconclusive"
    assert grade(base, load_rubric(DEFAULT_RUBRIC.with_name("rubric-v2.toml"))[0])[0] == "Green"
    base["attacks"] = [_attack(auc=0.5, p=0.5, tpr_lo=0.9, resolvable=True)]
    assert grade(base, rubric)[0] == "Red"


def test_auc_needs_significance() -> None:
    rubric = load_rubric()[0]
    base = _results(lb=0.0, claimed=1.0)
    base["attacks"] = [_attack(auc=0.9, p=0.2, tpr_lo=0.0, resolvable=True)]
    assert grade(base, rubric)[0] == "Green"
    base["attacks"] = [_attack(auc=0.9, p=0.001, tpr_lo=0.0, resolvable=True)]
    assert grade(base, rubric)[0] == "Red"
    base["attacks"] = [_attack(auc=0.65, p=0.03, tpr_lo=0.0, resolvable=True)]
    assert grade(base, rubric)[0] == "Amber"


def test_holm_adjustment_known_answers() -> None:
    from audits.rubric import holm_adjust

    # textbook example: p = (0.01, 0.04, 0.03, 0.005), m = 4
    adj = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([]) == []
    assert holm_adjust([0.9, 0.8]) == [1.0, 1.0]


def test_v2_rubric_adjusts_attack_p_values_across_attacks() -> None:
    from audits.rubric import grade, load_rubric

    def attack(label: str, auc: float, p: float) -> dict:
        return {"label": label, "status": "run", "auc": auc, "auc_p_value": p, "tpr_at_fpr": {},
                "control": {"auc": None}}

    results = {
        "attacks": [attack("a", 0.80, 0.006)] + [attack(f"b{i}", 0.5, 0.5) for i in range(5)],
        "memorisation": {},
        "epsilon": {"claimed": None, "empirical_lb": 0.0, "max_resolvable": 0.0, "mode": "dpsgd",
                    "ledger_found": True},
    }
    v1, _ = load_rubric(Path(__file__).resolve().parents[3] / "audits" / "rubric-v1.toml")
    v2, _ = load_rubric()
    f1 = [f for f in grade(results, v1)[1] if f["subject"] == "a"][0]
    f2 = [f for f in grade(results, v2)[1] if f["subject"] == "a"][0]
    assert f1["level"] == "Red"  # 0.006 < 0.01 alone
    assert f2["level"] == "Amber" and "Holm-adjusted p=0.036" in f2["reason"]  # 6 x 0.006

from __future__ import annotations

from pathlib import Path

import pytest

from audits.rubric import DEFAULT_RUBRIC, grade, load_rubric, worst
from secgan.errors import ConfigError


def _results(*, lb: float, claimed: float | None, mode: str = "dpsgd") -> dict:
    return {"attacks": [], "memorisation": {},
            "epsilon": {"empirical_lb": lb, "claimed": claimed, "mode": mode, "max_resolvable": 3.0}}


def test_default_rubric_is_versioned_and_hashed() -> None:
    rubric, meta = load_rubric()
    assert rubric.version == "rubric-v1" and meta["file"] == DEFAULT_RUBRIC.name
    assert len(meta["sha256"]) == 64


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
    assert grade(base, rubric)[0] == "Green"
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

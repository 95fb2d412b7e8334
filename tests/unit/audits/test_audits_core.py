"""The audit core on arrays: a memorising generator is caught, an honest one is not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from audits.cohort import make_cohort
from audits.core import AuditConfig, audit_arrays
from audits.features import EmbeddingConfig
from audits.memorisation import MemorisationConfig, data_copying_ct, memorisation_tests
from audits.rubric import DEFAULT_RUBRIC, grade, load_rubric
from secgan.core.errors import DataError

from .phantoms import copies_of, phantom_slices

CONFIG = AuditConfig(seed=3, embedding=EmbeddingConfig(epochs=3))
FEW = MemorisationConfig(permutations=99)


@pytest.fixture(scope="module")
def site():
    """60 phantom patients of one site: 20 members, 20 held-out, 20 never used in training."""
    im, co, gr = phantom_slices(range(1, 61), size=16, slices=8)
    mem, non, oth = gr < 20, (gr >= 20) & (gr < 40), gr >= 40
    return {
        "members": make_cohort("members", im[mem], co[mem], gr[mem]),
        "nonmembers": make_cohort("non-members", im[non], co[non], gr[non]),
        "others": (im[oth], co[oth]),
    }


def _audit(site, synthetic_images, synthetic_conds=None, **kw):
    syn = make_cohort("synthetic", synthetic_images, synthetic_conds)
    res = audit_arrays(site["members"], site["nonmembers"], syn, config=CONFIG, **kw)
    res["epsilon"].update(mode="dpsgd", claimed=8.0, delta=1e-5, target=8.0, ledger_found=True)
    return res


def test_memorising_generator_is_red_with_auc_near_one(site) -> None:
    syn = copies_of(site["members"].images, 240, rng=np.random.default_rng(0))
    res = _audit(site, syn)
    verdict, findings = grade(res, load_rubric()[0])
    assert verdict in ("Red", "Critical")
    aucs = {a["label"]: a["auc"] for a in res["attacks"] if a["status"] == "run"}
    assert aucs["gan_leaks/pixels"] > 0.95
    assert aucs["gan_leaks/embedding"] > 0.95
    # half the copies are flipped or shifted (far in pixels), so C_T is diluted but still negative
    assert res["memorisation"]["pixels"]["data_copying"]["c_t"] < 0
    assert res["memorisation"]["pixels"]["near_duplicates"]["fraction"] > 0.25
    assert res["epsilon"]["empirical_lb"] > 0
    assert any(f["level"] == "Red" and f["area"] == "memorisation" for f in findings)
    # patient-level permutation tests: every copied patient counts, and the p-values are the smallest possible
    smallest = 1 / (CONFIG.memorisation.permutations + 1)
    for space in ("pixels", "embedding"):
        m = res["memorisation"][space]
        assert m["dcr"]["p_value"] == pytest.approx(smallest) and m["dcr"]["test"] == "patient permutation"
        assert m["near_duplicates"]["p_value"] == pytest.approx(smallest)
        assert m["near_duplicates"]["distinct_patients"] >= 15
    red = [f for f in findings if f["level"] == "Red" and f["area"] == "memorisation"]
    assert any("closer to training" in f["reason"] for f in red)
    # the member-vs-member control stays near chance even when the attack is perfect
    assert all(abs(a["control"]["auc"] - 0.5) < 0.35 for a in res["attacks"] if a["status"] == "run")


def test_generator_of_other_patients_is_green(site) -> None:
    im, co = site["others"]
    res = _audit(site, im, co)
    # 20 / 20 patients cannot resolve the claim of 8: rubric-v3 says so (Inconclusive, and nothing else
    # is flagged); rubric-v2 graded the same results Green
    verdict, findings = grade(res, load_rubric()[0])
    assert verdict == "Inconclusive" and {f["area"] for f in findings if f["level"] != "Green"} == {"sample"}
    verdict, findings = grade(res, load_rubric(DEFAULT_RUBRIC.with_name("rubric-v2.toml"))[0])
    assert verdict == "Green", [f for f in findings if f["level"] != "Green"]
    for a in res["attacks"]:
        if a["status"] == "run":
            assert a["auc"] < 0.75
            assert a["positive"] == "member"
    assert res["epsilon"]["empirical_lb"] <= res["epsilon"]["max_resolvable"]


def test_near_identical_noise_generator_is_not_red_on_memorisation(site) -> None:
    """A barely trained generator: 64 near-identical noise images, audited against 18 training and
    12 held-out patients. Every sample has the same nearest patient, so "closer to training" is all
    or nothing; read as 64 independent draws it used to be Red (binomial p ~ 1e-14)."""
    m, n = site["members"], site["nonmembers"]
    keep_m, keep_n = m.groups < 18, n.groups < 32
    members = make_cohort("members", m.images[keep_m], m.conds[keep_m], m.groups[keep_m])
    nonmembers = make_cohort("non-members", n.images[keep_n], n.conds[keep_n], n.groups[keep_n])
    g = np.random.default_rng(2)
    noise = np.clip(g.uniform(-1, 1, size=(1, 4, 16, 16)) + g.normal(0, 0.02, size=(64, 4, 16, 16)), -1, 1)
    res = audit_arrays(members, nonmembers, make_cohort("synthetic", noise.astype(np.float32)), config=CONFIG)
    res["epsilon"].update(mode="dpsgd", claimed=8.0, delta=1e-5, target=8.0, ledger_found=True)
    px = res["memorisation"]["pixels"]["dcr"]
    assert px["fraction_closer_to_train"] == 1.0 and px["distinct_nearest_patients"] == 1
    assert px["slice_binomial_p"] < 1e-10  # the independent-samples reading: Red under rubric-v1's thresholds
    assert px["p_value"] > 0.3  # about the chance that one patient is a training patient (18 of 30)
    _, findings = grade(res, load_rubric()[0])
    memo = [f for f in findings if f["area"] == "memorisation"]
    assert memo and all(f["level"] in ("Green", "Amber") for f in memo), memo


def test_missing_models_are_reported_as_not_run(site) -> None:
    res = _audit(site, site["others"][0])
    status = {a["name"]: a for a in res["attacks"]}
    assert status["discriminator"]["status"] == "not run"
    assert "discriminator" in status["discriminator"]["reason"]
    assert status["projection"]["status"] == "not run"
    assert "--generator" in status["projection"]["reason"]


def test_model_attacks_run_when_models_are_given(site) -> None:
    import torch

    from secgan.gan.models import build_discriminator, build_generator
    from secgan.gan.config import ModelConfig
    from secgan.core.spec import ImageSpec

    model, image = ModelConfig(g_width=8, d_width=8, g_depth=2, d_layers=2, noise_dim=4), ImageSpec(size=16)
    G, D = build_generator(model, image), build_discriminator(model, image)
    cfg = dataclasses.replace(CONFIG, projection_steps=3, projection_restarts=1)
    syn = make_cohort("synthetic", site["others"][0])
    res = audit_arrays(site["members"], site["nonmembers"], syn, config=cfg, discriminator=D, generator=G, noise_dim=4)
    by = {a["name"]: a for a in res["attacks"]}
    assert by["discriminator"]["status"] == "run" and 0 <= by["discriminator"]["auc"] <= 1
    assert by["projection"]["status"] == "run" and 0 <= by["projection"]["auc"] <= 1
    assert by["projection"]["details"]["steps"] == 3
    assert isinstance(G, torch.nn.Module)


def test_too_few_patients_mismatched_shapes_and_bad_arrays_are_named(site) -> None:
    m = site["members"]
    few = make_cohort("non-members", m.images[:6], m.conds[:6], np.zeros(6, dtype=np.int64))
    with pytest.raises(DataError, match="non-members: need at least 4 patients"):
        audit_arrays(m, few, make_cohort("synthetic", m.images[:5]), config=CONFIG)
    with pytest.raises(DataError, match=r"image shapes differ: .*synthetic \[4, 8, 8\]"):
        audit_arrays(m, site["nonmembers"], make_cohort("synthetic", np.zeros((5, 4, 8, 8), np.float32)), config=CONFIG)
    with pytest.raises(DataError, match="synthetic: images must be a non-empty"):
        make_cohort("synthetic", np.zeros((0, 4, 16, 16), np.float32))
    # any channel count is a cohort (RGB, grey); what an audit refuses is a mix of image shapes
    rgb = make_cohort("synthetic", np.zeros((5, 3, 16, 16), np.float32))
    with pytest.raises(DataError, match=r"image shapes differ: .*synthetic \[3, 16, 16\]"):
        audit_arrays(m, site["nonmembers"], rgb, config=CONFIG)
    bad = np.zeros((3, 4, 16, 16), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        make_cohort("synthetic", bad)
    with pytest.raises(DataError, match="conditions"):
        make_cohort("members", m.images[:3], m.conds[:2], m.groups[:3])


def test_data_copying_ct_on_constructed_data() -> None:
    # every record its own "patient" here (no groups): the permutations stay few to keep this quick
    g = np.random.default_rng(5)
    train = g.normal(size=(400, 6)).astype(np.float32)
    test = g.normal(size=(300, 6)).astype(np.float32)
    fresh = g.normal(size=(300, 6)).astype(np.float32)
    copied = train[g.choice(400, 300)] + g.normal(scale=0.01, size=(300, 6)).astype(np.float32)
    ct_copy = memorisation_tests(train, test, copied, rng=np.random.default_rng(0), config=FEW)["data_copying"]["c_t"]
    ct_fresh = memorisation_tests(train, test, fresh, rng=np.random.default_rng(0), config=FEW)["data_copying"]["c_t"]
    assert ct_copy < -5
    assert abs(ct_fresh) < 2.5
    # under-fitting (samples far from train) is strongly positive
    far = g.normal(size=(300, 6)).astype(np.float32) * 3
    assert memorisation_tests(train, test, far, rng=np.random.default_rng(0), config=FEW)["data_copying"]["c_t"] > 5


def test_data_copying_skips_small_cells_and_weights_by_test_mass() -> None:
    d_test = np.r_[np.ones(10), np.ones(30)]
    d_gen = np.r_[np.zeros(10), np.full(30, 1.0), np.zeros(2)]
    cell_test = np.r_[np.zeros(10, int), np.ones(30, int)]
    cell_gen = np.r_[np.zeros(10, int), np.ones(30, int), np.full(2, 2)]
    out = data_copying_ct(d_test, d_gen, cell_test, cell_gen, 3, min_cell=5)
    assert out["cells_used"] == 2  # cell 2 has 2 generated and no test samples
    z0 = out["cells"][0]["z"]
    assert z0 < -3 and out["cells"][1]["z"] == pytest.approx(0.0)
    assert out["c_t"] == pytest.approx(0.25 * z0)
    none = data_copying_ct(d_test, d_gen, cell_test, cell_gen, 3, min_cell=100)
    assert none["c_t"] is None and "no cell" in none["reason"]

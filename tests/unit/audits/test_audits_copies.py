"""Copies of real images and Inconclusive audits (issue 15's table, built from the phantom at 16 px).

A copy of ANY real image of the site is Red on its own; an audit that cannot resolve the claim says
Inconclusive; clean sets stay Green when the sample can resolve the claim.
"""

from __future__ import annotations

import numpy as np
import pytest

from audits.cohort import make_cohort
from audits.core import AuditConfig, audit_arrays
from audits.features import EmbeddingConfig
from audits.memorisation import MemorisationConfig
from audits.rubric import grade, load_rubric

from .phantoms import phantom_slices, warped_copies

CONFIG = AuditConfig(seed=3, embedding=EmbeddingConfig(epochs=2), memorisation=MemorisationConfig(permutations=99))


def _cohorts(im, co, gr, members: np.ndarray):
    non = ~members
    return (make_cohort("members", im[members], co[members], gr[members]),
            make_cohort("non-members", im[non], co[non], gr[non]))


def _site(patients: int, others: int, slices: int) -> dict:
    """A site of ``patients`` phantom patients (the first 40 train), plus ``others`` of site 2."""
    im, co, gr = phantom_slices(range(1, patients + 1), size=16, slices=slices)
    members, nonmembers = _cohorts(im, co, gr, gr < 40)
    oim, oco, _ = phantom_slices(range(1, others + 1), size=16, slices=slices, site=2)
    return {"members": members, "nonmembers": nonmembers, "other_site": (oim, oco)}


@pytest.fixture(scope="module")
def demo_site():
    """The demo site's sample sizes: 40 training and 20 held-out patients, plus another site's 20."""
    return _site(60, 20, slices=8)


def _grade(site, images, *, claimed: float, conds=None, **kw):
    res = audit_arrays(site["members"], site["nonmembers"], make_cohort("synthetic", images, conds), config=CONFIG, **kw)
    res["epsilon"].update(mode="dpsgd", claimed=claimed, delta=1e-5, target=claimed, ledger_found=True)
    verdict, findings = grade(res, load_rubric()[0])
    return verdict, findings, res


def _levels(findings, subject):
    return [f["level"] for f in findings if f["subject"] == subject]


def test_one_copied_patient_is_red(demo_site) -> None:
    m = demo_site["members"]
    oim, oco = demo_site["other_site"]
    one = m.groups == m.groups[0]
    verdict, findings, res = _grade(demo_site, np.concatenate([oim, m.images[one]]), claimed=9.98)
    assert verdict == "Red", [f for f in findings if f["level"] != "Green"]
    c = res["copies"]
    assert c["count"] == int(one.sum()) and c["patients"] == 1
    assert c["by_set"]["training"] == {"images": int(one.sum()), "patients": 1}
    assert _levels(findings, "copies of real images") == ["Red"]


def test_one_copied_slice_is_red(demo_site) -> None:
    oim, _ = demo_site["other_site"]
    verdict, findings, res = _grade(demo_site, np.concatenate([oim, demo_site["members"].images[5:6]]), claimed=9.98)
    assert verdict == "Red" and res["copies"]["count"] == 1 and res["copies"]["exact"] == 1


def test_held_out_slices_released_verbatim_are_red(demo_site) -> None:
    n = demo_site["nonmembers"]
    verdict, findings, res = _grade(demo_site, n.images, conds=n.conds, claimed=9.98)
    assert verdict == "Red"
    c = res["copies"]
    assert c["by_set"]["held-out"] == {"images": len(n), "patients": n.n_patients}
    assert c["by_set"]["training"]["images"] == 0
    red = [f for f in findings if f["level"] == "Red"]
    assert any("held-out patient" in f["reason"] for f in red)


def test_other_patients_of_the_site_are_searched_too(demo_site) -> None:
    """A patient in data_dir that is in neither split: a copy of it is Red too."""
    extra_im, extra_co, extra_gr = phantom_slices([90, 91], size=16, slices=8)
    others = make_cohort("other patients", extra_im, extra_co, extra_gr)
    oim, _ = demo_site["other_site"]
    verdict, _, res = _grade(demo_site, np.concatenate([oim, extra_im[:2]]), claimed=9.98, others=others)
    assert verdict == "Red" and res["copies"]["by_set"]["other"]["images"] == 2


def test_three_images_are_inconclusive(demo_site) -> None:
    oim, _ = demo_site["other_site"]
    verdict, findings, _ = _grade(demo_site, oim[:3], claimed=0.5)
    assert verdict == "Inconclusive"
    (f,) = [f for f in findings if f["subject"] == "synthetic sample size"]
    assert f["level"] == "Inconclusive" and "only 3 synthetic" in f["reason"]


def test_demo_sample_sizes_cannot_resolve_a_claim_of_ten(demo_site) -> None:
    oim, oco = demo_site["other_site"]
    verdict, findings, res = _grade(demo_site, oim, conds=oco, claimed=10.0)
    assert verdict == "Inconclusive", [f for f in findings if f["level"] != "Green"]
    (f,) = [f for f in findings if f["subject"] == "privacy claim"]
    need = f["values"]["patients_needed"]
    assert res["epsilon"]["max_resolvable"] < 1.0 and need > 1000 and f"about {need} member" in f["reason"]
    # the 1% FPR check cannot be made with 10 non-members in the evaluation half: said once, not a pass
    (u,) = [f for f in findings if f["subject"] == "non-member sample size"]
    assert u["level"] == "Inconclusive" and "holds 10" in u["reason"]


@pytest.fixture(scope="module")
def big_site():
    """Enough held-out patients (210) for the 1% FPR heading, so a small claim is resolvable."""
    return _site(250, 60, slices=4)


@pytest.mark.parametrize("kind", ["other_site", "uniform_noise", "gaussian_noise"])
def test_clean_sets_are_green_when_the_claim_is_resolvable(big_site, kind) -> None:
    g = np.random.default_rng(1)
    oim, oco = big_site["other_site"]
    images = {"other_site": oim,
              "uniform_noise": g.uniform(-1, 1, size=(120, 4, 16, 16)),
              "gaussian_noise": np.clip(g.normal(0, 0.5, size=(120, 4, 16, 16)), -1, 1)}[kind].astype(np.float32)
    verdict, findings, res = _grade(big_site, images, claimed=1.0, conds=oco if kind == "other_site" else None)
    assert res["epsilon"]["max_resolvable"] >= 1.0  # the claim CAN be contradicted at these sizes
    assert verdict == "Green", [f for f in findings if f["level"] != "Green"]
    assert res["copies"]["count"] == 0


def test_write_synthetic_is_byte_for_byte_reproducible_and_records_the_generator(tmp_path) -> None:
    from safetensors.numpy import load_file

    from secgan.gan.synthetic import GENERATOR_SHA256, SYNTHETIC_FILE, read_synthetic, read_synthetic_metadata, write_synthetic

    g = np.random.default_rng(0)
    im = g.uniform(-1, 1, size=(5, 4, 16, 16)).astype(np.float32)
    co = g.uniform(0, 1, size=(5, 4, 16, 16)).astype(np.float32)
    ck = tmp_path / "g.safetensors"
    ck.write_bytes(b"a generator")
    meta = {"seed": 3, "source": "procedural", "z": 1, "a": 2}
    files = []
    for k in range(4):
        write_synthetic(tmp_path / f"s{k}", im, co, previews=False, nifti=False, meta=meta, generator_checkpoint=ck)
        files.append((tmp_path / f"s{k}" / SYNTHETIC_FILE).read_bytes())
    assert all(f == files[0] for f in files)
    back_im, back_co = read_synthetic(tmp_path / "s0")
    assert np.array_equal(back_im, im) and np.array_equal(back_co, co)
    assert np.array_equal(load_file(str(tmp_path / "s0" / SYNTHETIC_FILE))["images"], im)  # the library reads it
    import hashlib

    assert read_synthetic_metadata(tmp_path / "s0")[GENERATOR_SHA256] == hashlib.sha256(b"a generator").hexdigest()


@pytest.fixture(scope="module")
def site32():
    """20 training and 10 held-out patients at 32 px (warps need a few pixels), another site's 20."""
    im, co, gr = phantom_slices(range(1, 31), size=32, slices=8)
    members, nonmembers = _cohorts(im, co, gr, gr < 20)
    oim, oco, _ = phantom_slices(range(1, 21), size=32, slices=8, site=2)
    return {"members": members, "nonmembers": nonmembers, "other_site": (oim, oco)}


def test_warped_copies_of_training_slices_are_red(site32) -> None:
    m = site32["members"]
    pick = np.random.default_rng(4).choice(len(m), 40, replace=False)
    syn = warped_copies(m.images[pick], rng=np.random.default_rng(5))
    verdict, findings, res = _grade(site32, syn, claimed=9.98, conds=m.conds[pick])
    assert verdict == "Red"
    c = res["copies"]
    assert c["exact"] == 0 and c["count"] >= 20 and c["by_set"]["training"]["images"] == c["count"]
    assert _levels(findings, "copies of real images") == ["Red"]


def test_another_sites_patients_are_no_copies_at_32px(site32) -> None:
    oim, oco = site32["other_site"]
    verdict, findings, res = _grade(site32, oim, claimed=9.98, conds=oco)
    assert res["copies"]["count"] == 0 and _levels(findings, "copies of real images") == ["Green"]
    assert verdict == "Inconclusive"  # 10 held-out patients cannot resolve the claim; nothing else is flagged


def test_the_real_embedding_is_cached_per_data_and_invalidated_by_it(tmp_path) -> None:
    import stat

    from audits.features import EmbeddingConfig, train_embedding

    im, _, _ = phantom_slices(range(1, 5), size=16, slices=8)
    cfg = EmbeddingConfig(epochs=1)
    first = train_embedding(im, seed=1, config=cfg, cache_dir=tmp_path)
    (cached,) = list(tmp_path.iterdir())
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    again = train_embedding(im, seed=1, config=cfg, cache_dir=tmp_path)
    assert again.cached and not first.cached and again.losses == first.losses
    assert np.array_equal(again.transform(im), first.transform(im))
    changed = im.copy()
    changed[0, 0, 0, 0] += 0.5
    assert not train_embedding(changed, seed=1, config=cfg, cache_dir=tmp_path).cached
    assert len(list(tmp_path.iterdir())) == 2

"""The public phantom style: the sites' phantoms unchanged, a public cohort that differs measurably
(per-class intensities, tumour sizes) and shares no patient with any site."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from secgan.cli import main
from secgan.data.dataset import load_site
from secgan.data.phantom import PUBLIC_STYLE, SITE_STYLE, synthesize_case, write_phantom

# SHA-256 over synthesize_case(7, site, patient, size=32, slices=12, with_tissue=True) for sites 1-3 and
# patients 1, 2, 5, computed with the generator as it was before styles existed: the sites' phantoms
# (and so every earlier measurement on them) must not change.
SITES_KNOWN_ANSWER = "2e5b153b13242f51cf24d2b4236e42fd1a1a7c53d1d3576a9d92a00bf12fb57d"


def _digest(**kw) -> str:
    h = hashlib.sha256()
    for site in (1, 2, 3):
        for patient in (1, 2, 5):
            vols, seg, aff, tissue = synthesize_case(7, site, patient, size=32, slices=12, with_tissue=True, **kw)
            for k in sorted(vols):
                h.update(k.encode())
                h.update(vols[k].tobytes())
                h.update(str(vols[k].dtype).encode())
            h.update(seg.tobytes())
            h.update(aff.tobytes())
            h.update(tissue.tobytes())
    return h.hexdigest()


def test_site_style_is_byte_identical_to_the_original_generator():
    assert _digest() == SITES_KNOWN_ANSWER
    assert _digest(style=SITE_STYLE) == SITES_KNOWN_ANSWER
    assert _digest(style=PUBLIC_STYLE) != SITES_KNOWN_ANSWER


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("cohorts")
    sites = write_phantom(root / "sites", sites=3, patients=6, seed=3, size=32, slices=12)
    assert main(["phantom", "--public", "--out", str(root / "public"), "--patients", "8", "--seed", "3",
                 "--size", "32", "--slices", "12"]) == 0
    return sites, root / "public" / "site-1"


def test_public_cohort_is_written_in_the_brats_layout(cohorts):
    _, public = cohorts
    assert sorted(p.name for p in public.parent.iterdir()) == ["site-1"]  # one cohort by default
    cases = sorted(p.name for p in public.iterdir() if p.is_dir())
    assert cases == [f"Public1-P{i:03d}" for i in range(1, 9)]
    for cid in cases:
        assert sorted(p.name for p in (public / cid).iterdir()) == sorted(
            f"{cid}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair", "seg"))
    split = json.loads((public / "split.json").read_text())
    assert sorted(split["train"] + split["test"]) == cases
    assert load_site(public, split="all", image_size=32).n_patients == 8  # the ordinary reader takes it


def _class_means(site: Path) -> dict[tuple[str, int], float]:
    """Mean normalised intensity (what G and D see) per (class, modality) over every patient."""
    im, _, sg, _ = load_site(site, split="all", image_size=32).all_slices()
    brain = im.max(axis=1) > -1.0
    masks = {"brain": brain & (sg == 0), "ncr": sg == 1, "ed": sg == 2, "et": sg == 4}
    return {(c, m): float(im[:, m][mask].mean()) for c, mask in masks.items() for m in range(4)}


def test_public_cohort_differs_in_per_class_intensities(cohorts):
    sites, public = cohorts
    per_site = [_class_means(s) for s in sites]
    pub = _class_means(public)
    # how far the public mean lies outside the range the three sites span, per (class, modality)
    outside = {}
    for key, value in pub.items():
        lo, hi = min(s[key] for s in per_site), max(s[key] for s in per_site)
        outside[key] = max(lo - value, value - hi, 0.0)
    clear = {k: round(v, 3) for k, v in outside.items() if v > 0.1}
    # e.g. oedema on FLAIR and the enhancing rim on T1ce are darker, oedema and necrosis on T1 brighter
    assert len(clear) >= 4, (clear, pub)
    assert {("ed", 3), ("et", 1)} <= set(clear)


def test_public_tumour_size_prior_is_larger():
    def mean_tumour_voxels(style, sites) -> float:
        return float(np.mean([(synthesize_case(3, s, p, size=32, slices=12, style=style)[1] > 0).sum()
                              for s in sites for p in range(1, 9)]))

    site_sizes = [mean_tumour_voxels(SITE_STYLE, [s]) for s in (1, 2, 3)]
    public = mean_tumour_voxels(PUBLIC_STYLE, [1])
    assert public > max(site_sizes) and public > 1.3 * float(np.mean(site_sizes))


def test_public_cohort_shares_no_patient_with_any_site(cohorts):
    sites, public = cohorts
    pub_ids = {p.name for p in public.iterdir() if p.is_dir()}
    site_ids = {p.name for s in sites for p in s.iterdir() if p.is_dir()}
    assert not pub_ids & site_ids
    # nor the anatomy: same seed, same (site, patient) numbers, yet no public label map equals a site's
    site_segs = {synthesize_case(3, s, p, size=32, slices=12)[1].tobytes() for s in (1, 2, 3) for p in range(1, 7)}
    for p in range(1, 9):
        seg = synthesize_case(3, 1, p, size=32, slices=12, style=PUBLIC_STYLE)[1]
        assert seg.tobytes() not in site_segs
    a = synthesize_case(3, 1, 1, size=32, slices=12, with_tissue=True)[3]
    b = synthesize_case(3, 1, 1, size=32, slices=12, with_tissue=True, style=PUBLIC_STYLE)[3]
    assert (a != b).mean() > 0.05  # a different head, not the same one re-contrasted

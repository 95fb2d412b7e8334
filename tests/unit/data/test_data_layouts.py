"""Every public release layout reads the same patient into the same slices; labels are mapped onto
the internal convention (a post-treatment resection cavity is never tumour); the layout is
detected and can be forced."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from secgan.core.errors import DataError
from secgan.core.spec import REGIONS
from secgan.data.brats import CaseError, read_case
from secgan.data.dataset import load_site
from secgan.data.labels import RESECTION_CAVITY
from secgan.data.layouts import LAYOUTS, detect_layout, discover_cases
from secgan.evaluation.metrics import region_masks

from . import layout_fixtures as fx

SIZE = 32


def _slices(site: Path, **kw):
    ds = load_site(site, split="train", image_size=SIZE, min_tumour_pixels=1, **kw)
    im, co, sg, _ = ds.all_slices()
    return im, co, sg


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, Path]:
    """The same two patients in every layout (and re-oriented copies)."""
    root = tmp_path_factory.mktemp("releases")
    pats = [fx.patient(0), fx.patient(1)]
    sites = {k: root / k for k in ("brats2021", "brats2018", "brats2023", "msd", "ras", "permuted")}
    ids = {"brats2021": ["BraTS2021_00000", "BraTS2021_00001"], "brats2018": ["Brats18_2013_2_1", "Brats18_TCIA01_1"],
           "brats2023": ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"], "msd": ["BRATS_001", "BRATS_002"],
           "ras": ["R0", "R1"], "permuted": ["P0", "P1"]}
    for (vols, seg), a, b, c, d in zip(pats, ids["brats2021"], ids["brats2018"], ids["brats2023"], ids["msd"]):
        src = fx.brats2021_case(sites["brats2021"], a, vols, seg)
        fx.brats2021_case(sites["brats2018"], b, vols, seg, sub="HGG" if b.endswith("2_1") else "LGG")
        fx.gli_case(sites["brats2023"], c, vols, seg)
        fx.msd_case(sites["msd"], d, vols, seg)
        fx.reoriented_copy(src, sites["ras"] / ("R" + a[-1]), "ras")
        fx.reoriented_copy(src, sites["permuted"] / ("P" + a[-1]), "permuted")
    for k, site in sites.items():
        fx.write_split(site, ids[k])
    return sites


def test_layouts_are_detected(releases):
    assert detect_layout(releases["brats2021"]).name == "brats2021"
    assert detect_layout(releases["brats2018"]).name == "brats2021"
    assert detect_layout(releases["brats2023"]).name == "brats2023"
    assert detect_layout(releases["msd"]).name == "msd"
    assert sorted(discover_cases(releases["brats2018"], LAYOUTS["brats2021"])) == ["Brats18_2013_2_1", "Brats18_TCIA01_1"]


def test_layout_found_is_logged(releases, caplog):
    with caplog.at_level(logging.INFO, logger="secgan.data.dataset"):
        _slices(releases["msd"])
    found = [r for r in caplog.records if r.getMessage() == "layout_found"]
    assert found and found[0].secgan_fields["layout"] == "msd"


def test_same_patient_same_slices_in_every_layout_and_orientation(releases):
    ref = _slices(releases["brats2021"])
    assert ref[0].shape[0] > 4
    for name in ("brats2018", "brats2023", "msd", "ras", "permuted"):
        got = _slices(releases[name])
        for a, b in zip(ref, got):
            assert a.shape == b.shape and np.array_equal(a, b), name


def test_canonical_arrays_match_the_defined_patient(releases):
    vols, seg = fx.patient(0)
    for name in ("brats2021", "brats2023", "ras", "permuted"):
        site = releases[name]
        layout = detect_layout(site)
        files = discover_cases(site, layout)[sorted(discover_cases(site, layout))[0]]
        case = read_case(files, layout=layout)
        assert np.array_equal(case.seg, seg), name
        assert np.array_equal(case.volumes["t1ce"], vols["t1ce"].astype(np.float32)), name
        assert case.source_orientation == {"ras": "RAS", "permuted": "SLP"}.get(name, "LPS"), name
        assert np.allclose(np.abs(np.diag(case.affine)[:3]), 1.0) and np.all(np.diag(case.affine)[:3] > 0)


def test_regions_are_correct_for_every_layout(releases):
    _, seg = fx.patient(0)
    truth = region_masks(seg)
    for name in ("brats2021", "brats2023", "msd"):
        site = releases[name]
        layout = detect_layout(site)
        cid = sorted(discover_cases(site, layout))[0]
        got = region_masks(read_case(discover_cases(site, layout)[cid], layout=layout).seg)
        assert np.array_equal(got, truth), name
        assert got[0].sum() > got[1].sum() > got[2].sum() > 0  # wt > tc > et, all present


def test_msd_labels_keep_their_meaning(tmp_path):
    vols, seg = fx.patient(2)
    fx.msd_case(tmp_path, "BRATS_003", vols, seg)
    case = read_case(discover_cases(tmp_path, LAYOUTS["msd"])["BRATS_003"], layout=LAYOUTS["msd"])
    # MSD 1 = oedema -> internal 2, MSD 2 = non-enhancing -> internal 1, MSD 3 = enhancing -> internal 4
    assert np.array_equal(case.seg, seg)
    assert np.array_equal(case.volumes["flair"], vols["flair"].astype(np.float32))


def test_post_treatment_cavity_is_refused_under_brats2023(tmp_path):
    vols, seg = fx.patient(3, cavity=True)
    fx.gli_case(tmp_path, "BraTS-GLI-02073-100", vols, seg)
    fx.write_split(tmp_path, ["BraTS-GLI-02073-100"])
    with pytest.raises(CaseError) as info:
        load_site(tmp_path, image_size=SIZE)
    msg = str(info.value)
    assert "BraTS-GLI-02073-100-seg.nii.gz" in msg and "resection cavity" in msg and "brats2024-post" in msg


def test_post_treatment_cavity_is_its_own_class_never_tumour(tmp_path):
    vols, seg = fx.patient(3, cavity=True)
    assert (seg == RESECTION_CAVITY).sum() > 20
    fx.gli_case(tmp_path, "BraTS-GLI-02073-100", vols, seg)
    fx.write_split(tmp_path, ["BraTS-GLI-02073-100"])
    files = discover_cases(tmp_path, LAYOUTS["brats2024-post"])["BraTS-GLI-02073-100"]
    case = read_case(files, layout=LAYOUTS["brats2024-post"])
    assert np.array_equal(case.seg, seg)
    cavity = case.seg == RESECTION_CAVITY
    for region in region_masks(case.seg):
        assert not (region & cavity).any()
    ds = load_site(tmp_path, image_size=48, min_tumour_pixels=1, layout="brats2024-post", crop="none")
    _, conds, segs, _ = ds.all_slices()
    cav = segs == RESECTION_CAVITY
    assert cav.any()
    assert np.all(conds[:, 0][cav] == 1.0)  # brain
    assert not conds[:, 1:].transpose(1, 0, 2, 3)[:, cav].any()  # in no tumour channel
    assert set(np.unique(segs).tolist()) <= {0, 1, 2, 4, RESECTION_CAVITY}
    assert REGIONS["wt"] == (1, 2, 4)


def test_forced_layout_that_does_not_match_names_the_missing_file(releases):
    with pytest.raises(DataError) as info:
        load_site(releases["brats2023"], image_size=SIZE, layout="brats2021")
    assert "BraTS-GLI-00000-000_t1.nii.gz" in str(info.value) and "missing" in str(info.value)


def test_unknown_layout_name_is_refused(releases):
    with pytest.raises(DataError, match="unknown layout"):
        load_site(releases["brats2021"], image_size=SIZE, layout="brats2019")


def test_folder_without_any_layout_says_what_it_expected(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "scan.nii.gz").write_bytes(b"")
    fx.write_split(tmp_path, ["x"])
    with pytest.raises(DataError, match="no known layout"):
        load_site(tmp_path, image_size=SIZE)


def test_msd_ignores_resource_forks(releases, tmp_path):
    import shutil

    site = tmp_path / "msd"
    shutil.copytree(releases["msd"], site)
    (site / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\0" * 100)
    assert sorted(discover_cases(site, LAYOUTS["msd"])) == ["BRATS_001", "BRATS_002"]

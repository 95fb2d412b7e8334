"""``secgan data check``: a clean report on the phantom, a precise one on a broken folder, a non-zero
exit when anything is bad, and nothing sent anywhere."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from secgan.cli import main
from secgan.data.phantom import write_phantom

from . import layout_fixtures as fx


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("data check opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _check(capsys, *argv) -> tuple[int, dict]:
    rc = main(["data", "check", *map(str, argv), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_clean_report_on_the_phantom(tmp_path: Path, capsys):
    write_phantom(tmp_path, sites=2, patients=3, seed=4, size=32, slices=12)
    rc, rep = _check(capsys, tmp_path, "--image-size", "32")
    assert rc == 0 and rep["ok"] and len(rep["sites"]) == 2
    for site in rep["sites"]:
        assert site["layout"] == "brats2021" and site["layout_detected"] and site["problems"] == []
        assert site["split"] == {"train": 2, "test": 1, "not_listed": 0}
        s = site["summary"]
        assert s == {**s, "cases": 3, "ok": 3, "bad": 0, "orientations": {"RAS": 3}, "spacings_mm": {"1x1x1": 3}}
        assert s["label_voxels"]["ed"] > s["label_voxels"]["ncr"] > 0 and s["label_voxels"]["rc"] == 0
        assert s["slices_kept"]["min"] > 0 and s["slices_kept"]["total"] == sum(c["slices_kept"] for c in site["cases"])
        for c in site["cases"]:
            assert c["ok"] and c["warnings"] == [] and c["shape"] == [32, 32, 12]
    rc = main(["data", "check", str(tmp_path / "site-1"), "--image-size", "32"])
    text = capsys.readouterr().out
    assert rc == 0 and "layout brats2021" in text and "data check: OK" in text and "OK   Site1-P001" in text


def test_precise_report_on_a_broken_folder(tmp_path: Path, capsys):
    site = tmp_path / "site"
    ids = [f"BraTS-GLI-0000{k}-000" for k in range(5)]
    for k, cid in enumerate(ids):
        vols, seg = fx.patient(k, cavity=(k == 2))
        fx.gli_case(site, cid, vols, seg)
    fx.write_split(site, ids[:3], ids[3:4])  # ids[4] is not listed
    d = bytearray((site / ids[0] / f"{ids[0]}-t2w.nii.gz").read_bytes())
    for i in range(len(d) // 2, len(d) // 2 + 64):
        d[i] ^= 0xFF
    (site / ids[0] / f"{ids[0]}-t2w.nii.gz").write_bytes(bytes(d))
    (site / ids[1] / f"{ids[1]}-seg.nii.gz").unlink()
    nib.save(nib.Nifti1Image(np.zeros(fx.SHAPE + (4,), np.int16), fx.lps_affine()), str(site / ids[3] / f"{ids[3]}-t1n.nii.gz"))
    rc, rep = _check(capsys, site, "--image-size", "32")
    assert rc == 2 and not rep["ok"]
    (s,) = rep["sites"]
    assert s["layout"] == "brats2023" and s["split"] == {"train": 3, "test": 1, "not_listed": 1}
    by = {c["case"]: c for c in s["cases"]}
    assert by[ids[0]]["file"] == f"{ids[0]}/{ids[0]}-t2w.nii.gz" and "gzip integrity" in by[ids[0]]["reason"]
    assert by[ids[1]]["file"] == f"{ids[1]}/{ids[1]}-seg.nii.gz" and "missing" in by[ids[1]]["reason"]
    assert "resection cavity" in by[ids[2]]["reason"] and "brats2024-post" in by[ids[2]]["reason"]
    assert "msd" in by[ids[3]]["reason"]
    assert by[ids[4]]["ok"] and by[ids[4]]["orientation"] == "LPS" and by[ids[4]]["labels"]["et"] > 0
    assert s["summary"]["bad"] == 4 and s["summary"]["ok"] == 1
    # The post-treatment case is fine once the layout says what label 4 is.
    rc, rep = _check(capsys, site, "--image-size", "32", "--layout", "brats2024-post")
    by = {c["case"]: c for c in rep["sites"][0]["cases"]}
    assert by[ids[2]]["ok"] and by[ids[2]]["labels"]["rc"] > 0
    main(["data", "check", str(site), "--image-size", "32"])
    text = capsys.readouterr().out
    assert f"BAD  {ids[0]}: {ids[0]}/{ids[0]}-t2w.nii.gz: compressed data" in text and "NOT OK" in text


def test_folder_without_split_or_layout_is_not_ok(tmp_path: Path, capsys):
    vols, seg = fx.patient(0)
    fx.brats2021_case(tmp_path / "s", "BraTS2021_00000", vols, seg)
    rc, rep = _check(capsys, tmp_path / "s", "--image-size", "32")
    assert rc == 2 and rep["sites"][0]["cases"][0]["ok"] and "split file is missing" in rep["sites"][0]["problems"][0]
    (tmp_path / "empty").mkdir()
    rc, rep = _check(capsys, tmp_path / "empty")
    assert rc == 2 and "no known layout" in rep["sites"][0]["problems"][0]


def test_not_skull_stripped_is_a_warning(tmp_path: Path, capsys):
    g = np.random.default_rng(0)
    _, seg = fx.patient(0)
    vols = {m: g.integers(200, 1000, size=fx.SHAPE).astype(np.int16) for m in fx.MODS}
    fx.brats2021_case(tmp_path, "BraTS2021_00000", vols, seg)
    fx.write_split(tmp_path, ["BraTS2021_00000"])
    rc, rep = _check(capsys, tmp_path, "--image-size", "32")
    (c,) = rep["sites"][0]["cases"]
    assert rc == 0 and any("skull-stripped" in w for w in c["warnings"])

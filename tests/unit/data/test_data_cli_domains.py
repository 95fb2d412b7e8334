"""``secgan phantom --domain nuclei|derm`` through the real CLI dispatcher, read back by their readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from secgan.cli import main
from secgan.data.isic import read_isic
from secgan.data.tiles import read_tiles


def test_nuclei_phantom_command(tmp_path: Path, capsys) -> None:
    out = tmp_path / "nuclei"
    rc = main(["phantom", "--domain", "nuclei", "--out", str(out), "--patients", "3", "--tiles", "2", "--size", "32"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["site-1", "site-2", "site-3", "site-4"]  # one per organ
    assert str(out / "site-4") in capsys.readouterr().out
    ts = read_tiles(out / "site-3", split="all")
    assert ts.images.shape == (6, 3, 32, 32) and len(ts.case_ids) == 3


def test_derm_phantom_command(tmp_path: Path, capsys) -> None:
    out = tmp_path / "derm"
    rc = main(["phantom", "--domain", "derm", "--out", str(out), "--sites", "2", "--patients", "4", "--size", "32"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["site-1", "site-2"]
    ls = read_isic(out / "site-2", split="all", image_size=32)
    assert len(ls.patient_ids) == 4 and len(ls.image_ids) >= 4


def test_domain_arguments_are_checked(tmp_path: Path, capsys) -> None:
    assert main(["phantom", "--domain", "nuclei", "--out", str(tmp_path), "--tiles", "0"]) == 2
    assert "tiles" in capsys.readouterr().err
    assert main(["phantom", "--domain", "derm", "--out", str(tmp_path), "--public"]) == 2
    assert "--public" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["phantom", "--domain", "skin", "--out", str(tmp_path)])
    assert exit_.value.code == 2

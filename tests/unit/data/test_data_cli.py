"""``secgan phantom`` through the real CLI dispatcher."""

from __future__ import annotations

from pathlib import Path

from secgan.cli import main
from secgan.data.dataset import load_site


def test_phantom_command_writes_a_loadable_federation(tmp_path: Path, capsys):
    out = tmp_path / "fed"
    rc = main(["phantom", "--out", str(out), "--sites", "2", "--patients", "3", "--seed", "3", "--size", "32", "--slices", "16"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["site-1", "site-2"]
    assert str(out / "site-1") in capsys.readouterr().out
    ds = load_site(out / "site-2", split="all", image_size=32, min_tumour_pixels=1)
    assert ds.n_patients == 3


def test_phantom_command_rejects_bad_arguments(tmp_path: Path, capsys):
    rc = main(["phantom", "--out", str(tmp_path), "--patients", "1"])
    assert rc == 2
    assert "patients" in capsys.readouterr().err

"""``secgan projection`` on a real ISIC-style folder (the derm phantom) and a real checkpoint file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from secgan.cli import main
from secgan.core.config import to_dict
from secgan.core.spec import ImageSpec, rgb_spec
from secgan.data.derm import DERM_CLASSES, write_derm_phantom
from secgan.gan.checkpoint import save_checkpoint
from secgan.gan.config import ModelConfig
from secgan.gan.models import build_generator
from secgan.run.config import RunConfig

MODEL = ModelConfig(g_width=8, g_depth=2, d_width=8, d_layers=2, noise_dim=4)


def _checkpoint(path: Path, image: ImageSpec) -> Path:
    G = build_generator(MODEL, image, seed=0)
    return save_checkpoint(path, generator=G, optimizer=torch.optim.Adam(G.parameters()), step=1, rng_state={},
                           meta={}, config=to_dict(RunConfig(image=image, model=MODEL)))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return write_derm_phantom(tmp_path_factory.mktemp("derm"), sites=1, patients=8, seed=3, size=16,
                              test_fraction=0.5)[0]


def test_projection_runs_on_an_isic_folder_per_patient(tmp_path, site, capsys) -> None:
    ck = _checkpoint(tmp_path / "g.safetensors", rgb_spec(16, condition="class", cond_names=DERM_CLASSES))
    out = tmp_path / "projection.json"
    rc = main(["projection", "--checkpoint", str(ck), "--site", str(site), "--out", str(out), "--steps", "3",
               "--restarts", "1"])
    assert rc == 0
    first, summary = capsys.readouterr().out.strip().splitlines()[-2:]
    assert json.loads(first)["verdict"] in ("no evidence", "inconclusive", "memorisation")
    saved = json.loads(out.read_text())
    assert saved["unit"] == "patient" and saved["n_train"] + saved["n_heldout"] == 8
    assert saved["summary"] == summary and 0.0 <= saved["auc"] <= 1.0


def test_projection_refuses_a_generator_of_another_image_kind(tmp_path, site, capsys) -> None:
    ck = _checkpoint(tmp_path / "g.safetensors", ImageSpec(size=16))  # brain: 4 channels, label maps
    rc = main(["projection", "--checkpoint", str(ck), "--site", str(site)])
    assert rc != 0 and "RGB generator with a class or no condition" in capsys.readouterr().err


def test_projection_reports_a_bad_setting_in_one_line(tmp_path, site, capsys) -> None:
    ck = _checkpoint(tmp_path / "g.safetensors", rgb_spec(16, condition="none"))
    rc = main(["projection", "--checkpoint", str(ck), "--site", str(site), "--steps", "0"])
    err = capsys.readouterr().err
    assert rc != 0 and "steps must be an integer >= 1" in err and "Traceback" not in err

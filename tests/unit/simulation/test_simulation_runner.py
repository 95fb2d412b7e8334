from __future__ import annotations

import json
from pathlib import Path

import pytest

from secgan.cli import main
from secgan.core.errors import ConfigError
from secgan.run.config import load_run_config
from secgan.gan.synthetic import read_synthetic

CONFIG = """
run_id = "t"
[image]
size = 32
[model]
g_width = 8
g_depth = 2
d_width = 8
d_layers = 2
noise_dim = 4
[train]
steps = {steps}
batch_size = 2
checkpoint_every = 2
seed = 3
[data]
site_dirs = [{sites}]
[privacy]
mode = "off"
allow_off = true
"""


def _config(tmp_path: Path, phantom_root: Path, steps: int = 3, name: str = "run.toml") -> Path:
    sites = ", ".join(f'"{phantom_root / f"site-{k}"}"' for k in (1, 2, 3))
    p = tmp_path / name
    p.write_text(CONFIG.format(steps=steps, sites=sites))
    return p


def test_train_and_sample_end_to_end_through_the_cli(tmp_path: Path, phantom_root: Path) -> None:
    from secgan.gan.checkpoint import load_checkpoint

    cfg_path = _config(tmp_path, phantom_root, steps=3)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "run.json").read_text())
    assert summary["steps_done"] == 3 and summary["stopped"] == "completed"
    assert {s["steps_served"] for s in summary["sites"].values()} == {3}
    assert all(s["epsilon"] is None and s["active"] for s in summary["sites"].values())
    assert (out / "sites" / "site-2" / "discriminator.safetensors").is_file()
    assert sorted(p.name for p in (out / "previews").glob("step-*.png")) == ["step-000002.png", "step-000003.png"]
    assert load_checkpoint(out / "checkpoint").step == 3
    # running again into the same folder without --resume is refused (exit code 2, nothing overwritten)
    assert main(["train", "--config", str(cfg_path), "--out", str(out), "--no-progress"]) == 2

    samples = tmp_path / "samples"
    assert main(["sample", "--checkpoint", str(out / "checkpoint"), "--n", "5", "--out", str(samples), "--seed", "1"]) == 0
    images, conds = read_synthetic(samples)
    assert images.shape == (5, 4, 32, 32) and conds.shape == (5, 4, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    again = tmp_path / "again"
    assert main(["sample", "--checkpoint", str(out / "checkpoint"), "--n", "5", "--out", str(again), "--seed", "1",
                 "--no-nifti", "--no-previews"]) == 0
    assert (read_synthetic(again)[0] == images).all()


@pytest.mark.parametrize("g_average", [0.0, 0.9])
def test_resume_gives_the_same_generator_as_an_uninterrupted_run(tmp_path: Path, phantom_root: Path, g_average: float) -> None:
    import dataclasses

    import torch

    from secgan.gan.checkpoint import load_checkpoint
    from secgan.simulation.runner import run_inprocess

    cfg = load_run_config(_config(tmp_path, phantom_root, steps=4))
    cfg = dataclasses.replace(cfg, previews=False, train=dataclasses.replace(cfg.train, g_average=g_average))
    run_inprocess(cfg, out_dir=tmp_path / "straight", progress=False)
    first = run_inprocess(cfg, out_dir=tmp_path / "split", progress=False, stop_at=2)
    assert first["stopped"] == "stopped_early" and first["steps_done"] == 2
    r = run_inprocess(cfg, out_dir=tmp_path / "split", resume=True, progress=False)
    assert r["started_at_step"] == 2 and r["steps_done"] == 4
    assert {s["steps_served"] for s in r["sites"].values()} == {4}
    straight, split = load_checkpoint(tmp_path / "straight" / "checkpoint"), load_checkpoint(tmp_path / "split" / "checkpoint")
    a, b = straight.generator_state, split.generator_state
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if g_average:
        # the moving average survives the interruption and is what the checkpoint's G samples with
        for k in a:
            assert torch.equal(straight.average_state[k], split.average_state[k]), k
        assert any(not torch.equal(a[k], straight.average_state[k]) for k in a)
        built = straight.build_generator().state_dict()
        assert all(torch.equal(built[k], straight.average_state[k]) for k in a)
        raw = straight.build_generator(average=False).state_dict()
        assert all(torch.equal(raw[k], a[k]) for k in a)
    else:
        assert straight.average_state is None
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr_g=1e-3))
    with pytest.raises(ConfigError, match="different run config"):
        run_inprocess(other, out_dir=tmp_path / "split", resume=True, progress=False)


def test_runner_refuses_what_it_cannot_do(tmp_path: Path, phantom_root: Path) -> None:
    from secgan.simulation.runner import run_inprocess

    base = _config(tmp_path, phantom_root).read_text()
    p = tmp_path / "src.toml"
    p.write_text(base.replace("[data]\n", "[data]\ncondition_source = 'site'\n").replace(
        'allow_off = true', 'allow_off = true\naccept_sources = ["procedural", "site"]'))
    with pytest.raises(ConfigError, match="not supported"):
        run_inprocess(load_run_config(p), out_dir=tmp_path / "o1", progress=False)
    p.write_text(base.replace('allow_off = true', 'allow_off = true\naccept_sources = ["bank"]'))
    with pytest.raises(ConfigError, match="accept_sources"):
        run_inprocess(load_run_config(p), out_dir=tmp_path / "o2", progress=False)
    p.write_text(base.replace('site_dirs = [', 'site_dirs = [] #'))
    with pytest.raises(ConfigError, match="site_dirs"):
        run_inprocess(load_run_config(p), out_dir=tmp_path / "o3", progress=False)
    with pytest.raises(ConfigError, match="nothing to resume"):
        run_inprocess(load_run_config(_config(tmp_path, phantom_root)), out_dir=tmp_path / "o4", resume=True, progress=False)

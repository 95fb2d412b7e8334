"""Public pretraining: ``secgan pretrain``, ``train.init_from`` and ``policy.freeze_d_stages``.

Real parts throughout: a public phantom cohort on disk, the in-process runner, Opacus DP-SGD."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from secgan.cli import main
from secgan.core.errors import ConfigError, DataError
from secgan.gan.config import ModelConfig
from secgan.run.config import load_run_config

CONFIG = """
run_id = "pt"
previews = false
[image]
size = 16
[model]
g_width = 4
g_depth = 2
d_width = 4
d_layers = 2
d_arch = "semantic"
noise_dim = 2
norm_groups = 2
[train]
steps = {steps}
batch_size = 3
loss = "semantic"
g_average = 0.9
checkpoint_every = 1
seed = 5
{init}
[data]
site_dirs = [{sites}]
[privacy]
mode = "{mode}"
allow_off = true
noise_multiplier = 1.0
target_epsilon = 1000.0
expected_batch_size = 2
reproducible_noise = true
freeze_d_stages = {freeze}
"""


def _write_config(path: Path, sites: list[Path], *, steps: int = 2, init: Path | None = None, mode: str = "dpsgd",
                  freeze: int = 0) -> Path:
    path.write_text(CONFIG.format(steps=steps, sites=", ".join(f'"{s}"' for s in sites), mode=mode, freeze=freeze,
                                  init=f'init_from = "{init}"' if init else ""))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Two phantom sites, a public cohort and one finished pretraining (through the CLI)."""
    from secgan.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("pretrain")
    sites = write_phantom(root / "sites", sites=2, patients=4, seed=2, size=16, slices=8)
    assert main(["phantom", "--public", "--out", str(root / "public"), "--patients", "5", "--seed", "2",
                 "--size", "16", "--slices", "8"]) == 0
    cfg = _write_config(root / "run.toml", sites)
    assert main(["pretrain", "--config", str(cfg), "--public", str(root / "public"), "--out", str(root / "pre"),
                 "--steps", "2", "--no-progress"]) == 0
    return {"root": root, "sites": sites, "pre": root / "pre", "config": cfg}


def _module_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as fh:
        return {k[2:]: fh.get_tensor(k) for k in fh.keys() if k.startswith("M/")}


def test_pretrain_writes_safetensors_weights_and_a_record(world):
    pre = world["pre"]
    info = json.loads((pre / "pretrain.json").read_text())
    patients = info["trained_on"]["patients"]  # 5 written; a 16 px case may have no tumour slice to keep
    assert info["steps"] == 2 and patients in (4, 5) and info["trained_on"]["privacy_mode"] == "off"
    assert info["trained_on"]["public_cohort"] == "public" and len(info["trained_on"]["fingerprint"]) == 64
    assert info["model"]["d_width"] == 4 and info["image"]["size"] == 16
    run = json.loads((pre / "run.json").read_text())
    assert run["privacy_mode"] == "off" and list(run["sites"]) == ["site-1"]  # one simulated site, no DP
    for name in ("generator.safetensors", "generator-average.safetensors", "discriminator.safetensors"):
        blob = (pre / name).read_bytes()
        assert not blob.startswith(b"\x80") and b"PK\x03\x04" not in blob[:64]  # no pickle, no torch zip
        assert _module_tensors(pre / name)  # a plain safetensors file of module weights
    # the clip-norm calibration on public rows: quantiles for 0, 1, 2 frozen stages, median recommended
    clip = info["clip_norm"]
    assert set(clip["by_frozen_stages"]) == {"0", "1", "2"}
    for k, both in clip["by_frozen_stages"].items():
        for rows in both.values():
            assert rows["rows"] == patients * 4  # 4 draws of one slice per public patient
            assert 0 < rows["q10"] <= rows["q25"] <= rows["median"] <= rows["q75"] <= rows["q90"] <= rows["max"]
    assert clip["recommended"] == clip["by_frozen_stages"]["0"]["real_rows"]["median"]
    # fewer trainable parameters, smaller per-row norms
    assert clip["by_frozen_stages"]["2"]["real_rows"]["median"] < clip["recommended"]
    # a second call finds it finished and changes nothing
    stamp = (pre / "pretrain.json").stat().st_mtime_ns
    cfg = load_run_config(world["config"])
    from secgan.simulation.pretrain import pretrain

    assert pretrain(cfg, world["root"] / "public", pre)["steps"] == 2
    assert (pre / "pretrain.json").stat().st_mtime_ns == stamp


def test_calibrated_norms_are_the_per_row_gradient_norms(world):
    """The calibration's per-row norm equals the norm of Opacus's per-sample gradient of that row."""
    from opacus.grad_sample.utils import wrap_model

    from secgan.gan.models import build_discriminator
    from secgan.gan.pretrained import per_row_gradient_norms
    from secgan.gan.step import discriminator_loss

    cfg = load_run_config(world["config"])
    D = build_discriminator(cfg.model, cfg.image, seed=1)
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 4, 16, 16, generator=g) * 2 - 1
    cond = torch.zeros(3, 4, 16, 16)
    cond[:, 0, 2:14, 2:14] = 1
    cond[:, 2, 6:10, 6:10] = 1
    ours = per_row_gradient_norms(D, cond, img, loss="semantic", fake=False)[0]
    gs = wrap_model(D, "hooks", batch_first=True, loss_reduction="sum")
    discriminator_loss(gs, cond, img, cond[:0], img[:0], loss="semantic").sum().backward()
    ref = torch.sqrt(sum(p.grad_sample.flatten(1).pow(2).sum(1) for p in D.parameters())).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4)


def test_shape_mismatch_is_refused_naming_it(world, tmp_path: Path):
    from sites.learner import SiteLearner
    from secgan.simulation.runner import run_inprocess
    from tests.unit.privacy.privacy_helpers import dataset, policy

    pre = world["pre"]
    base = load_run_config(_write_config(tmp_path / "r.toml", world["sites"], init=pre))
    # G: another width
    wide = dataclasses.replace(base, model=dataclasses.replace(base.model, g_width=8))
    with pytest.raises(ConfigError, match=r"pretrained generator does not fit.*model\.g_width 4 \(pretrained\) vs 8"):
        run_inprocess(wide, out_dir=tmp_path / "wide", progress=False)
    # D (each site decides for its own D): another depth, in every privacy mode
    deep = dataclasses.replace(base.model, d_layers=3)
    for site_policy in (base.privacy, policy("off")):
        with pytest.raises(ConfigError, match=r"pretrained discriminator does not fit.*model\.d_layers 2 \(pretrained\) vs 3"):
            SiteLearner(dataset=dataset(4), policy=site_policy, model=deep, image=base.image, train=base.train,
                        state_dir=tmp_path / f"s-{site_policy.mode}", generator_seed=0)
    # a record that claims the right shape over weights of another: the tensor is named
    forged = tmp_path / "forged"
    shutil.copytree(pre, forged)
    from secgan.gan.checkpoint import save_module_state
    from secgan.gan.models import build_discriminator

    save_module_state(forged / "discriminator.safetensors",
                      build_discriminator(dataclasses.replace(base.model, d_width=8), base.image), None, {})
    with pytest.raises(ConfigError, match=r"discriminator does not fit.*tensor stem\.0\.weight is \(8, 4, 3, 3\)"):
        SiteLearner(dataset=dataset(4), policy=policy("off"), model=base.model, image=base.image,
                    train=dataclasses.replace(base.train, init_from=str(forged)), state_dir=tmp_path / "s-forged",
                    generator_seed=0)
    # a folder that is not a finished pretraining
    with pytest.raises(ConfigError, match="not a finished pretrain folder"):
        SiteLearner(dataset=dataset(4), policy=policy("off"), model=base.model, image=base.image,
                    train=dataclasses.replace(base.train, init_from=str(tmp_path)), state_dir=tmp_path / "s-unfinished",
                    generator_seed=0)


def test_pickle_in_place_of_weights_is_refused_without_unpickling(world, tmp_path: Path):
    from sites.learner import SiteLearner
    from tests.unit.privacy.privacy_helpers import dataset, policy

    cfg = load_run_config(world["config"])
    evil = tmp_path / "evil"
    shutil.copytree(world["pre"], evil)
    torch.save({"stem.0.weight": torch.zeros(1)}, evil / "discriminator.safetensors")  # a pickle
    with pytest.raises((ConfigError, DataError), match="not a readable safetensors"):
        SiteLearner(dataset=dataset(4), policy=policy("off"), model=cfg.model, image=cfg.image,
                    train=dataclasses.replace(cfg.train, init_from=str(evil)), state_dir=tmp_path / "s-evil",
                    generator_seed=0)


def test_init_applied_once_and_a_resumed_run_keeps_its_trained_weights(world, tmp_path: Path):
    from secgan.gan.checkpoint import load_checkpoint
    from secgan.simulation.runner import run_inprocess

    pre = tmp_path / "pre-copy"
    shutil.copytree(world["pre"], pre)
    cfg = load_run_config(_write_config(tmp_path / "r.toml", world["sites"], init=pre, steps=3))
    out = tmp_path / "run"
    run_inprocess(cfg, out_dir=out, progress=False, stop_at=0)  # nothing trained yet: the starting point
    ck = load_checkpoint(out / "checkpoint")
    pre_g, pre_ga, pre_d = (_module_tensors(pre / n) for n in
                            ("generator.safetensors", "generator-average.safetensors", "discriminator.safetensors"))
    assert all(torch.equal(ck.generator_state[k], v) for k, v in pre_g.items())
    assert all(torch.equal(ck.average_state[k], v) for k, v in pre_ga.items())
    for site in ("site-1", "site-2"):  # every site's D starts from the pretrained D
        d0 = _module_tensors(out / "sites" / site / "discriminator.safetensors")
        assert all(torch.equal(d0[k], v) for k, v in pre_d.items())
    # train one step, then resume WITHOUT the pretrain folder: a resumed run never re-reads it
    run_inprocess(cfg, out_dir=out, progress=False, resume=True, stop_at=1)
    trained = load_checkpoint(out / "checkpoint").generator_state
    d_trained = _module_tensors(out / "sites" / "site-1" / "discriminator.safetensors")
    assert any(not torch.equal(trained[k], v) for k, v in pre_g.items())
    shutil.rmtree(pre)
    summary = run_inprocess(cfg, out_dir=out, progress=False, resume=True)
    assert summary["steps_done"] == 3 and summary["started_at_step"] == 1
    # the learners restored their trained D, not the pretrained one (which is gone anyway)
    d_after = _module_tensors(out / "sites" / "site-1" / "discriminator.safetensors")
    assert any(not torch.equal(d_after[k], d_trained[k]) for k in d_trained)  # it kept training from there


def test_frozen_stages_get_no_update_and_no_noise(world, tmp_path: Path):
    from opacus.validators import ModuleValidator

    from secgan.gan.models import discriminator_stages
    from sites.learner import SiteLearner
    from tests.unit.privacy.privacy_helpers import batches, dataset

    cfg = load_run_config(_write_config(tmp_path / "r.toml", world["sites"], init=world["pre"], freeze=2))
    learner = SiteLearner(dataset=dataset(6), policy=cfg.privacy, model=cfg.model, image=cfg.image,
                          train=cfg.train, state_dir=tmp_path / "site", generator_seed=0)
    D = learner.discriminator
    assert ModuleValidator.validate(D, strict=False) == []  # Opacus still accepts the model
    stages = discriminator_stages(D)
    frozen = [p for st in stages[:2] for p in st.parameters()]
    trainable = [p for st in stages[2:] for p in st.parameters()]
    assert frozen and all(not p.requires_grad for p in frozen) and all(p.requires_grad for p in trainable)
    # the DP optimiser clips and noises exactly the trainable parameters
    noised = {id(p) for p in learner._dp.optimizer.params}
    assert noised == {id(p) for p in trainable}
    before = [p.detach().clone() for p in D.parameters()]
    pre_d = _module_tensors(world["pre"] / "discriminator.safetensors")
    # the frozen stages are the pretrained ones
    named = dict(D.named_parameters())
    assert all(torch.equal(named[k], pre_d[k]) for k in pre_d if any(named[k] is p for p in frozen))
    seen_noise_on_frozen = []
    original_add_noise = learner._dp.optimizer.add_noise

    def add_noise_spy():
        original_add_noise()
        seen_noise_on_frozen.extend(p.grad is not None for p in frozen)

    learner._dp.optimizer.add_noise = add_noise_spy
    for msg in batches(3, rows=3):
        learner.serve(msg)
    after = list(D.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(before, after)]
    assert not any(c for c, p in zip(changed, D.parameters()) if any(p is f for f in frozen))  # bit-identical
    assert all(c for c, p in zip(changed, D.parameters()) if any(p is t for t in trainable))
    assert seen_noise_on_frozen and not any(seen_noise_on_frozen)  # no gradient, so no noise, on frozen ones
    learner.save()
    # and a restart (resume) keeps them frozen
    learner._lock.release()
    again = SiteLearner(dataset=dataset(6), policy=cfg.privacy, model=cfg.model, image=cfg.image,
                        train=cfg.train, state_dir=tmp_path / "site", generator_seed=0)
    assert [p.requires_grad for p in again.discriminator.parameters()] == [p.requires_grad for p in D.parameters()]


def test_freezing_counts_and_limits():
    from secgan.gan.models import build_discriminator, discriminator_stages, freeze_discriminator_stages
    from secgan.core.spec import ImageSpec

    sweep_d = ModelConfig(d_width=8, d_layers=3, d_arch="semantic")  # the README sweep's D at 32 px
    counts = [freeze_discriminator_stages(build_discriminator(sweep_d, ImageSpec(size=32)), n) for n in (0, 1, 2)]
    assert counts == [48934, 48638, 46542]
    patch = build_discriminator(ModelConfig(d_width=8, d_layers=3), ImageSpec(size=32))
    assert len(discriminator_stages(patch)) == 5  # 3 strided convolutions, one stride-1, the logit
    with pytest.raises(ConfigError, match=r"freeze_d_stages = 5: this discriminator has 5 stages"):
        freeze_discriminator_stages(patch, 5)


def test_init_from_resolves_against_the_config_file(tmp_path: Path):
    path = _write_config(tmp_path / "r.toml", [tmp_path], init=Path("pre"))
    assert load_run_config(path).train.init_from == str((tmp_path / "pre").resolve())
    assert load_run_config(_write_config(tmp_path / "n.toml", [tmp_path])).train.init_from is None


def test_a_record_written_before_the_image_kinds_fits_a_brain_run_and_another_kind_is_refused(world, tmp_path: Path):
    """A pretrain record lists the image settings that existed when it was written. A record from
    before channel names, value range and condition kinds existed was trained with their brain
    defaults, so it fits a brain run, as an old checkpoint resumes; a record of another kind, or with
    a key no version wrote, is refused naming it."""
    from sites.learner import SiteLearner
    from tests.unit.privacy.privacy_helpers import dataset, policy

    base = load_run_config(_write_config(tmp_path / "r.toml", world["sites"], init=world["pre"]))

    def learner(record: dict, name: str) -> SiteLearner:
        folder = tmp_path / name
        shutil.copytree(world["pre"], folder)
        (folder / "pretrain.json").write_text(json.dumps(record))
        return SiteLearner(dataset=dataset(4), policy=policy("off"), model=base.model, image=base.image,
                           train=dataclasses.replace(base.train, init_from=str(folder)), state_dir=tmp_path / f"s-{name}",
                           generator_seed=0)

    record = json.loads((world["pre"] / "pretrain.json").read_text())
    old = dict(record, image={k: record["image"][k] for k in ("size", "image_channels", "cond_channels")})
    learner(old, "old")  # loads
    rgb = dict(record, image=dict(old["image"], image_channels=3, channel_names=["r", "g", "b"]))
    with pytest.raises(ConfigError, match=r"discriminator does not fit.*image\.image_channels 3 \(pretrained\) vs 4"):
        learner(rgb, "rgb")
    odd = dict(record, image=dict(old["image"], colour_space="lab"))
    with pytest.raises(ConfigError, match=r"pretrain record's settings are invalid.*image\.colour_space"):
        learner(odd, "odd")

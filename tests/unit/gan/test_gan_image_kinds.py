"""Image and condition types as configuration: every condition kind x channel count, end to end.

For each spec: G and every D variant build and pass Opacus's strict validator, a few in-process
steps train with DP-SGD on (per-patient rows), the checkpoint round-trips and is checked on load,
the batch message and the gradient reply round-trip through the codec, and a site with another
spec refuses the Welcome.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator

from secgan.core.config import to_dict
from secgan.core.errors import ConfigError, ProtocolError
from secgan.core.spec import ImageSpec, rgb_spec
from secgan.data.dataset import PatientSlices
from secgan.gan.config import ModelConfig, TrainConfig
from secgan.gan.models import build_discriminator, build_generator, iter_model_variants
from secgan.net import codec
from secgan.net.schema import (
    BATCH_OF_KIND, ClassBatch, FakeBatch, FreeBatch, GradientReply, Welcome, batch_conditions, batch_message,
)
from secgan.privacy.policy import PrivacyPolicy
from secgan.run.config import DataConfig, RunConfig

SIZE = 16
GREY = ImageSpec(size=SIZE, image_channels=1, channel_names=("grey",), value_range=(0.0, 1.0))
SPECS: dict[str, ImageSpec] = {
    "labelmap-4": ImageSpec(size=SIZE),
    "labelmap-1": GREY,
    "instances-3": rgb_spec(SIZE, condition="instances"),
    "instances-1": dataclasses.replace(rgb_spec(SIZE, condition="instances"), image_channels=1, channel_names=("h",)),
    "class-3": rgb_spec(SIZE, condition="class", cond_names=("nevus", "melanoma", "bcc"), class_prior=(8.0, 1.0, 1.0)),
    "class-4": dataclasses.replace(ImageSpec(size=SIZE), condition="class", cond_channels=2, cond_names=("lgg", "hgg")),
    "none-3": rgb_spec(SIZE, condition="none"),
    "none-1": ImageSpec(size=SIZE, image_channels=1, channel_names=("x",), condition="none", cond_channels=0,
                        cond_names=()),
}
MODEL = ModelConfig(g_width=4, g_depth=2, d_width=4, d_layers=2, noise_dim=2, norm_groups=2)
ENV = dict(run_id="r", round=1, step=0, site="s", seq=1)


def _dataset(image: ImageSpec, *, n: int = 6, slices: int = 2, seed: int = 0) -> PatientSlices:
    rng = np.random.default_rng(seed)
    lo, hi = image.value_range

    def cond() -> np.ndarray:
        if image.condition == "class":
            labels = rng.integers(image.cond_channels, size=slices)
            out = np.zeros((slices,) + image.cond_shape, np.float32)
            out[np.arange(slices), labels] = 1.0
            return out
        return (rng.random((slices,) + image.cond_shape) > 0.5).astype(np.float32)

    return PatientSlices(
        case_ids=[f"case-{i}" for i in range(n)],
        images=[rng.uniform(lo, hi, (slices,) + image.image_shape).astype(np.float32) for _ in range(n)],
        conds=[cond() for _ in range(n)],
        segs=[np.zeros((slices, image.size, image.size), np.int16) for _ in range(n)],
        image_size=image.size, image=image,
    )


def _config(image: ImageSpec, *, d_arch: str = "patch") -> RunConfig:
    policy = PrivacyPolicy(mode="dpsgd", target_epsilon=50.0, noise_multiplier=1.0, expected_batch_size=3,
                           reproducible_noise=True)
    return RunConfig(run_id="kinds", image=image, model=dataclasses.replace(MODEL, d_arch=d_arch),
                     train=TrainConfig(steps=3, batch_size=3, checkpoint_every=2, seed=1),
                     data=DataConfig(site_dirs=("a", "b")), privacy=policy, previews=True)


def _d_archs(image: ImageSpec) -> list[str]:
    return {"class": ["patch", "projection"], "none": ["patch"]}.get(image.condition, ["patch"])


def test_brain_defaults_are_pinned() -> None:
    # the brain spec's fields, wire form and model are what they were before the spec was configurable
    s = ImageSpec()
    assert (s.size, s.image_channels, s.cond_channels, s.condition) == (64, 4, 4, "labelmap")
    assert s.channel_names == ("t1", "t1ce", "t2", "flair") and s.cond_names == ("brain", "ncr", "ed", "et")
    assert s.value_range == (-1.0, 1.0) and s.cond_shape == (4, 64, 64) and s.prior == ()
    G, D = build_generator(MODEL, ImageSpec(size=SIZE)), build_discriminator(MODEL, ImageSpec(size=SIZE))
    assert G.stem[0].in_channels == 4 + MODEL.noise_dim and G.head.out_channels == 4
    assert D.net[0].in_channels == 8 and not hasattr(G, "embed")
    assert BATCH_OF_KIND["labelmap"] is FakeBatch


@pytest.mark.parametrize("kw, words", [
    (dict(condition="class", cond_channels=1, cond_names=("a",)), "at least 2 classes"),
    (dict(image_channels=0), "image_channels"),
    (dict(image_channels=3), "channel_names lists 4 names"),
    (dict(condition="none"), "cond_channels = 0"),
    (dict(condition="instances", cond_channels=0, cond_names=()), "at least 1 condition channel"),
    (dict(value_range=(1.0, 0.0)), "value_range"),
    (dict(class_prior=(1.0, 1.0, 1.0, 1.0)), "class_prior is for image.condition = 'class'"),
    (dict(condition="class", cond_channels=2, cond_names=("a", "b"), class_prior=(1.0,)), "2 classes"),
    (dict(condition="class", cond_channels=2, cond_names=("a", "b"), class_prior=(1.0, 0.0)), "> 0"),
    (dict(condition="shape"), "image.condition must be one of"),
])
def test_bad_specs_are_named(kw, words) -> None:
    with pytest.raises(ValueError, match=words):
        ImageSpec(size=SIZE, **kw)
    # from a TOML table, the same sentence as a ConfigError
    from secgan.core.config import load_dataclass

    with pytest.raises(ConfigError, match="image"):
        load_dataclass(ImageSpec, {**{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}, "size": SIZE},
                       prefix="image.")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_model_variant_builds_and_is_opacus_valid(name: str) -> None:
    image = SPECS[name]
    variants = list(iter_model_variants(image=image))
    assert len(variants) >= 10
    if image.condition == "class":
        assert any(m.d_arch == "projection" for _, m in variants)
    for vname, m in variants:
        G, D = build_generator(m, image), build_discriminator(m, image)
        cond = torch.zeros(2, *image.cond_shape)
        with torch.no_grad():
            x = G(cond, torch.randn(2, m.noise_dim))
            y = D(cond, x)
        assert x.shape == (2, *image.image_shape), vname
        lo, hi = image.value_range
        assert lo <= float(x.min()) and float(x.max()) <= hi, vname
        assert y.shape[0] == 2
        for module in (G, D):
            assert ModuleValidator.validate(module, strict=True) == [], vname


def test_models_refuse_a_condition_they_cannot_read() -> None:
    with pytest.raises(ConfigError, match="semantic"):
        build_discriminator(dataclasses.replace(MODEL, d_arch="semantic"), SPECS["class-3"])
    with pytest.raises(ConfigError, match="projection"):
        build_discriminator(dataclasses.replace(MODEL, d_arch="projection"), SPECS["instances-3"])
    with pytest.raises(ConfigError, match="spade"):
        build_generator(dataclasses.replace(MODEL, g_norm="spade"), SPECS["none-3"])


def test_class_condition_steers_g_and_the_projection_d() -> None:
    image = SPECS["class-3"]
    G = build_generator(MODEL, image, seed=2)
    D = build_discriminator(dataclasses.replace(MODEL, d_arch="projection"), image, seed=2)
    with torch.no_grad():
        for p in list(G.embed.parameters()) + list(D.embed.parameters()):
            p.normal_(0, 1.0, generator=torch.Generator().manual_seed(4))
    a, b = torch.zeros(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    a[0, 0], b[0, 2] = 1.0, 1.0
    z = torch.randn(1, MODEL.noise_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((G(a, z) - G(b, z)).abs().mean()) > 1e-4
        x = G(a, z)
        assert float((D(a, x) - D(b, x)).abs().max()) > 1e-6


def test_semantic_d_classes_come_from_the_condition() -> None:
    image = SPECS["instances-3"]
    D = build_discriminator(dataclasses.replace(MODEL, d_arch="semantic"), image)
    assert D.classes == ("background", "background", "nucleus", "boundary")
    with torch.no_grad():
        y = D(torch.zeros(2, *image.cond_shape), torch.zeros(2, *image.image_shape))
    assert y.shape == (2, 5, SIZE, SIZE)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_wire_round_trip_of_the_batch_and_the_reply(name: str) -> None:
    from secgan.gan.conditions import procedural_source

    image = SPECS[name]
    cond = procedural_source(image).draw(3, generator=torch.Generator().manual_seed(0))
    lo, hi = image.value_range
    fake = torch.rand(3, *image.image_shape) * (hi - lo) + lo
    msg = batch_message(image, run_id="r", round=1, step=0, cond=cond, fake=fake)
    assert type(msg) is BATCH_OF_KIND[image.condition]
    _, back = codec.decode(codec.encode(msg, **ENV))
    from sites.checks import check_fake_batch

    check_fake_batch(back, image)
    torch.testing.assert_close(batch_conditions(back, image), cond)
    torch.testing.assert_close(back.fake, fake)
    frames = codec.encode(msg, **ENV)
    header = json.loads(bytes(frames[0]))
    if image.condition == "class":
        assert [t["name"] for t in header["tensors"]] == ["labels", "fake"]
        assert header["tensors"][0] == {"name": "labels", "dtype": "int64", "shape": [3], "nbytes": 24}
    elif image.condition == "none":
        assert [t["name"] for t in header["tensors"]] == ["fake"]
    else:
        assert header["tensors"][0]["shape"] == [3, image.cond_channels, SIZE, SIZE]
    reply = GradientReply(run_id="r", round=1, step=0, grad=torch.randn(3, *image.image_shape))
    _, rback = codec.decode(codec.encode(reply, **ENV))
    torch.testing.assert_close(rback.grad, reply.grad)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_site_refuses_a_batch_of_another_spec(name: str) -> None:
    from sites.checks import check_fake_batch

    image = SPECS[name]
    for other_name, other in SPECS.items():
        if other == image:
            continue
        cond = torch.zeros(2, *other.cond_shape)
        if other.condition == "class":
            cond[:, 0] = 1.0
        lo, _ = other.value_range
        msg = batch_message(other, run_id="r", round=1, step=0, cond=cond, fake=torch.full((2, *other.image_shape), lo))
        with pytest.raises(ProtocolError) as exc:
            check_fake_batch(msg, image)
        assert exc.value.code in ("bad_shape", "out_of_range"), other_name


def test_class_labels_out_of_range_are_refused() -> None:
    from sites.checks import check_fake_batch

    image = SPECS["class-3"]
    msg = ClassBatch(run_id="r", round=1, step=0, labels=torch.tensor([0, 3]), fake=torch.zeros(2, *image.image_shape))
    with pytest.raises(ProtocolError) as exc:
        check_fake_batch(msg, image)
    assert exc.value.code == "out_of_range"
    msg = FreeBatch(run_id="r", round=1, step=0, fake=torch.zeros(2, *image.image_shape))
    with pytest.raises(ProtocolError) as exc:
        check_fake_batch(msg, image)
    assert exc.value.code == "bad_shape" and "free_batch" in str(exc.value)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_welcome_carries_the_spec_and_another_spec_is_refused(name: str) -> None:
    from sites.checks import image_spec_differs

    image = SPECS[name]
    w = Welcome(version=2, run_id="r", image_size=SIZE, model={}, condition_source="procedural", planned_steps=3,
                image=image.wire_form())
    _, back = codec.decode(codec.encode(w, **ENV))
    assert image_spec_differs(back.image_size, back.image, image) == ""
    for other in SPECS.values():
        if other != image:
            assert image_spec_differs(back.image_size, back.image, other).startswith("image.")
    assert "unreadable" in image_spec_differs(SIZE, {"image_channels": "three"}, image)


def test_welcome_default_is_the_brain_spec() -> None:
    w = Welcome(version=2, run_id="r", image_size=SIZE, model={}, condition_source="procedural", planned_steps=3)
    from sites.checks import image_spec_differs

    assert image_spec_differs(SIZE, w.image, ImageSpec(size=SIZE)) == ""


@pytest.mark.parametrize("name", sorted(SPECS))
def test_in_process_run_with_dp_and_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    from secgan.gan.checkpoint import load_checkpoint
    from secgan.simulation.runner import run_inprocess

    image = SPECS[name]
    for d_arch in _d_archs(image):
        cfg = _config(image, d_arch=d_arch)
        out = tmp_path / d_arch
        datasets = [_dataset(image, seed=k) for k in range(2)]
        summary = run_inprocess(cfg, out_dir=out, progress=False, datasets=datasets, stop_at=2)
        assert summary["steps_done"] == 2
        for s in summary["sites"].values():
            assert s["steps_served"] == 2 and s["epsilon"] is not None and s["epsilon"] > 0
        assert (out / "previews" / "step-000002.png").is_file()
        ck = load_checkpoint(out / "checkpoint")
        stored, _ = ck.generator_config()
        assert stored == image
        G = ck.build_generator()
        with torch.no_grad():
            x = G(torch.zeros(1, *image.cond_shape), torch.zeros(1, MODEL.noise_dim))
        assert x.shape == (1, *image.image_shape)
        # the resume rule reads the spec: continuing with another spec is refused, the same one resumes
        other = SPECS["labelmap-4"] if name != "labelmap-4" else SPECS["labelmap-1"]
        from coordinator.build import check_resumable

        with pytest.raises(ConfigError, match=r"image\.\w+.*differ"):
            check_resumable(dataclasses.replace(cfg, image=other, model=dataclasses.replace(cfg.model, d_arch="patch")),
                            ck)
        check_resumable(cfg, ck)
        done = run_inprocess(cfg, out_dir=out, resume=True, progress=False, datasets=datasets)
        assert done["steps_done"] == 3


def test_runner_refuses_datasets_of_another_spec(tmp_path: Path) -> None:
    from secgan.simulation.runner import run_inprocess

    with pytest.raises(ConfigError, match="another spec"):
        run_inprocess(_config(SPECS["class-3"]), out_dir=tmp_path / "x", progress=False,
                      datasets=[_dataset(SPECS["none-3"]), _dataset(SPECS["none-3"])])


def test_old_brain_checkpoint_config_still_resumes() -> None:
    # a checkpoint written before the spec had channel names etc. stores only size/image_channels/cond_channels
    from coordinator.build import generator_recipe

    cfg = to_dict(_config(ImageSpec(size=SIZE)))
    old = {**cfg, "image": {"size": SIZE, "image_channels": 4, "cond_channels": 4}}
    assert generator_recipe(old)["image"] == generator_recipe(cfg)["image"]


def test_class_prior_is_what_the_coordinator_draws() -> None:
    from secgan.gan.conditions import procedural_source

    draws = procedural_source(SPECS["class-3"]).draw(4000, generator=torch.Generator().manual_seed(0))
    freq = draws.sum(dim=(0, 2, 3)) / 4000
    torch.testing.assert_close(freq, torch.tensor([0.8, 0.1, 0.1]), atol=0.03, rtol=0)
    uniform = procedural_source(dataclasses.replace(SPECS["class-3"], class_prior=()))
    freq = uniform.draw(3000, generator=torch.Generator().manual_seed(1)).sum(dim=(0, 2, 3)) / 3000
    torch.testing.assert_close(freq, torch.full((3,), 1 / 3), atol=0.04, rtol=0)
    inst = procedural_source(SPECS["instances-3"]).draw(4, generator=torch.Generator().manual_seed(2))
    assert torch.all(inst.sum(dim=1) == 1) and inst[:, 1].sum() > 0 and inst[:, 2].sum() > 0
    with pytest.raises(ConfigError, match="bank"):
        procedural_source(dataclasses.replace(GREY, cond_names=("a", "b", "c", "d")))


@pytest.mark.parametrize("name", ["instances-3", "class-3", "none-3", "labelmap-1"])
def test_synthetic_samples_of_every_kind_write_read_and_audit(name: str, tmp_path: Path) -> None:
    from audits.cohort import make_cohort
    from audits.features import pixel_features
    from secgan.gan.synthetic import read_synthetic, sample_generator, write_synthetic
    from secgan.simulation.runner import run_inprocess

    image = SPECS[name]
    cfg = dataclasses.replace(_config(image), train=dataclasses.replace(_config(image).train, steps=1))
    run_inprocess(cfg, out_dir=tmp_path / "run", progress=False, datasets=[_dataset(image, seed=k) for k in range(2)])
    images, conds = sample_generator(tmp_path / "run" / "checkpoint", n=5, seed=1)
    assert images.shape == (5, *image.image_shape) and conds.shape == (5, *image.cond_shape)
    lo, hi = image.value_range
    assert images.min() >= lo and images.max() <= hi
    write_synthetic(tmp_path / "syn", images, conds)
    back, back_c = read_synthetic(tmp_path / "syn")
    np.testing.assert_array_equal(back, images)
    np.testing.assert_array_equal(back_c, conds)
    assert (tmp_path / "syn" / "previews" / "samples.png").is_file()
    cohort = make_cohort("synthetic", back, back_c)
    assert pixel_features(cohort.images).shape == (5, int(np.prod(image.image_shape)))
    from audits.features import EmbeddingConfig, train_embedding

    emb = train_embedding(cohort.images, seed=0, config=EmbeddingConfig(epochs=1, batch_size=4, pad_value=lo))
    f = emb.transform(cohort.images)
    assert f.shape[0] == 5 and np.isfinite(f).all()

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine

from secgan.gan.checkpoint import (
    checkpoint_file,
    load_checkpoint,
    load_module_state,
    restore_optimizer,
    save_checkpoint,
    save_module_state,
)
from secgan.core.config import to_dict
from secgan.core.errors import DataError
from secgan.net.schema import GradientReply
from secgan.gan.models import build_discriminator, build_generator
from secgan.gan.config import ModelConfig, TrainConfig
from secgan.run.config import RunConfig, stored_run_config
from secgan.core.spec import ImageSpec
from secgan.gan.step import generator_gradient

from coordinator.core import GeneratorCore
from tests.unit.coordinator.test_coordinator_core import RandomConditions

CFG = RunConfig(
    image=ImageSpec(size=16),
    model=ModelConfig(g_width=8, d_width=8, noise_dim=4, g_depth=2, d_layers=2),
    train=TrainConfig(batch_size=2, lr_g=1e-3, lr_d=1e-3),
)


def _setup():
    G = build_generator(CFG.model, CFG.image, seed=3)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(11)
    core = GeneratorCore(G, opt, RandomConditions(16), batch_size=2, noise_dim=4, generator=gen)
    D = build_discriminator(CFG.model, CFG.image, seed=4)
    return core, D


def _step(core: GeneratorCore, D, k: int) -> None:
    b = core.make_batch(run_id="r", round=k, step=k)
    core.apply(GradientReply(run_id="r", round=k, step=k, grad=generator_gradient(D, b.cond, b.fake, loss="bce")))
    core.finish_step()


def test_round_trip_resume_gives_identical_next_step(tmp_path: Path) -> None:
    core, D = _setup()
    for k in range(2):
        _step(core, D, k)
    save_checkpoint(tmp_path / "ck", generator=core.G, optimizer=core.optimizer, step=2,
                    rng_state={"core": core.generator.get_state(), "np": np.random.default_rng(5).bit_generator.state},
                    meta={"note": "x"}, config=to_dict(CFG))
    _step(core, D, 2)
    expected = {k: v.clone() for k, v in core.G.state_dict().items()}

    ck = load_checkpoint(tmp_path / "ck")
    assert ck.step == 2 and ck.meta == {"note": "x"}
    assert stored_run_config(ck) == CFG
    assert ck.generator_config() == (CFG.image, CFG.model)
    assert ck.rng_state["np"] == np.random.default_rng(5).bit_generator.state
    fresh, _ = _setup()
    fresh.G.load_state_dict(ck.generator_state)
    restore_optimizer(fresh.optimizer, ck.optimizer_state)
    fresh.generator.set_state(ck.rng_state["core"])
    _step(fresh, D, 2)
    for k, v in fresh.G.state_dict().items():
        assert torch.equal(v, expected[k]), k
    G2 = ck.build_generator()
    for k, v in G2.state_dict().items():
        assert torch.equal(v, ck.generator_state[k])


def test_checkpoint_files_are_not_pickles(tmp_path: Path) -> None:
    core, D = _setup()
    _step(core, D, 0)
    f = save_checkpoint(tmp_path, generator=core.G, optimizer=core.optimizer, step=1, rng_state={}, meta={})
    assert f == checkpoint_file(tmp_path)
    head = f.read_bytes()[:8]
    assert not head.startswith(b"\x80")  # pickle protocol marker
    assert not head.startswith(b"PK")  # torch.save zip container
    # safetensors: 8-byte little-endian header length, then a JSON header
    n = int.from_bytes(head, "little")
    assert f.read_bytes()[8 : 8 + n].lstrip().startswith(b"{")
    m = save_module_state(tmp_path / "d.safetensors", D, None, {})
    assert not m.read_bytes()[:2] in (b"PK",) and m.read_bytes()[0] != 0x80


def test_load_refuses_shapes_that_do_not_match_the_stored_config(tmp_path: Path) -> None:
    core, D = _setup()
    other = dataclasses.replace(CFG, model=dataclasses.replace(CFG.model, g_width=16))
    save_checkpoint(tmp_path, generator=core.G, optimizer=core.optimizer, step=0, rng_state={}, meta={},
                    config=to_dict(other))
    with pytest.raises(DataError, match="generator tensor"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}"])
def test_malformed_checkpoint_is_a_data_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    f = checkpoint_file(tmp_path)
    f.write_bytes(content)
    with pytest.raises(DataError, match="checkpoint.safetensors"):
        load_checkpoint(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "missing")


def test_module_state_round_trip_through_an_opacus_wrapped_discriminator(tmp_path: Path) -> None:
    D = build_discriminator(CFG.model, CFG.image, seed=1)
    opt = torch.optim.SGD(D.parameters(), lr=0.1, momentum=0.9)
    data = torch.utils.data.TensorDataset(torch.zeros(4, 4, 16, 16), torch.zeros(4, 4, 16, 16))
    engine = PrivacyEngine(accountant="rdp")
    gsm, dp_opt, _ = engine.make_private(module=D, optimizer=opt, data_loader=torch.utils.data.DataLoader(data, batch_size=2),
                                         noise_multiplier=1.0, max_grad_norm=1.0,
                                         noise_generator=torch.Generator().manual_seed(0))
    c, x = torch.rand(2, 4, 16, 16), torch.rand(2, 4, 16, 16)
    gsm(c, x).mean().backward()
    dp_opt.step()
    save_module_state(tmp_path / "d.safetensors", gsm, dp_opt, {"steps": 1})

    D2 = build_discriminator(CFG.model, CFG.image, seed=9)
    opt2 = torch.optim.SGD(D2.parameters(), lr=0.1, momentum=0.9)
    assert load_module_state(tmp_path / "d.safetensors", D2, opt2) == {"steps": 1}
    for (k, a), b in zip(gsm._module.state_dict().items(), D2.state_dict().values()):
        assert torch.equal(a, b), k
    buf = [opt2.state[p]["momentum_buffer"] for p in D2.parameters()]
    assert all(float(b.abs().sum()) > 0 for b in buf)
    wrong = build_discriminator(dataclasses.replace(CFG.model, d_width=16), CFG.image)
    with pytest.raises(DataError, match="module tensor"):
        load_module_state(tmp_path / "d.safetensors", wrong, None)

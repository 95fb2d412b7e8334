"""One recipe builds and resumes the generator core for the coordinator service and the in-process
runner, under one resume rule: the run id, image, model, condition source and the training recipe
must agree; only how long the run goes on and how often it checkpoints may change."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from secgan.core.errors import ConfigError
from secgan.core.spec import ImageSpec
from secgan.gan.checkpoint import load_checkpoint
from secgan.gan.config import ModelConfig, TrainConfig
from secgan.net.schema import GradientReply
from secgan.run.config import RunConfig

from coordinator.build import build_generator_core, save_generator_core
from coordinator.service import Coordinator
from tests.unit.coordinator.test_coordinator_inbound import make_coordinator

CFG = RunConfig(image=ImageSpec(size=16), model=ModelConfig(g_width=8, g_depth=2, d_width=8, d_layers=2, noise_dim=4),
                train=TrainConfig(steps=10, batch_size=2, checkpoint_every=5), run_id="r")


def _trained(tmp_path, cfg: RunConfig = CFG):
    core, start = build_generator_core(cfg, None)
    assert (start.step, start.round) == (0, 0)
    for step in range(2):
        b = core.make_batch(run_id="r", round=step, step=step)
        core.apply(GradientReply(run_id="r", round=step, step=step, grad=torch.ones_like(b.fake)))
        core.finish_step()
    return core, save_generator_core(tmp_path / "ck", core, cfg, step=2, round=3, meta={"note": "kept"})


def test_a_resumed_core_continues_where_it_was_saved(tmp_path) -> None:
    core, path = _trained(tmp_path)
    again, start = build_generator_core(CFG, load_checkpoint(path))
    assert (start.step, start.round, start.meta["note"]) == (2, 3, "kept")
    for k, v in core.G.state_dict().items():
        assert torch.equal(v, again.G.state_dict()[k]), k
    a, b = core.make_batch(run_id="r", round=3, step=2), again.make_batch(run_id="r", round=3, step=2)
    assert torch.equal(a.cond, b.cond) and torch.equal(a.fake, b.fake)  # the RNG continues too


def test_the_resume_rule_allows_a_longer_run_and_refuses_another_recipe(tmp_path) -> None:
    _, path = _trained(tmp_path)
    longer = dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, steps=20, checkpoint_every=2))
    assert build_generator_core(longer, load_checkpoint(path))[1].step == 2
    for other, key in ((dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, lr_g=1e-3)), "train.lr_g"),
                       (dataclasses.replace(CFG, run_id="other"), "run_id"),
                       (dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, seed=9)), "train.seed")):
        with pytest.raises(ConfigError, match=rf"different run config \({key} differ"):
            build_generator_core(other, load_checkpoint(path))


def test_the_coordinator_service_resumes_under_the_same_rule(tmp_path) -> None:
    first = make_coordinator(tmp_path)
    first.checkpoint()
    cfg, conf = first.cfg, first.settings

    def with_train(**changes):
        return dataclasses.replace(cfg, settings=dataclasses.replace(conf, train=dataclasses.replace(conf.train, **changes)))

    assert Coordinator(with_train(steps=2000), resume=True)
    changed = with_train(lr_g=conf.train.lr_g * 2)
    with pytest.raises(ConfigError, match="train.lr_g differ"):
        Coordinator(changed, resume=True)

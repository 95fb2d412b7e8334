"""Steps the sites never planned: the Welcome carries the run's steps, the site compares them with
the steps its noise was calibrated for, logs both and the epsilon the run will actually spend, and
warns or refuses by its policy; ``secgan provision`` writes matching values everywhere."""

from __future__ import annotations

import dataclasses

import logging
import tomllib

import pytest

from secgan.net import codec
from secgan.cli import main
from secgan.net.schema import PROTOCOL_VERSION, FakeBatch, GradientReply, Refusal, Welcome
from secgan.privacy import accounting as acc
from sites.learner import SiteLearner
from secgan.settings import load_site_config

from coordinator.config import load_coordinator_config

from tests.unit.sites.fakes import fake_node
from tests.unit.privacy.privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy


def _site(tmp_path, **pol):
    return SiteLearner(dataset=dataset(), policy=policy("dpsgd", **pol), model=MODEL, image=IMAGE, train=TRAIN,
                       state_dir=tmp_path / "site", generator_seed=1)


def _node(tmp_path, learner, on_mismatch):
    return fake_node(tmp_path, learner, size=IMAGE.size,
                     policy=dataclasses.replace(learner.policy, on_steps_mismatch=on_mismatch))


def _frames(msg, seq, *, round=0):
    return codec.encode(msg, run_id="r1", round=getattr(msg, "round", round), step=getattr(msg, "step", 0),
                       site="site-1", seq=seq)


def _welcome(steps):
    return Welcome(version=PROTOCOL_VERSION, run_id="r1", image_size=IMAGE.size, model={},
                   condition_source="procedural", planned_steps=steps)


def _events(caplog, name):
    return [getattr(r, "secgan_fields", {}) for r in caplog.records if r.getMessage() == name]


def test_plan_reports_the_epsilon_the_run_will_actually_spend(tmp_path):
    site = _site(tmp_path, noise_multiplier=None, target_epsilon=10.0, planned_steps=200)
    q, sigma = site.sample_rate, site.noise_multiplier
    short = site.plan(30)
    assert short["mismatch"] and short["run_steps"] == 30 and short["planned_steps"] == 200
    want = acc.epsilon_rdp(noise_multiplier=sigma, sample_rate=q, steps=30, delta=1e-5)
    assert short["epsilon_run"] == pytest.approx(want, abs=1e-4) and short["epsilon_run"] < 10.0
    assert short["budget_lasts_steps"] == 30
    assert not site.plan(200)["mismatch"]
    long = site.plan(400)  # the budget runs out before the run ends
    assert long["mismatch"] and 150 <= long["budget_lasts_steps"] < 400 and long["epsilon_run"] <= 10.0
    assert acc.epsilon_rdp(noise_multiplier=sigma, sample_rate=q, steps=long["budget_lasts_steps"] + 1,
                           delta=1e-5) > 10.0


@pytest.mark.parametrize("on_mismatch", ["warn", "refuse"])
def test_node_warns_or_refuses_a_run_of_other_steps(tmp_path, caplog, on_mismatch):
    caplog.set_level(logging.INFO)
    site = _site(tmp_path, noise_multiplier=None, target_epsilon=10.0, planned_steps=200)
    node = _node(tmp_path, site, on_mismatch)
    node.handle(_frames(_welcome(30), 1))
    assert node.welcomed
    [ev] = _events(caplog, "steps_mismatch")
    assert ev["run_steps"] == 30 and ev["planned_steps"] == 200 and 0 < ev["epsilon_run"] < 10.0
    assert ev["action"] == ("refuse" if on_mismatch == "refuse" else "continue")
    msg = next(iter(batches(1, rows=3)))
    node.handle(_frames(FakeBatch(run_id="r1", round=1, step=0, cond=msg.cond, fake=msg.fake), 2))
    reply = node.sock.sent[-1]
    if on_mismatch == "refuse":
        assert isinstance(reply, Refusal) and reply.code == "steps_mismatch" and reply.final
        assert "30" in reply.reason and "200" in reply.reason
        assert site.ledger.releases == 0  # refused before anything was charged
        assert node.exit_reason == "steps_mismatch" and node.exit_code == 2
    else:
        assert isinstance(reply, GradientReply) and site.ledger.releases == 1 and node.exit_reason is None


def test_node_logs_a_matching_plan_without_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    site = _site(tmp_path, noise_multiplier=None, target_epsilon=10.0, planned_steps=40)
    node = _node(tmp_path, site, "refuse")
    node.handle(_frames(_welcome(40), 1))
    assert not _events(caplog, "steps_mismatch")
    [ev] = _events(caplog, "run_plan")
    assert ev["run_steps"] == ev["planned_steps"] == 40 and ev["epsilon_run"] <= 10.0


def test_provision_writes_matching_steps_everywhere(tmp_path):
    out = tmp_path / "fed"
    assert main(["provision", "--sites", "2", "--out", str(out), "--port", "6002", "--image-size", "32",
                 "--steps", "30"]) == 0
    assert load_coordinator_config(out / "coordinator" / "coordinator.toml").train.steps == 30
    for k in (1, 2):
        toml = tomllib.loads((out / f"site-{k}" / "site.toml").read_text())
        assert toml["policy"]["planned_steps"] == 30  # written, not left to a default
        assert load_site_config(out / f"site-{k}" / "site.toml").policy.planned_steps == 30
    default = tmp_path / "fed2"
    assert main(["provision", "--sites", "1", "--out", str(default), "--port", "6003"]) == 0
    steps = load_coordinator_config(default / "coordinator" / "coordinator.toml").train.steps
    assert tomllib.loads((default / "site-1" / "site.toml").read_text())["policy"]["planned_steps"] == steps

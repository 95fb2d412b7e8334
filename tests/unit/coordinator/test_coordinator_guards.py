"""The coordinator keeps serving where it used to crash: a batch the wire cannot carry (refused when
the configuration loads, and stopped with a reason should one still reach the loop), a port already
in use (one line, naming the endpoint). Real sockets on 127.0.0.1 with CURVE."""

from __future__ import annotations

import copy
import dataclasses
import json
import socket
import threading
import time

import pytest
import torch
import zmq

from secgan.net import codec, replay
from secgan.net.limits import WireLimits
from secgan.core.errors import ConfigError, SecganError
from secgan.net.schema import PROTOCOL_VERSION, FakeBatch, GradientReply, Hello, Welcome
from secgan.gan.config import ModelConfig, TrainConfig
from coordinator.config import CoordinatorConfig, load_coordinator_config
from secgan.core.spec import ImageSpec
from secgan.net.transport import make_dealer

from coordinator.service import Coordinator, ServiceConfig

MODEL = ModelConfig(g_width=8, g_depth=2, d_width=8, d_layers=2, noise_dim=4)
POLICY = {"mode": "off", "target_epsilon": None, "delta": None, "accept_sources": ["procedural"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config_refuses_a_batch_above_the_wire_limits_naming_both_keys(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[image]\nsize = 64\n[train]\nbatch_size = 64\n[wire]\nmax_tensor_bytes = 1048576\n")
    with pytest.raises(ConfigError) as exc:
        load_coordinator_config(p)
    assert "train.batch_size" in str(exc.value) and "wire.max_tensor_bytes" in str(exc.value)
    p.write_text("[image]\nsize = 64\n[train]\nbatch_size = 16\n[wire]\nmax_tensor_bytes = 1048576\n"
                 "max_total_bytes = 1048576\n")
    with pytest.raises(ConfigError) as exc:
        load_coordinator_config(p)
    assert "train.batch_size" in str(exc.value) and "wire.max_total_bytes" in str(exc.value)
    p.write_text("[image]\nsize = 64\n[train]\nbatch_size = 16\n[wire]\nmax_tensor_bytes = 1048576\n")
    assert load_coordinator_config(p).train.batch_size == 16  # 16 x 4 x 64 x 64 x 4 bytes = 1 MiB: fits


def _service(tmp_path, port, **changes):
    spub, ssec = zmq.curve_keypair()
    cpub, csec = zmq.curve_keypair()
    settings = dataclasses.replace(
        CoordinatorConfig(port=port, state_dir=str(tmp_path / "state"), run_id="r1", image=ImageSpec(size=16),
                          model=MODEL, train=TrainConfig(steps=2, batch_size=2, seed=1), round_deadline_s=5.0,
                          heartbeat_interval_s=0.5, heartbeat_timeout_s=1.5, startup_grace_s=0.0,
                          run_json_every_s=0.2),
        **changes)
    cfg = ServiceConfig(settings=settings, server_public=spub, server_secret=ssec, site_keys={"site-1": cpub},
                        progress=False)
    return cfg, (cpub, csec)


def _serve_with_one_site(coord: Coordinator, cfg: ServiceConfig, client: tuple[bytes, bytes]) -> dict:
    """Run ``coord.serve`` in a thread while this thread plays site-1 (Hello, then a gradient of
    ones for every batch) until the run ends; {"run": final run.json} or {"error": exception}."""
    cpub, csec = client
    result: dict = {}

    def serve() -> None:
        try:
            result["run"] = coord.serve(install_signals=False)
        except BaseException as exc:  # what the test reports
            result["error"] = exc

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ctx = zmq.Context()
    seq = replay.initial_seq()

    def send(msg, **env) -> None:
        nonlocal seq
        seq += 1
        try:
            sock.send_multipart(codec.encode(msg, site="site-1", seq=seq, **env), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    try:
        sock = make_dealer(ctx, endpoint=cfg.settings.bind, client_public=cpub, client_secret=csec,
                           server_public=cfg.server_public, limits=WireLimits())
        deadline = time.monotonic() + 60
        welcomed = False
        while t.is_alive() and time.monotonic() < deadline:
            if not welcomed:
                send(Hello(versions=(PROTOCOL_VERSION,), policy=POLICY), run_id="", round=0, step=0)
            if sock.poll(200):
                _, msg = codec.decode(sock.recv_multipart())
                welcomed = welcomed or isinstance(msg, Welcome)
                if isinstance(msg, FakeBatch):
                    send(GradientReply(run_id=msg.run_id, round=msg.round, step=msg.step,
                                       grad=torch.ones_like(msg.fake)), run_id=msg.run_id, round=msg.round,
                         step=msg.step)
        sock.close(0)
    finally:
        ctx.destroy(linger=0)
    t.join(10)
    return result


def test_a_round_that_cannot_be_encoded_stops_the_run_with_a_reason_not_a_traceback(tmp_path):
    port = _free_port()
    cfg, client = _service(tmp_path, port)
    coord = Coordinator(cfg)
    # past the start-up check (as if limits changed underneath): 2 x 4 x 16 x 16 x 4 bytes > 1 KiB
    # (bypassing the config's own check, which would refuse these limits at load)
    bent = copy.copy(coord.settings)
    object.__setattr__(bent, "wire", WireLimits(max_tensor_bytes=1024))
    coord.settings = bent
    result = _serve_with_one_site(coord, cfg, client)
    assert "error" not in result, repr(result.get("error"))
    run = result["run"]
    assert run["status"] == "stopped" and run["stop_reason"] == "batch_unencodable"
    assert run["unencodable_messages"] >= 1 and run["steps_done"] == 0


def test_a_port_in_use_is_one_error_naming_the_endpoint(tmp_path):
    port = _free_port()
    cfg, _ = _service(tmp_path, port)
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.ROUTER)
    squatter.bind(cfg.settings.bind)
    try:
        with pytest.raises(SecganError) as exc:
            Coordinator(cfg).serve(install_signals=False)
        assert cfg.settings.bind in str(exc.value) and "in use" in str(exc.value)
    finally:
        squatter.close(0)
        ctx.destroy(linger=0)


def test_checkpoint_and_run_json_writes_that_fail_do_not_end_the_run(tmp_path):
    port = _free_port()
    cfg, client = _service(tmp_path, port, train=TrainConfig(steps=3, batch_size=2, seed=1, checkpoint_every=1))
    coord = Coordinator(cfg)
    state = tmp_path / "state"
    (state / "checkpoint.safetensors").mkdir()  # every checkpoint write fails (a folder in the way)
    (state / "run.json").mkdir()  # and so does every run.json write
    result = _serve_with_one_site(coord, cfg, client)
    assert "error" not in result, repr(result.get("error"))
    run = result["run"]
    assert run["status"] == "completed" and run["steps_done"] == 3
    assert run["checkpoint_failures"] >= 3 and run["run_json_write_failures"] >= 1
    (state / "run.json").rmdir()  # the disk is back: the next write lands
    coord.runlog.write(registry=coord.registry, scheduler=coord.scheduler, status="completed", stop_reason=None)
    assert json.loads((state / "run.json").read_text())["checkpoint_failures"] == run["checkpoint_failures"]

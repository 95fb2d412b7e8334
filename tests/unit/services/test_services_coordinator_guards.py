"""The coordinator keeps serving where it used to crash: a batch the wire cannot carry (refused when
the configuration loads, and stopped with a reason should one still reach the loop), a port already
in use (one line, naming the endpoint). Real sockets on 127.0.0.1 with CURVE."""

from __future__ import annotations

import dataclasses
import socket
import threading

import pytest
import zmq

from secgan import wire
from secgan.errors import ConfigError, SecganError
from secgan.messages import Hello
from secgan.runconfig import ModelConfig, TrainConfig
from secgan.settings import load_coordinator_config
from secgan.spec import ImageSpec
from secgan.transport import make_dealer

from coordinator.scheduler import QuorumPolicy
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
    cfg = ServiceConfig(bind=f"tcp://127.0.0.1:{port}", server_public=spub, server_secret=ssec,
                        site_keys={"site-1": cpub}, state_dir=tmp_path / "state", run_id="r1",
                        image=ImageSpec(size=16), model=MODEL, train=TrainConfig(steps=2, batch_size=2, seed=1),
                        quorum=QuorumPolicy(min_sites=1, round_deadline_s=5.0, readmission_wait_s=5.0),
                        progress=False, run_json_every_s=0.2, **changes)
    return cfg, (cpub, csec)


def test_a_round_that_cannot_be_encoded_stops_the_run_with_a_reason_not_a_traceback(tmp_path):
    port = _free_port()
    cfg, (cpub, csec) = _service(tmp_path, port)
    coord = Coordinator(cfg)
    # past the start-up check (as if limits changed underneath): 2 x 4 x 16 x 16 x 4 bytes > 1 KiB
    coord.cfg = dataclasses.replace(cfg, limits=wire.WireLimits(max_tensor_bytes=1024))
    result: dict = {}

    def serve() -> None:
        try:
            result["run"] = coord.serve(install_signals=False)
        except BaseException as exc:  # what the test reports
            result["error"] = exc

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ctx = zmq.Context()
    try:
        sock = make_dealer(ctx, endpoint=cfg.bind, client_public=cpub, client_secret=csec,
                           server_public=cfg.server_public, limits=wire.WireLimits())
        seq = wire.initial_seq()
        deadline = 60.0
        while t.is_alive() and deadline > 0:
            seq += 1
            try:
                sock.send_multipart(wire.encode(Hello(versions=(1,), policy=POLICY), run_id="", round=0, step=0,
                                                site="site-1", seq=seq), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
            t.join(0.5)
            deadline -= 0.5
        sock.close(0)
    finally:
        ctx.destroy(linger=0)
    t.join(10)
    assert "error" not in result, repr(result.get("error"))
    run = result["run"]
    assert run["status"] == "stopped" and run["stop_reason"] == "batch_unencodable"
    assert run["unencodable_messages"] >= 1 and run["steps_done"] == 0


def test_a_port_in_use_is_one_error_naming_the_endpoint(tmp_path):
    port = _free_port()
    cfg, _ = _service(tmp_path, port)
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.ROUTER)
    squatter.bind(cfg.bind)
    try:
        with pytest.raises(SecganError) as exc:
            Coordinator(cfg).serve(install_signals=False)
        assert cfg.bind in str(exc.value) and "in use" in str(exc.value)
    finally:
        squatter.close(0)
        ctx.destroy(linger=0)

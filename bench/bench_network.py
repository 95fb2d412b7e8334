"""Network cost of the distributed coordinator, measured side by side in one run.

1. step time: coordinator + 3 site processes over CURVE on loopback vs the in-process runner,
   same tiny config (mode "off", so only transport and process overheads differ);
2. CURVE vs plaintext ZeroMQ round trip of one FakeBatch + GradientReply at the run's tensor sizes;
3. bytes per step per site vs one FedAvg-style exchange of G's parameters (down + up);
4. the coordinator's time per message as the number of connected stand-in sites grows
   (stand-ins: DEALERs in one thread answering every FakeBatch with a zero gradient).

``python bench/bench_network.py [--quick]`` or ``bench.bench_network.main(argv)``; returns rows of
``{"metric", "ratio", "note"}`` for ``python -m bench``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import zmq  # noqa: E402

torch.set_num_threads(1)


from secgan.net import codec, replay  # noqa: E402
from secgan.net.limits import WireLimits  # noqa: E402
from secgan.net.schema import FakeBatch, GradientReply, Hello  # noqa: E402
from secgan.gan.config import ModelConfig, TrainConfig  # noqa: E402
from secgan.core.spec import ImageSpec  # noqa: E402
from secgan.net.transport import SocketTuning, make_dealer, make_router  # noqa: E402

IMAGE = ImageSpec(size=32)
MODEL = ModelConfig(g_width=8, g_depth=2, d_width=8, d_layers=2, noise_dim=4)
POLICY_OFF = {"mode": "off", "target_epsilon": None, "delta": None, "accept_sources": ["procedural"]}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# 1. step time: network vs in-process


def _site_process(site_dir: str, site_id: str, pub: bytes, sec: bytes, spub: bytes, endpoint: str,
                  state_dir: str, train: TrainConfig, seed: int) -> None:
    torch.set_num_threads(1)
    from secgan.data.dataset import load_site
    from secgan.privacy.policy import PrivacyPolicy
    from sites.learner import SiteLearner
    from secgan.settings import SiteConfig
    from sites.config import NodeConfig
    from sites.node import SiteNode

    ds = load_site(Path(site_dir), split="train", image_size=IMAGE.size)
    learner = SiteLearner(dataset=ds, policy=PrivacyPolicy(mode="off", allow_off=True), model=MODEL, image=IMAGE,
                          train=train, generator_seed=seed, state_dir=Path(state_dir))
    settings = SiteConfig(site_id=site_id, data_dir=site_dir, coordinator_endpoint=endpoint, state_dir=state_dir,
                          image=IMAGE, model=MODEL, train=train, policy=learner.policy)
    node = SiteNode(NodeConfig(settings=settings, client_public=pub, client_secret=sec, server_public=spub), learner)
    node.serve(install_signals=False)


def bench_step_time(tmp: Path, steps: int, batch: int, n_sites: int) -> tuple[float, float, float]:
    """(network wall, network mean step, in-process mean step) for ``n_sites`` sites."""
    from secgan.data.phantom import write_phantom
    from secgan.privacy.policy import PrivacyPolicy
    from secgan.run.config import DataConfig, RunConfig
    from secgan.simulation.runner import run_inprocess

    from coordinator.config import CoordinatorConfig, ServiceConfig
    from coordinator.service import Coordinator

    tmp = tmp / f"sites-{n_sites}"
    dirs = write_phantom(tmp / "phantom", sites=n_sites, patients=8, seed=7, size=32, slices=16)
    train = TrainConfig(steps=steps, batch_size=batch, checkpoint_every=10**6)
    cfg = RunConfig(image=IMAGE, model=MODEL, train=train,
                    data=DataConfig(site_dirs=tuple(str(d) for d in dirs)),
                    privacy=PrivacyPolicy(mode="off", allow_off=True), previews=False)
    summary = run_inprocess(cfg, out_dir=tmp / "inproc", progress=False)
    inproc = summary["wall_seconds"] / summary["steps_done"]

    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    spub, ssec = zmq.curve_keypair()
    keys = {f"site-{i + 1}": zmq.curve_keypair() for i in range(n_sites)}
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_site_process, args=(str(d), sid, pub, sec, spub, endpoint,
                                                     str(tmp / sid), train, i), daemon=True)
             for i, (d, (sid, (pub, sec))) in enumerate(zip(dirs, keys.items()))]
    for p in procs:
        p.start()
    settings = CoordinatorConfig(port=port, state_dir=str(tmp / "coord"), run_id="bench", image=IMAGE, model=MODEL,
                                 train=train, min_sites=n_sites, round_deadline_s=30.0, heartbeat_timeout_s=60.0,
                                 startup_grace_s=60.0)
    service = ServiceConfig(settings=settings, server_public=spub, server_secret=ssec,
                            site_keys={s: k[0] for s, k in keys.items()})
    try:
        result = Coordinator(service).serve(install_signals=False)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    # throughput view on both sides: wall time over the training loop divided by the steps
    return result["wall_time_s"], result["step_time_s"]["wall_per_step"], inproc


# --------------------------------------------------------------------------------------------
# 2. CURVE vs plaintext round trip


def _round_trips(curve: bool, batch: int, n: int) -> float:
    limits = WireLimits()
    ctx = zmq.Context()
    spub, ssec = zmq.curve_keypair()
    cpub, csec = zmq.curve_keypair()
    zap = None
    if curve:
        from secgan.net.transport import AllowListPolicy, ZapAuthenticator

        zap = ZapAuthenticator(ctx, AllowListPolicy({"site-1": cpub})).start()
    router = make_router(ctx, bind="tcp://127.0.0.1:0", server_secret=ssec if curve else None,
                         server_public=spub if curve else None, limits=limits,
                         insecure_loopback_for_tests=not curve)
    endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
    dealer = make_dealer(ctx, endpoint=endpoint, client_public=cpub if curve else None,
                         client_secret=csec if curve else None, server_public=spub if curve else None,
                         limits=limits, insecure_loopback_for_tests=not curve)
    shape = (batch, 4, IMAGE.size, IMAGE.size)
    fb = FakeBatch(run_id="b", round=1, step=0, cond=torch.rand(shape), fake=torch.rand(shape))
    gr = GradientReply(run_id="b", round=1, step=0, grad=torch.rand(shape))
    try:
        dealer.send_multipart(codec.encode(Hello(versions=(1,), policy={}), run_id="", round=0, step=0,
                                          site="site-1", seq=1))
        rid = router.recv_multipart()[0]
        best = float("inf")
        for _rep in range(3):
            t0 = time.perf_counter()
            for i in range(n):
                router.send_multipart([rid, *codec.encode(fb, run_id="b", round=1, step=0, site="site-1", seq=i + 2)])
                codec.decode(dealer.recv_multipart(copy=False), limits=limits)
                dealer.send_multipart(codec.encode(gr, run_id="b", round=1, step=0, site="site-1", seq=i + 2))
                codec.decode(router.recv_multipart(copy=False)[1:], limits=limits)
            best = min(best, (time.perf_counter() - t0) / n)
        return best
    finally:
        dealer.close(0)
        router.close(0)
        if zap is not None:
            zap.stop()
        ctx.term()


# --------------------------------------------------------------------------------------------
# 3. bytes per step vs FedAvg


def bytes_per_step(batch: int) -> tuple[int, int]:
    from secgan.gan.models import build_generator, count_parameters

    shape = (batch, 4, IMAGE.size, IMAGE.size)
    fb = codec.encode(FakeBatch(run_id="run", round=1, step=1, cond=torch.zeros(shape), fake=torch.zeros(shape)),
                     run_id="run", round=1, step=1, site="site-1", seq=1)
    gr = codec.encode(GradientReply(run_id="run", round=1, step=1, grad=torch.zeros(shape)),
                     run_id="run", round=1, step=1, site="site-1", seq=2)
    ours = sum(len(f) for f in fb) + sum(len(f) for f in gr)
    fedavg = 2 * 4 * count_parameters(build_generator(MODEL, IMAGE))
    return ours, fedavg


# --------------------------------------------------------------------------------------------
# 4. per-message overhead vs number of stand-in sites


def _stand_ins(endpoint: str, spub: bytes, keys: dict[str, tuple[bytes, bytes]], stop: threading.Event) -> None:
    limits = WireLimits()
    ctx = zmq.Context()
    socks = {}
    poller = zmq.Poller()
    for sid, (pub, sec) in keys.items():
        s = make_dealer(ctx, endpoint=endpoint, client_public=pub, client_secret=sec, server_public=spub,
                        limits=limits)
        socks[s] = [sid, replay.initial_seq()]
        poller.register(s, zmq.POLLIN)
        s.send_multipart(codec.encode(Hello(versions=(1,), policy=POLICY_OFF), run_id="", round=0, step=0,
                                     site=sid, seq=socks[s][1]))
    try:
        while not stop.is_set():
            for s, _ in poller.poll(100):
                env, msg = codec.decode(s.recv_multipart(copy=False), limits=limits)
                if isinstance(msg, FakeBatch):
                    st = socks[s]
                    st[1] += 1
                    reply = GradientReply(run_id=msg.run_id, round=msg.round, step=msg.step,
                                          grad=torch.zeros_like(msg.fake), attempt=msg.attempt)
                    s.send_multipart(codec.encode(reply, run_id=msg.run_id, round=msg.round, step=msg.step,
                                                 site=st[0], seq=st[1]))
    finally:
        for s in socks:
            s.close(0)
        ctx.term()


def per_message_time(n_sites: int, steps: int, tmp: Path) -> float:
    from coordinator.config import CoordinatorConfig, ServiceConfig
    from coordinator.service import Coordinator

    image = ImageSpec(size=16)
    model = ModelConfig(g_width=4, g_depth=1, d_width=4, d_layers=1, noise_dim=2)
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    spub, ssec = zmq.curve_keypair()
    keys = {f"s{i}": zmq.curve_keypair() for i in range(n_sites)}
    stop = threading.Event()
    thread = threading.Thread(target=_stand_ins, args=(endpoint, spub, keys, stop), daemon=True)
    settings = CoordinatorConfig(port=port, state_dir=str(tmp / f"coord-{n_sites}"), run_id="bench", image=image,
                                 model=model, train=TrainConfig(steps=steps, batch_size=2, checkpoint_every=10**6),
                                 min_sites=n_sites, round_deadline_s=30.0, heartbeat_timeout_s=120.0,
                                 startup_grace_s=60.0, self_check=False)
    service = ServiceConfig(settings=settings, server_public=spub, server_secret=ssec,
                            site_keys={s: k[0] for s, k in keys.items()})
    coord = Coordinator(service)
    thread.start()
    try:
        result = coord.serve(install_signals=False)
    finally:
        stop.set()
        thread.join(timeout=10)
    # one step = n_sites FakeBatches out + n_sites replies in
    return result["step_time_s"]["wall_per_step"] / n_sites


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    steps = 10 if args.quick else 40
    batch = 4
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n_sites in (1, 3):
            _wall, net_step, inproc_step = bench_step_time(tmp, steps, batch, n_sites)
            rows.append({"metric": f"step time: CURVE loopback ({n_sites} site process(es)) / in-process runner",
                         "ratio": net_step / inproc_step,
                         "note": f"{net_step * 1e3:.1f} ms vs {inproc_step * 1e3:.1f} ms per step, {steps} steps, "
                                 f"{IMAGE.size}px batch {batch}, {os.cpu_count()} cores"})
        n = 50 if args.quick else 300
        curve = _round_trips(True, batch, n)
        plain = _round_trips(False, batch, n)
        rows.append({"metric": "round trip FakeBatch+GradientReply: CURVE / plaintext",
                     "ratio": curve / plain,
                     "note": f"{curve * 1e6:.0f} us vs {plain * 1e6:.0f} us (encode+decode included)"})
        ours, fedavg = bytes_per_step(batch)
        rows.append({"metric": "bytes per step per site / FedAvg exchange of G (down+up)",
                     "ratio": ours / fedavg, "note": f"{ours} B vs {fedavg} B"})
        base = None
        for k in (1, 4, 16, 32):
            t = per_message_time(k, 8 if args.quick else 20, tmp)
            base = base or t
            rows.append({"metric": f"coordinator time per site-message pair, {k} stand-in sites / 1 site",
                         "ratio": t / base, "note": f"{t * 1e3:.2f} ms per site per step"})
    for r in rows:
        print(f"{r['metric']:<75} {r['ratio']:8.3f}  {r['note']}", flush=True)
    return rows


if __name__ == "__main__":
    from secgan.core.logs import setup_logging

    setup_logging("WARNING")
    main(sys.argv[1:])

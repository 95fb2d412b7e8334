"""Secure-sum over real processes: a coordinator (this test) and 4 site processes over ZeroMQ
with CURVE (ZAP allow-list, sites identified by their CURVE key), keys from an Ed25519-signed
manifest. One site is killed mid-round; the round is retried without it and the run finishes.
A final round with a substituted key is refused by the site it targets.

This test drives the secure-sum state machines alone over plain sockets with a minimal JSON +
raw-buffer framing of its own, including a coordinator that substitutes a key; the services
themselves are exercised end to end by test_secagg_services.py.
Run as ``python -m tests.integration.test_secagg_network CONFIG`` it is one site process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SHAPE = (2, 4, 8, 8)
RECV_TIMEOUT_MS = 30_000
ROUND_DEADLINE_S = 5.0  # generous: CI machines are shared and loaded


# -- shared helpers (both sides) -----------------------------------------------------------------
def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def site_gradient(site_id: str, round_: int) -> np.ndarray:
    """Stand-in for the site learner's dL/d(fake): deterministic, so the test knows the plain sum."""
    seed = int.from_bytes(hashlib.sha256(f"{site_id}/{round_}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(0.0, 1e-3, SHAPE)


def _send(sock, header: dict, payload: bytes | None = None, identity: bytes | None = None) -> None:
    frames = ([identity] if identity is not None else []) + [_canonical(header)]
    if payload is not None:
        frames.append(payload)
    sock.send_multipart(frames)


# -- site process --------------------------------------------------------------------------------
def site_main(config_path: str) -> int:
    import torch
    import zmq
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from secgan.keys.agreement import load_agreement_key
    from secgan.net.schema import SecAggAnnounce
    from secgan.secagg import SecAggRefusal, SecureSumClient

    cfg = json.loads(Path(config_path).read_text())
    signed = json.loads(Path(cfg["manifest"]).read_text())
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(cfg["federation_public"])).verify(
        bytes.fromhex(signed["signature"]), _canonical(signed["manifest"]))  # raises on a bad signature
    manifest = signed["manifest"]
    roster = {sid: entry["x25519_public"] for sid, entry in manifest["sites"].items()}
    client = SecureSumClient(site_id=cfg["site_id"], agreement_key=load_agreement_key(cfg["agreement_key"]),
                             roster=roster, run_id=manifest["run_id"])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 500)
    sock.curve_secretkey = cfg["curve_secret"].encode()
    sock.curve_publickey = cfg["curve_public"].encode()
    sock.curve_serverkey = manifest["coordinator_curve_public"].encode()
    sock.connect(cfg["endpoint"])
    _send(sock, {"type": "hello"})
    try:
        while True:
            if not sock.poll(RECV_TIMEOUT_MS):
                return 3
            header = json.loads(sock.recv_multipart()[0])
            if header["type"] == "stop":
                return 0
            if header["type"] != "secagg_announce":
                continue
            fields = {k: v for k, v in header.items() if k != "type"}
            ann = SecAggAnnounce(**fields)
            if ann.round == cfg.get("stall_round"):
                # say so (write, then rename: the test never reads half a file), then hang
                # mid-round, the announcement received and nothing sent, until the test kills us
                tmp = Path(cfg["status"] + ".tmp")
                tmp.write_text(json.dumps({"stalled_round": ann.round}))
                os.replace(tmp, cfg["status"])
                time.sleep(120)
            try:
                grad = torch.from_numpy(site_gradient(cfg["site_id"], ann.round)) if client.needs_gradient(ann) else None
                m = client.contribute(ann, grad)
            except SecAggRefusal as exc:
                _send(sock, {"type": "refusal", "round": ann.round, "attempt": ann.attempt, "code": exc.code})
                continue
            meta = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name != "masked"}
            _send(sock, {"type": "secagg_masked", **meta}, m.masked.numpy().tobytes())  # words packed to k bits
    finally:
        sock.close()
        ctx.term()


# -- the test (coordinator side) -----------------------------------------------------------------
def _stalled_round(status: Path) -> int | None:
    return json.loads(status.read_text())["stalled_round"] if status.exists() else None


class _AllowList:
    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_four_sites_one_killed_mid_round(tmp_path: Path) -> None:
    import torch
    import zmq
    import zmq.auth.thread
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from secgan.core.errors import ProtocolError
    from secgan.keys.agreement import generate_agreement_key, public_hex, write_agreement_key
    from secgan.net.schema import SecAggMasked
    from secgan.secagg import SecAggRoundFailed, SecureSumAggregator, summarize_rounds
    from secgan.secagg.packing import packed_shape
    from tests.integration.net_helpers import wait_until

    ids = [f"site-{i}" for i in range(1, 5)]
    coord_pub, coord_sec = zmq.curve_keypair()
    curve = {i: zmq.curve_keypair() for i in ids}
    x_pub = {i: write_agreement_key(tmp_path / f"{i}.x25519.pem", generate_agreement_key()) for i in ids}
    manifest = {"run_id": "run-net", "coordinator_curve_public": coord_pub.decode(),
                "sites": {i: {"curve_public": curve[i][0].decode(), "x25519_public": x_pub[i]} for i in ids}}
    fed_key = Ed25519PrivateKey.generate()
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"manifest": manifest, "signature": fed_key.sign(_canonical(manifest)).hex()}))
    fed_pub = fed_key.public_key().public_bytes_raw().hex()

    ctx = zmq.Context()
    auth = zmq.auth.thread.ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback("*", credentials_provider=_AllowList({curve[i][0] for i in ids}))
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.curve_server = True
    router.curve_secretkey, router.curve_publickey = coord_sec, coord_pub
    router.bind("tcp://127.0.0.1:*")
    endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
    by_key = {curve[i][0].decode(): i for i in ids}

    procs: dict[str, subprocess.Popen] = {}
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    try:
        for i in ids:
            cfg = {"site_id": i, "endpoint": endpoint, "manifest": str(tmp_path / "manifest.json"),
                   "federation_public": fed_pub, "agreement_key": str(tmp_path / f"{i}.x25519.pem"),
                   "curve_public": curve[i][0].decode(), "curve_secret": curve[i][1].decode(),
                   "stall_round": 1 if i == "site-4" else None, "status": str(tmp_path / f"{i}.status.json")}
            (tmp_path / f"{i}.json").write_text(json.dumps(cfg))
            procs[i] = subprocess.Popen([sys.executable, "-m", "tests.integration.test_secagg_network",
                                         str(tmp_path / f"{i}.json")], cwd=repo, env=env)

        routes: dict[str, bytes] = {}

        def recv(deadline: float):
            """Next (site_id, header, payload) authenticated by CURVE key, or None at the deadline."""
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not router.poll(int(left * 1000)):
                    return None
                frames = router.recv_multipart(copy=False)
                site = by_key[frames[0].get("User-Id")]  # the key, never a claimed name
                routes[site] = frames[0].bytes
                payload = frames[2].bytes if len(frames) > 2 else None
                return site, json.loads(frames[1].bytes), payload

        deadline = time.monotonic() + 60
        while len(routes) < len(ids):
            got = recv(deadline)
            assert got is not None, "sites did not say hello in time"
            assert got[1]["type"] == "hello"

        def packed(payload: bytes):
            """A masked vector as sent: the announced shape's words packed to the attempt's k bits."""
            shape = packed_shape(SHAPE, agg.context.codec.modulus_bits)
            return torch.from_numpy(np.frombuffer(payload, dtype=np.uint8).copy()).reshape(shape)

        def broadcast(ann, to, tamper=None):
            for i in to:
                a = tamper(ann) if tamper and i == "site-1" else ann
                _send(router, {"type": "secagg_announce", **dataclasses.asdict(a)}, identity=routes[i])

        agg = SecureSumAggregator(run_id="run-net", roster=x_pub)
        alive = list(ids)
        all_stats = []
        for rnd in range(3):
            ann = agg.begin(round=rnd, step=0, participants=alive, shape=SHAPE)
            broadcast(ann, alive)
            if rnd == 1:  # killed mid-round: once it has the announcement, before it replies
                wait_until(lambda: _stalled_round(tmp_path / "site-4.status.json") == rnd, timeout=30,
                           what="site-4 to stall in round 1",
                           gave_up=lambda: "site-4 exited" if procs["site-4"].poll() is not None else None)
                procs["site-4"].send_signal(signal.SIGKILL)
            while not agg.complete:
                got = recv(time.monotonic() + ROUND_DEADLINE_S)
                if got is None:
                    ann = agg.retry()  # fresh masks, without the sites that did not deliver
                    alive = [p[0] for p in ann.participants]
                    broadcast(ann, alive)
                    continue
                site, header, payload = got
                if header["type"] == "secagg_masked":
                    fields = {k: v for k, v in header.items() if k != "type"}
                    masked = packed(payload)
                    try:
                        agg.accept(site, SecAggMasked(masked=masked, **fields))
                    except ProtocolError as exc:
                        assert exc.code == "stale"
            total = agg.result()
            plain = sum(site_gradient(i, rnd) for i in alive)
            assert np.abs(total - plain).max() <= agg.quantisation_bound()
            all_stats.append(agg.stats)
        assert [s.attempts for s in all_stats] == [1, 2, 1]
        assert all_stats[1].dropped == ["site-4"] and all_stats[1].participants == 3
        summary = summarize_rounds(all_stats)
        # 13 vectors in all (4, then 3 + 3 in the retried round, then 3) of words packed to k bits
        # plus their headers: far less than int64 words would take
        vector = int(np.prod(packed_shape(SHAPE, all_stats[0].modulus_bits)))
        up = sum(s.bytes_up for s in all_stats)
        assert 13 * vector < up < 13 * (vector + 400) < 13 * 8 * int(np.prod(SHAPE))

        # a substituted key relayed to site-1 is refused by site-1, and the round cannot complete
        evil = public_hex(generate_agreement_key())

        def swap(a):
            parts = [[p[0], evil if p[0] == "site-2" else p[1]] for p in a.participants]
            return dataclasses.replace(a, participants=parts)

        ann = agg.begin(round=3, step=0, participants=alive, shape=SHAPE)
        broadcast(ann, alive, tamper=swap)
        codes = {}
        for _ in alive:
            got = recv(time.monotonic() + 10.0)
            assert got is not None
            site, header, payload = got
            if header["type"] == "refusal":
                codes[site] = header["code"]
                agg.refused(site, header["code"])
            else:
                agg.accept(site, SecAggMasked(masked=packed(payload), **{k: v for k, v in header.items() if k != "type"}))
        assert codes == {"site-1": "secagg_key_mismatch"}
        with pytest.raises(SecAggRoundFailed):
            agg.retry()

        for i in alive:
            _send(router, {"type": "stop"}, identity=routes[i])
        for i in alive:
            assert procs[i].wait(timeout=30) == 0
        assert procs["site-4"].wait(timeout=10) == -signal.SIGKILL
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        router.close(0)
        auth.stop()
        ctx.term()


if __name__ == "__main__":
    sys.exit(site_main(sys.argv[1]))

"""What an operator sees and what an unauthenticated crowd cannot do, with real processes.

1. A live coordinator started under RLIMIT_NOFILE = 256 (soft and hard, so it cannot raise it) gets
   far more idle plain TCP connections (no key, no byte sent) than that: descriptors run out, run.json
   writes fail for a while, the CURVE handshake timeout drops the idle connections, the two real
   sites get in and the run completes with run.json written. Meanwhile site-3 of the manifest never
   starts: a ``waiting_for_sites`` warning names it, and run.json lists it under ``no_hello``. The
   start-up self-check's refusal of its own probe is logged as info and not counted as hostile.
2. ``--resume`` (two more steps) continues run.json's counters instead of starting them from zero.
3. A federation provisioned from public keys the sites generated themselves (``secgan keys
   generate`` -> ``secgan provision --site-keys``) runs to completion.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys

import pytest

from tests.integration.net_helpers import (
    REPO,
    TINY_IMAGE,
    TINY_MODEL,
    TINY_TRAIN,
    Proc,
    child_env,
    free_port,
    make_kit,
    site_proc,
    update_toml,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FD_LIMIT = 256
IDLE_CONNECTIONS = 700


def _coordinator_with_fd_limit(kit, log, limit: int) -> Proc:
    code = ("import resource, runpy, sys\n"
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
            f"sys.argv = ['coordinator', '--config', {str(kit['coordinator'])!r}]\n"
            "runpy.run_module('coordinator', run_name='__main__')\n")
    return Proc(["-c", code], log)


def _idle_crowd(port: int, n: int) -> list[socket.socket]:
    """Plain TCP connections that never send a byte (non-blocking: a full backlog must not stall us)."""
    crowd = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        crowd.append(s)
    return crowd


def test_idle_connections_under_a_low_fd_limit_and_a_silent_site(tmp_path, phantom_root):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE_CONNECTIONS + 200:  # the test process itself holds the crowd
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    port = free_port()
    kit = make_kit(tmp_path / "kit", data_root=phantom_root, sites=3, port=port,
                   coordinator={"min_sites": 2, "run_json_every_s": 0.5})
    logs = tmp_path / "logs"
    coord = _coordinator_with_fd_limit(kit, logs / "coordinator.log", FD_LIMIT)
    procs, crowd = [coord], []
    try:
        coord.wait_for(r"coordinator_listening", timeout=90)
        assert re.search(rf"warning \S+ open_files_limit soft_before={FD_LIMIT} soft={FD_LIMIT}", coord.text())
        crowd = _idle_crowd(port, IDLE_CONNECTIONS)
        procs += [site_proc(kit, f"site-{k}", logs / f"site-{k}.log") for k in (1, 2)]  # site-3 never starts
        coord.wait_for(r"waiting_for_sites sites=\"?[^\"]*site-3", timeout=60)
        assert coord.wait(timeout=240) == 0, coord.tail()
        for s in procs[1:]:
            assert s.wait(timeout=30) == 0, s.tail()
    finally:
        for s in crowd:
            s.close()
        for p in procs:
            p.close()
    text = coord.text()
    assert "Traceback" not in text
    assert "run_json_write_failed" in text, "the crowd never exhausted the descriptors: the test proves nothing"
    # the self-check's own refusal: info, never a warning, never counted
    assert not re.search(r"warning \S+ (zap_denied|handshake_rejected reason=auth)", text)
    assert re.search(r"info \S+ zap_denied .*self_check=True", text)

    run = json.loads((tmp_path / "kit" / "coordinator" / "state" / "run.json").read_text())
    assert run["status"] == "completed" and run["steps_done"] == 4
    assert run["no_hello"] == ["site-3"] and run["sites"]["site-3"]["state"] == "known"
    assert run["auth"]["denied"] == 0 and "auth" not in run["handshake_failures"]
    assert run["run_json_write_failures"] >= 1
    # every idle connection dropped at the handshake timeout is counted, the warnings are rate-limited
    dropped = sum(run["handshake_failures"].values())
    assert dropped >= 100 and len(re.findall(r"warning \S+ handshake_rejected", text)) <= 20
    for k in (1, 2):
        s = run["sites"][f"site-{k}"]
        assert s["steps_served"] == 4 and s["gradients_late"] == 0 and s["gradients_dropped"] == 0

    # 2. --resume for two more steps: counters continue, the incarnation counts up
    update_toml(kit["coordinator"], {"train": {"steps": 6}})
    coord = Proc(["-m", "coordinator", "--config", str(kit["coordinator"]), "--resume"], logs / "coordinator-2.log")
    procs = [coord] + [site_proc(kit, f"site-{k}", logs / f"site-{k}-2.log") for k in (1, 2)]
    try:
        assert coord.wait(timeout=180) == 0, coord.tail()
        for s in procs[1:]:
            assert s.wait(timeout=30) == 0, s.tail()
    finally:
        for p in procs:
            p.close()
    assert re.search(r"open_files_limit soft_before=\d+ soft=\d+", coord.text())
    again = json.loads((tmp_path / "kit" / "coordinator" / "state" / "run.json").read_text())
    assert again["incarnation"] == 2 and again["steps_done"] == 6 and again["status"] == "completed"
    for k in (1, 2):
        before, after = run["sites"][f"site-{k}"], again["sites"][f"site-{k}"]
        assert after["steps_served"] == 6, after
        assert after["hellos"] >= before["hellos"] + 1 and after["bytes_in"] > before["bytes_in"]
    for code, n in run["handshake_failures"].items():
        assert again["handshake_failures"].get(code, 0) >= n
    assert again["wall_time_s"] > run["wall_time_s"]
    assert sys.platform.startswith("linux")  # RLIMIT_NOFILE and preexec semantics above are Linux's


def _secgan(*argv: str) -> None:
    res = subprocess.run([sys.executable, "-m", "secgan", *argv], cwd=REPO, env=child_env(), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_a_federation_from_site_made_keys_runs(tmp_path, phantom_root):
    port = free_port()
    sites = ("site-1", "site-2")
    for sid in sites:  # at each site: its own keys, only the public file leaves
        _secgan("keys", "generate", "--site-id", sid, "--out", str(tmp_path / sid))
    kit = tmp_path / "kit"
    _secgan("provision", "--out", str(kit), "--port", str(port), "--data-root", str(phantom_root),
            "--image-size", str(TINY_IMAGE["size"]),
            *sum((["--site-keys", str(tmp_path / sid / f"{sid}.public.json")] for sid in sites), []))
    secrets = sorted(str(p.relative_to(kit)) for p in kit.rglob("*") if p.is_file() and p.suffix in (".key_secret", ".pem", ".x25519"))
    assert secrets == ["coordinator/keys/coordinator.key_secret", "coordinator/signing.pem"]  # no site secret
    paths = {"coordinator": kit / "coordinator" / "coordinator.toml"}
    update_toml(paths["coordinator"], {"min_sites": 2, "heartbeat_timeout_s": 4.0, "run_json_every_s": 1.0,
                                       "model": TINY_MODEL, "train": TINY_TRAIN})
    for sid in sites:  # the site copies the kit's (public) files next to its keys
        for f in (kit / sid).iterdir():
            shutil.copy(f, tmp_path / sid / f.name)
        paths[sid] = tmp_path / sid / "site.toml"
        update_toml(paths[sid], {"heartbeat_interval_s": 0.5, "hello_retry_s": 1.0, "model": TINY_MODEL,
                                 "train": TINY_TRAIN,
                                 "policy": {"mode": "off", "allow_off": True, "target_epsilon": 10.0, "delta": 1e-5}})
    logs = tmp_path / "logs"
    procs = [Proc(["-m", "coordinator", "--config", str(paths["coordinator"])], logs / "coordinator.log")]
    procs += [site_proc(paths, sid, logs / f"{sid}.log") for sid in sites]
    try:
        assert procs[0].wait(timeout=180) == 0, procs[0].tail()
        for p in procs[1:]:
            assert p.wait(timeout=30) == 0, p.tail()
    finally:
        for p in procs:
            p.close()
    run = json.loads((kit / "coordinator" / "state" / "run.json").read_text())
    assert run["status"] == "completed" and all(run["sites"][s]["steps_served"] == 4 for s in sites)

"""Helpers for the network integration tests: free ports, processes with their logs in files,
waiting for a log line with a timeout, and federation kits made with ``secgan provision``."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# tiny everything: these tests are about processes and sockets, not image quality
TINY_IMAGE = {"size": 32}
TINY_MODEL = {"g_width": 8, "g_depth": 2, "d_width": 8, "d_layers": 2, "noise_dim": 4}
TINY_TRAIN = {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "seed": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL if the test process dies, so no federation outlives a crash."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Proc:
    """A child process whose stdout+stderr go to a log file we can search."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.log.open("ab")
        self.p = subprocess.Popen([sys.executable, *args], stdout=self._fh, stderr=subprocess.STDOUT,
                                  cwd=REPO, env=child_env(),
                                  preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text()))

    def wait_for(self, pattern: str, *, timeout: float, count: int = 1) -> re.Match:
        """Wait until ``pattern`` (regex) occurs ``count`` times in the log; fail with the log tail."""
        deadline = time.monotonic() + timeout
        while True:
            matches = list(re.finditer(pattern, self.text()))
            if len(matches) >= count:
                return matches[count - 1]
            if self.p.poll() is not None and len(list(re.finditer(pattern, self.text()))) < count:
                raise AssertionError(f"process exited ({self.p.returncode}) before {pattern!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {pattern!r}:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process did not exit within {timeout}s:\n{self.tail()}") from None

    def kill9(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=10)

    def terminate(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._fh.close()


def write_toml(path: Path, data: dict[str, Any]) -> None:
    from secgan.commands.provision import to_toml

    path.write_text(to_toml(data))


def update_toml(path: Path, updates: dict[str, Any]) -> None:
    """Merge ``updates`` into a generated config (one level of sub-tables, like the generator)."""
    data = tomllib.loads(path.read_text())
    for k, v in updates.items():
        if isinstance(v, dict):
            data.setdefault(k, {}).update(v)
        else:
            data[k] = v
    write_toml(path, data)


def make_kit(out: Path, *, data_root: Path, sites: int, port: int, coordinator: dict[str, Any] | None = None,
             site: dict[str, Any] | None = None) -> dict[str, Path]:
    """``secgan provision`` in a child process, then tiny settings merged into every config."""
    res = subprocess.run(
        [sys.executable, "-m", "secgan", "provision", "--sites", str(sites), "--out", str(out), "--port", str(port),
         "--data-root", str(data_root), "--image-size", str(TINY_IMAGE["size"])],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    paths = {"coordinator": out / "coordinator" / "coordinator.toml"}
    update_toml(paths["coordinator"], {
        "min_sites": min(2, sites), "round_deadline_s": 20.0, "heartbeat_timeout_s": 4.0, "heartbeat_interval_s": 0.5,
        "run_json_every_s": 1.0, "model": TINY_MODEL, "train": TINY_TRAIN, **(coordinator or {}),
    })
    for k in range(1, sites + 1):
        p = out / f"site-{k}" / "site.toml"
        update_toml(p, {
            "heartbeat_interval_s": 0.5, "hello_retry_s": 1.0, "status_every_s": 1.0,
            "model": TINY_MODEL, "train": TINY_TRAIN,
            "policy": {"mode": "off", "allow_off": True, "target_epsilon": 10.0, "delta": 1e-5},
            **(site or {}),
        })
        paths[f"site-{k}"] = p
    return paths


def coordinator_proc(kit: dict[str, Path], log: Path, *extra: str) -> Proc:
    return Proc(["-m", "coordinator", "--config", str(kit["coordinator"]), *extra], log)


def site_proc(kit: dict[str, Path], site: str, log: Path) -> Proc:
    return Proc(["-m", "sites", "--config", str(kit[site])], log)

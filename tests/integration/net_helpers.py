"""Helpers for the network integration tests: free ports, processes with their logs in files,
waiting (with a deadline) for a structured log event, a process state or any condition, and
federation kits made with ``secgan provision``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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


def wait_until(found: Callable[[], Any], *, timeout: float, what: str,
               gave_up: Callable[[], str | None] = lambda: None) -> Any:
    """Poll ``found()`` until it returns something truthy (returned); fail after ``timeout`` s, or
    as soon as ``gave_up()`` names a reason (e.g. the process it waits on exited)."""
    deadline = time.monotonic() + timeout
    while True:
        result = found()
        if result:
            return result
        reason = gave_up()
        if reason is not None:
            result = found()  # the last lines may have come with the exit
            if result:
                return result
            raise AssertionError(f"{reason} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)  # poll interval of a wait on a condition


def json_events(text: str) -> list[dict[str, Any]]:
    """The ``--log-json`` records in a log, in order; other lines (a library's warning, a
    traceback) are skipped."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("event"), str):
            events.append(obj)
    return events


def _matches(obj: dict[str, Any], fields: dict[str, Any], where: Callable[[dict[str, Any]], bool] | None) -> bool:
    return all(k in obj and obj[k] == v for k, v in fields.items()) and (where is None or bool(where(obj)))


class Proc:
    """A child process whose stdout+stderr go to a log file we can search: started with
    ``--log-json``, its structured events are read with ``events`` and ``wait_event``."""

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

    def _wait(self, found: Callable[[], Any], *, timeout: float, what: str) -> Any:
        exited = lambda: f"process exited ({self.p.returncode})" if self.p.poll() is not None else None  # noqa: E731
        try:
            return wait_until(found, timeout=timeout, what=what, gave_up=exited)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.tail()}") from None

    def wait_for(self, pattern: str, *, timeout: float, count: int = 1) -> re.Match:
        """Wait until ``pattern`` (regex) occurs ``count`` times in the log; fail with the log tail."""
        def found() -> re.Match | None:
            matches = list(re.finditer(pattern, self.text()))
            return matches[count - 1] if len(matches) >= count else None

        return self._wait(found, timeout=timeout, what=repr(pattern))

    def events(self, event: str | None = None, *, where: Callable[[dict[str, Any]], bool] | None = None,
               **fields: Any) -> list[dict[str, Any]]:
        """The structured log events named ``event`` (any when None) whose fields equal ``fields``
        and, when given, satisfy ``where``."""
        if event is not None:
            fields["event"] = event
        return [e for e in json_events(self.text()) if _matches(e, fields, where)]

    def wait_event(self, event: str | None, *, timeout: float, count: int = 1,
                   where: Callable[[dict[str, Any]], bool] | None = None, **fields: Any) -> dict[str, Any]:
        """Wait until ``count`` events match (see ``events``); return the ``count``-th."""
        def found() -> dict[str, Any] | None:
            hits = self.events(event, where=where, **fields)
            return hits[count - 1] if len(hits) >= count else None

        what = f"{count} x {event} {fields}" + (" (with a condition)" if where is not None else "")
        return self._wait(found, timeout=timeout, what=what)

    def stop(self, *, timeout: float = 10) -> None:
        """SIGSTOP, returning once the kernel reports the process stopped (Linux /proc)."""
        self.p.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.p.pid}/stat")

        def stopped() -> bool:
            # the state letter follows the parenthesised command name
            return stat.read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")

        wait_until(stopped, timeout=timeout, what=f"process {self.p.pid} to stop")

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
             site: dict[str, Any] | None = None, image_size: int = TINY_IMAGE["size"]) -> dict[str, Path]:
    """``secgan provision`` in a child process, then tiny settings merged into every config."""
    res = subprocess.run(
        [sys.executable, "-m", "secgan", "provision", "--sites", str(sites), "--out", str(out), "--port", str(port),
         "--data-root", str(data_root), "--image-size", str(image_size)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    paths = {"coordinator": out / "coordinator" / "coordinator.toml"}
    update_toml(paths["coordinator"], {
        "min_sites": min(2, sites), "round_deadline_s": 20.0, "heartbeat_timeout_s": 4.0, "heartbeat_interval_s": 0.5,
        "run_json_every_s": 1.0, "stop_linger_s": 10.0, "model": TINY_MODEL, "train": TINY_TRAIN,
        **(coordinator or {}),
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


def site_proc(kit: dict[str, Path], site: str, log: Path, *extra: str) -> Proc:
    return Proc(["-m", "sites", "--config", str(kit[site]), *extra], log)


def site_host_proc(kit: dict[str, Path], sites: list[str], log: Path, *extra: str) -> Proc:
    """One ``secgan site-host`` process serving the kit's ``sites`` (names like "site-3")."""
    return Proc(["-m", "secgan", "site-host", *extra, *(str(kit[s]) for s in sites)], log)


@contextmanager
def stand_in_coordinator(kit_dir: Path, port: int, limits: Any) -> Iterator[Any]:
    """A bare CURVE ROUTER on 127.0.0.1:``port`` with the kit's coordinator keys and its ZAP
    allow-list (the manifest's sites), for tests that play the coordinator's side by hand. On exit
    the ZAP thread stops and the context (the router with it) is destroyed."""
    import zmq

    from secgan.keys.curve import load_curve_keypair
    from secgan.keys.manifest import load_manifest
    from secgan.keys.signing import load_signing_key
    from secgan.net.transport import AllowListPolicy, ZapAuthenticator, make_router

    cdir = Path(kit_dir) / "coordinator"
    manifest = load_manifest(cdir / "manifest.json",
                             coordinator_verify_key=load_signing_key(cdir / "signing.pem").public_key())
    spub, ssec = load_curve_keypair(cdir / "keys", "coordinator")
    ctx = zmq.Context()
    zap = ZapAuthenticator(ctx, AllowListPolicy({s.site_id: s.curve_public for s in manifest.sites})).start()
    try:
        yield make_router(ctx, bind=f"tcp://127.0.0.1:{port}", server_secret=ssec, server_public=spub, limits=limits)
    finally:
        zap.stop()
        ctx.destroy(linger=0)

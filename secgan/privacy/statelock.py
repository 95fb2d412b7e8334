"""One process at a time writes a site's state: an exclusive ``flock`` on ``state_dir/state.lock``.

``StateLock.acquire(state_dir)`` takes the lock without waiting and keeps it for the life of the
process (the kernel drops it when the process dies, however it dies, so a crash never leaves a
stale lock). A second process is refused with a ``StateLocked`` error that names the holder's pid,
which the holder writes into the lock file once it has the lock.

Within one process the lock is re-entrant: the site command takes it before it loads anything and
the learner (or ``secgan ledger recover``) takes it again; both share the one kernel lock, which is
released when the last holder releases it or the process ends. Two writers inside one process are
caught by the ledger's and the release log's own checks before every release.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from secgan.core.errors import PrivacyError

LOCK_FILE = "state.lock"

_held: dict[str, list] = {}  # real path of the lock file -> [fd, holders]
_guard = threading.Lock()


class StateLocked(PrivacyError):
    """Another process holds the site's state lock."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(
            f"{path.parent}: the site's state folder is in use by another process ({holder}); "
            "refusing to start a second writer of this site's ledger and release log. Stop that process "
            "first (or wait for it to end); one process at a time owns a site's state"
        )
        self.path = path
        self.holder = holder


def _holder_of(path: Path) -> str:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        text = ""
    pid = text.split()[0] if text else ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


class StateLock:
    """A held state lock. ``release()``, the handle's garbage collection or the end of the process
    lets it go (the kernel lock goes with the process's last handle)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self._key = key
        self._released = False

    @classmethod
    def acquire(cls, state_dir: str | Path) -> "StateLock":
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_FILE
        key = os.path.realpath(path)
        with _guard:
            entry = _held.get(key)
            if entry is not None:
                entry[1] += 1
                return cls(path, key)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise StateLocked(path, _holder_of(path)) from None
            except OSError as exc:
                os.close(fd)
                raise PrivacyError(f"{path}: cannot lock the site's state folder ({exc.strerror})") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            os.fsync(fd)
            _held[key] = [fd, 1]
        return cls(path, key)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with _guard:
            entry = _held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]
                try:
                    fcntl.flock(entry[0], fcntl.LOCK_UN)
                finally:
                    os.close(entry[0])

    def __del__(self) -> None:  # a holder that is gone (e.g. a discarded learner) holds nothing
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the kernel drops the lock anyway
            pass

    def __enter__(self) -> "StateLock":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def held(state_dir: str | Path) -> bool:
    """True when this process holds the lock of ``state_dir``."""
    return os.path.realpath(Path(state_dir) / LOCK_FILE) in _held

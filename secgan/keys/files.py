"""Key files on disk: the one way secgan reads and writes secret and public key files.

- a secret file is written 0600 from the first byte (write temp, fsync, rename: ``secgan.core.fsio``);
- a secret file is read only if it is a regular file (a symlink is refused: ``O_NOFOLLOW``, then
  ``fstat`` on the opened descriptor, so there is no check-then-open race) that neither group nor
  others may access; otherwise a ConfigError naming the file, never quoting its content;
- a public file is written 0644;
- a folder that holds secrets is 0700.

Every key loader (CURVE, Ed25519, X25519) reads through :func:`read_secret_file` and
:func:`read_public_file`; none opens a key file itself. Private keys other than CURVE's are
unencrypted PKCS#8 PEM (protected by their 0600 mode): :func:`write_private_pem` and
:func:`read_private_pem`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from secgan.core.errors import ConfigError
from secgan.core.fsio import atomic_write_bytes

SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
PRIVATE_DIR_MODE = 0o700
MAX_KEY_FILE_BYTES = 64 * 1024  # every key file secgan writes is far smaller


def read_secret_file(path: str | os.PathLike[str]) -> bytes:
    """Read a secret file, refusing one that group or others may access (or that is not a file)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ConfigError(f"{path}: secret key file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open secret key file ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: secret key file is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"{path}: secret key file is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 on it"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(MAX_KEY_FILE_BYTES)
    finally:
        os.close(fd)


def read_public_file(path: str | os.PathLike[str]) -> bytes:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return fh.read(MAX_KEY_FILE_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{path}: public key file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read public key file ({exc.strerror})") from None


def write_secret_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write key material with mode 0600 from the first byte on."""
    atomic_write_bytes(path, data, mode=SECRET_FILE_MODE)


def write_public_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a public key, certificate or signed document with mode 0644."""
    atomic_write_bytes(path, data, mode=PUBLIC_FILE_MODE)


def make_private_dir(path: str | os.PathLike[str]) -> None:
    """Create a folder (and its parents) for secrets and set it to 0700, whatever it was."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)


def write_private_pem(path: str | os.PathLike[str], key: Any) -> None:
    """A private key as PEM PKCS#8 (unencrypted: protected by its 0600 mode), written 0600."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret_file(path, pem)


def read_private_pem(path: str | os.PathLike[str]) -> Any:
    """The private key of a PEM secret file (read as :func:`read_secret_file` does); the caller
    checks its type. ConfigError naming the file if it is not an unencrypted PEM private key."""
    path = Path(path)
    data = read_secret_file(path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: not an unencrypted PEM private key") from None
    except Exception:  # cryptography raises UnsupportedAlgorithm for exotic keys
        raise ConfigError(f"{path}: unsupported private key") from None

"""Key files on disk: one way to read a secret (owner-only mode, regular file, no symlink) for
every kind of secret key, 0600 secrets, 0644 public files, 0700 folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from secgan.core.errors import ConfigError
from secgan.keys import agreement, curve, files, signing


def _write_curve(folder: Path) -> Path:
    return curve.write_curve_keypair(folder, "k")[1]


def _load_curve(path: Path):
    return curve.load_curve_keypair(path.parent, path.name.removesuffix(".key_secret"))


def _write_signing(folder: Path) -> Path:
    signing.write_signing_key(folder / "k.pem", signing.generate_signing_key())
    return folder / "k.pem"


def _write_agreement(folder: Path) -> Path:
    agreement.write_agreement_key(folder / "k.x25519", agreement.generate_agreement_key())
    return folder / "k.x25519"


# every kind of secret key file: (writer into a folder -> path, loader of a path)
SECRETS = {
    "curve": (_write_curve, _load_curve),
    "signing": (_write_signing, signing.load_signing_key),
    "agreement": (_write_agreement, agreement.load_agreement_key),
}
LOOSE_MODES = [0o640, 0o604, 0o644, 0o660, 0o602, 0o620, 0o610, 0o601, 0o677]


@pytest.fixture(params=sorted(SECRETS))
def secret_kind(request):
    return SECRETS[request.param]


def test_every_secret_key_file_is_written_0600_and_loads(tmp_path, secret_kind):
    write, load = secret_kind
    path = write(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(path) is not None


@pytest.mark.parametrize("mode", LOOSE_MODES, ids=lambda m: f"{m:04o}")
def test_every_secret_key_file_with_a_loose_mode_is_refused(tmp_path, secret_kind, mode):
    write, load = secret_kind
    path = write(tmp_path)
    content = path.read_bytes()
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match="group or others") as exc:
        load(path)
    assert str(path) in str(exc.value) and f"{stat.S_IMODE(mode):04o}" in str(exc.value)
    assert content.decode("ascii", "replace") not in str(exc.value)


def test_every_secret_key_file_behind_a_symlink_is_refused(tmp_path, secret_kind):
    write, load = secret_kind
    target = write(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    link = other / target.name
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="cannot open secret key file") as exc:
        load(link)
    assert str(link) in str(exc.value)


def test_every_secret_key_file_that_is_not_a_regular_file_is_refused(tmp_path, secret_kind):
    write, load = secret_kind
    name = write(tmp_path / "made").name
    folder = tmp_path / name
    folder.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        load(folder)


def test_every_missing_secret_key_file_is_named(tmp_path, secret_kind):
    write, load = secret_kind
    name = write(tmp_path / "made").name
    with pytest.raises(ConfigError, match="secret key file not found") as exc:
        load(tmp_path / name)
    assert str(tmp_path / name) in str(exc.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o620])
def test_secret_file_with_loose_mode_is_refused(tmp_path, mode):
    _, sec_path = curve.write_curve_keypair(tmp_path, "c")
    os.chmod(sec_path, mode)
    with pytest.raises(ConfigError) as exc:
        curve.load_curve_keypair(tmp_path, "c")
    assert str(sec_path) in str(exc.value)
    secret_text = sec_path.read_text()
    assert secret_text.split('secret-key = "')[1][:40] not in str(exc.value)


def test_secret_symlink_and_missing_are_refused(tmp_path):
    _, sec_path = curve.write_curve_keypair(tmp_path, "c")
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.key_secret").symlink_to(sec_path)
    with pytest.raises(ConfigError):
        curve.load_curve_keypair(other, "c")
    with pytest.raises(ConfigError, match="not found"):
        curve.load_curve_keypair(tmp_path, "nobody")


def test_secret_files_are_0600(tmp_path: Path) -> None:
    p = tmp_path / "k.secret"
    old = os.umask(0)
    try:
        files.write_secret_file(p, b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    files.write_public_file(tmp_path / "pub", b"y")
    assert stat.S_IMODE((tmp_path / "pub").stat().st_mode) == 0o644


def test_public_key_file_read_names_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="public key file not found") as exc:
        files.read_public_file(tmp_path / "absent.pub")
    assert str(tmp_path / "absent.pub") in str(exc.value)


def test_private_dir_is_0700_even_if_it_existed(tmp_path):
    old = os.umask(0)
    try:
        files.make_private_dir(tmp_path / "a" / "b")
        (tmp_path / "open").mkdir(mode=0o777)
        files.make_private_dir(tmp_path / "open")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "open").stat().st_mode) == 0o700


def test_keys_package_does_not_pull_in_torch():
    import subprocess
    import sys

    modules = ", ".join(f"secgan.keys.{m}" for m in ("files", "curve", "signing", "agreement", "manifest"))
    code = f"import sys, {modules}; raise SystemExit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0

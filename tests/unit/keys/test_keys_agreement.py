"""X25519 agreement key files (secure-sum): written 0600, read through ``secgan.keys.files`` like
every other secret, so a site start refuses a loose, linked or foreign agreement key."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secgan.commands.provision import provision
from secgan.core.errors import ConfigError, CryptoError
from secgan.keys.agreement import (
    generate_agreement_key,
    load_agreement_key,
    parse_public_hex,
    public_hex,
    write_agreement_key,
)
from secgan.settings import load_site_config, verify_site_federation


def test_agreement_key_file_round_trip_and_permissions(tmp_path):
    key = generate_agreement_key()
    path = tmp_path / "site-1.x25519.pem"
    pub = write_agreement_key(path, key)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert public_hex(load_agreement_key(path)) == pub == public_hex(key)
    assert parse_public_hex(pub) is not None
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="group or others"):
        load_agreement_key(path)


def test_agreement_key_loader_refuses_other_key_types(tmp_path):
    path = tmp_path / "ed.pem"
    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
    path.write_bytes(pem)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="X25519"):
        load_agreement_key(path)
    (tmp_path / "junk.pem").write_bytes(b"not a key")
    os.chmod(tmp_path / "junk.pem", 0o600)
    with pytest.raises(ConfigError, match="PEM"):
        load_agreement_key(tmp_path / "junk.pem")
    with pytest.raises(ConfigError):
        load_agreement_key(tmp_path / "missing.pem")


@pytest.mark.parametrize("text", ["", "00" * 31, "AB" * 32, "zz" * 32, 42])
def test_parse_public_hex_rejects_malformed(text):
    with pytest.raises(CryptoError):
        parse_public_hex(text)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    out = tmp_path_factory.mktemp("fed")
    provision(out, sites=3, run_id="r1", aggregation="secure-sum")
    return out


def _site_start_with(kit, tmp_path, swap):
    """verify_federation of site-1 after ``swap(path of its agreement key)``; the kit is restored."""
    path = kit / "site-1" / "keys" / "site-1.x25519"
    saved = tmp_path / "saved.x25519"
    os.replace(path, saved)
    try:
        swap(path, saved)
        return verify_site_federation(load_site_config(kit / "site-1" / "site.toml"))
    finally:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            path.rmdir()
        os.replace(saved, path)


def test_site_start_reads_the_agreement_key(kit, tmp_path):
    manifest = _site_start_with(kit, tmp_path, lambda path, saved: os.link(saved, path))
    assert manifest.site("site-1").x25519_public == public_hex(load_agreement_key(kit / "site-1" / "keys" / "site-1.x25519"))


def test_site_start_refuses_a_symlinked_agreement_key(kit, tmp_path):
    with pytest.raises(ConfigError, match="agreement_key: .*cannot open secret key file"):
        _site_start_with(kit, tmp_path, lambda path, saved: path.symlink_to(saved))


def test_site_start_refuses_an_agreement_key_readable_by_others(kit, tmp_path):
    def loosen(path, saved):
        path.write_bytes(saved.read_bytes())
        os.chmod(path, 0o604)

    with pytest.raises(ConfigError, match="agreement_key: .*group or others"):
        _site_start_with(kit, tmp_path, loosen)


def test_site_start_refuses_an_agreement_key_that_is_a_folder(kit, tmp_path):
    with pytest.raises(ConfigError, match="agreement_key: .*not a regular file"):
        _site_start_with(kit, tmp_path, lambda path, saved: path.mkdir(mode=0o700))

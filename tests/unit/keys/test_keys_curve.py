"""CURVE key pair files: modes, round trip through ZeroMQ's own reader, malformed and mismatched files."""

from __future__ import annotations

import os

import pytest
import zmq.auth

from secgan.core.errors import ConfigError
from secgan.keys import curve


def test_curve_keypair_files_modes_and_round_trip(tmp_path):
    pub_path, sec_path = curve.write_curve_keypair(tmp_path, "site-1")
    assert (pub_path.name, sec_path.name) == ("site-1.key", "site-1.key_secret")
    assert oct(os.stat(sec_path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(pub_path).st_mode & 0o777) == "0o644"
    public, secret = curve.load_curve_keypair(tmp_path, "site-1")
    assert curve.is_z85_key(public) and curve.is_z85_key(secret) and public != secret
    assert curve.load_curve_public(pub_path) == public
    assert b"secret-key" not in pub_path.read_bytes()
    # ZeroMQ's own certificate reader understands the files
    assert zmq.auth.load_certificate(sec_path) == (public, secret)
    assert zmq.auth.load_certificate(pub_path) == (public, None)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"curve\n    public-key = \"short\"\n    secret-key = \"short\"\n",
        b"nonsense\n",
        b"metadata\ncurve\n    public-key = \"" + b"A" * 40 + b"\"\n",  # no secret
        b"metadata\ncurve\n    public-key = \"" + b"~" * 40 + b"\"\n    secret-key = \"" + b"~" * 40 + b"\"\n",
        b"\x00\xff" * 10,
    ],
)
def test_malformed_curve_secret_file(tmp_path, text):
    path = tmp_path / "c.key_secret"
    path.write_bytes(text)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="c.key_secret"):
        curve.load_curve_keypair(tmp_path, "c")


def test_curve_public_must_match_secret(tmp_path):
    curve.write_curve_keypair(tmp_path, "a")
    curve.write_curve_keypair(tmp_path / "b", "a")
    # swap in another key pair's public file
    (tmp_path / "a.key").write_bytes((tmp_path / "b" / "a.key").read_bytes())
    with pytest.raises(ConfigError, match="does not match"):
        curve.load_curve_keypair(tmp_path, "a")
    # a secret certificate whose public line was edited
    sec = (tmp_path / "b" / "a.key_secret")
    other_pub, _ = curve.generate_curve_keypair()
    lines = sec.read_text().splitlines()
    lines = [f'    public-key = "{other_pub.decode()}"' if "public-key" in ln else ln for ln in lines]
    sec.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="does not belong"):
        curve.load_curve_keypair(tmp_path / "b", "a")


def test_public_file_with_secret_is_refused(tmp_path):
    _, sec_path = curve.write_curve_keypair(tmp_path, "c")
    pub = tmp_path / "leak.key"
    pub.write_bytes(sec_path.read_bytes())
    with pytest.raises(ConfigError, match="must not contain a secret"):
        curve.load_curve_public(pub)

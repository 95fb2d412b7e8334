"""`secgan keys generate`: a site makes its own keys (secrets 0600 in 0700 folders) and a public-keys
file holding nothing secret; `secgan provision --site-keys` builds a federation from those files."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from secgan.cli import main
from secgan.commands.keys import PUBLIC_FIELDS, read_site_public_keys
from secgan.core.errors import ConfigError


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _generate(tmp_path: Path, sid: str) -> Path:
    assert main(["keys", "generate", "--site-id", sid, "--out", str(tmp_path / sid)]) == 0
    return tmp_path / sid / f"{sid}.public.json"


def test_generate_writes_private_secrets_and_a_public_file_without_them(tmp_path, capsys):
    public = _generate(tmp_path, "site-1")
    d = tmp_path / "site-1"
    assert _mode(d) == 0o700 and _mode(d / "keys") == 0o700
    secrets = [d / "keys" / "site-1.key_secret", d / "keys" / "site-1.x25519", d / "signing.pem"]
    for p in secrets:
        assert _mode(p) == 0o600, p
    data = json.loads(public.read_text())
    assert tuple(sorted(data)) == tuple(sorted(PUBLIC_FIELDS)) and data["site_id"] == "site-1"
    text = public.read_text()
    curve_secret = [ln.split('"')[1] for ln in (d / "keys" / "site-1.key_secret").read_text().splitlines()
                    if "secret-key" in ln][0]
    assert curve_secret not in text and "PRIVATE" not in text
    from cryptography.hazmat.primitives import serialization

    for pem in (d / "signing.pem", d / "keys" / "site-1.x25519"):
        key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        import base64

        assert raw.hex() not in text and base64.b64encode(raw).decode() not in text
    pk = read_site_public_keys(public)
    from secgan.keys.curve import load_curve_public
    from secgan.keys.signing import load_verify_key, public_raw

    assert pk.curve_public == load_curve_public(d / "keys" / "site-1.key")
    assert public_raw(pk.ed25519_public) == public_raw(load_verify_key(d / "signing.pub"))
    # a second run would replace the site's keys: refused without --force
    capsys.readouterr()
    assert main(["keys", "generate", "--site-id", "site-1", "--out", str(d)]) == 2
    assert "--force" in capsys.readouterr().err
    assert read_site_public_keys(public) == pk


@pytest.mark.parametrize("change,field", [
    ({"curve_secret": "x" * 40}, "exactly the fields"),
    ({"curve_public": "short"}, "curve_public"),
    ({"ed25519_public": "!!"}, "ed25519_public"),
    ({"x25519_public": "00" * 31}, "x25519_public"),
    ({"site_id": "Site 1"}, "site_id"),
    ({"format": "other/1"}, "format"),
])
def test_a_malformed_public_keys_file_is_refused_naming_the_field(tmp_path, change, field):
    public = _generate(tmp_path, "site-1")
    data = {**json.loads(public.read_text()), **change}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as exc:
        read_site_public_keys(bad)
    assert field in str(exc.value) and "bad.json" in str(exc.value)


def test_provision_from_site_made_keys_holds_no_site_secret_and_verifies(tmp_path):
    from secgan.keys.curve import load_curve_public
    from coordinator.config import load_coordinator_config, verify_coordinator_federation
    from secgan.settings import load_site_config, verify_site_federation

    files = [_generate(tmp_path, sid) for sid in ("site-a", "site-b")]
    kit = tmp_path / "kit"
    assert main(["provision", "--out", str(kit), *sum((["--site-keys", str(f)] for f in files), []),
                 "--data-root", str(tmp_path / "data")]) == 0
    manifest = verify_coordinator_federation(load_coordinator_config(kit / "coordinator" / "coordinator.toml"))
    assert [s.site_id for s in manifest.sites] == ["site-a", "site-b"]
    for sid, f in zip(("site-a", "site-b"), files):
        entry = manifest.site(sid)
        assert entry.curve_public == read_site_public_keys(f).curve_public
        assert entry.x25519_public == json.loads(f.read_text())["x25519_public"]
        folder = kit / sid
        assert not (folder / "keys").exists() and not (folder / "signing.pem").exists()
        assert sorted(p.name for p in folder.iterdir()) == ["coordinator-signing.pub", "coordinator.key",
                                                            "manifest.json", "site.toml"]
        # the site copies the kit's files next to its own keys: its start-up check passes
        own = tmp_path / sid
        for p in folder.iterdir():
            shutil.copy(p, own / p.name)
        cfg = load_site_config(own / "site.toml")
        assert verify_site_federation(cfg).site(sid).curve_public == load_curve_public(own / "keys" / f"{sid}.key")


def test_provision_refuses_duplicates_and_a_count_mismatch(tmp_path, capsys):
    f = _generate(tmp_path, "site-1")
    assert main(["provision", "--out", str(tmp_path / "k1"), "--site-keys", str(f), "--site-keys", str(f)]) == 2
    assert "second public-keys file" in capsys.readouterr().err
    assert main(["provision", "--out", str(tmp_path / "k2"), "--sites", "2", "--site-keys", str(f)]) == 2
    assert "--sites 2" in capsys.readouterr().err
    assert main(["provision", "--out", str(tmp_path / "k3")]) == 2
    assert "--site-keys" in capsys.readouterr().err

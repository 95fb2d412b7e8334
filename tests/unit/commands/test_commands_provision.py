"""`secgan provision`: files, modes, configs that load, manifest that verifies, --force."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from secgan.cli import main
from secgan.core.errors import ConfigError
from secgan.keys.manifest import load_manifest
from secgan.keys.signing import key_id, load_verify_key, public_raw
from secgan.settings import load_site_config, verify_site_federation

from coordinator.config import load_coordinator_config, verify_coordinator_federation


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_provision_cli_writes_a_complete_kit(tmp_path, capsys):
    out = tmp_path / "fed"
    rc = main(["provision", "--sites", "3", "--out", str(out), "--data-root", str(tmp_path / "data"),
               "--federation", "demo", "--port", "6001", "--image-size", "32"])
    assert rc == 0
    assert "coordinator.toml" in capsys.readouterr().out
    c = out / "coordinator"
    for name in ("coordinator.toml", "keys/coordinator.key", "keys/coordinator.key_secret", "signing.pem",
                 "signing.pub", "manifest.json"):
        assert (c / name).is_file(), name
    assert mode(c / "keys" / "coordinator.key_secret") == 0o600 and mode(c / "signing.pem") == 0o600
    assert mode(c) == 0o700 and mode(c / "keys") == 0o700 and mode(out) == 0o700
    cfg = load_coordinator_config(c / "coordinator.toml")
    assert cfg.port == 6001 and cfg.min_sites == 3 and cfg.image.size == 32
    manifest = verify_coordinator_federation(cfg)
    assert manifest.federation == "demo" and manifest.coordinator.endpoint == "tcp://127.0.0.1:6001"
    assert manifest.run_id is None  # no --run-id: the manifest does not bind a run
    seeds = set()
    for k in (1, 2, 3):
        s = out / f"site-{k}"
        for name in ("site.toml", f"keys/site-{k}.key", f"keys/site-{k}.key_secret", "signing.pem", "signing.pub",
                     "coordinator.key", "coordinator-signing.pub", "manifest.json"):
            assert (s / name).is_file(), name
        assert mode(s / "keys" / f"site-{k}.key_secret") == 0o600 and mode(s / "signing.pem") == 0o600
        assert mode(s) == 0o700
        # the site gets only the coordinator's public material
        assert b"secret-key" not in (s / "coordinator.key").read_bytes()
        assert b"PRIVATE" not in (s / "coordinator-signing.pub").read_bytes()
        scfg = load_site_config(s / "site.toml")
        assert scfg.data_dir == str((tmp_path / "data" / f"site-{k}").resolve())
        assert scfg.image.size == 32 and scfg.coordinator_endpoint == "tcp://127.0.0.1:6001"
        assert verify_site_federation(scfg).site(f"site-{k}") is not None
        seeds.add(scfg.seed)
    assert len(seeds) == 3  # private per-site seeds, not a shared guessable value
    # every party holds the same signed manifest; no secret anywhere in it
    text = (c / "manifest.json").read_text()
    assert all((out / f"site-{k}" / "manifest.json").read_text() == text for k in (1, 2, 3))
    for k in (1, 2, 3):
        secret = (out / f"site-{k}" / "keys" / f"site-{k}.key_secret").read_text().split('secret-key = "')[1][:40]
        assert secret not in text


def test_refuses_existing_kit_without_force(tmp_path, capsys):
    from secgan.commands.provision import provision

    out = tmp_path / "fed"
    provision(out, sites=2, run_id="r1")
    before = (out / "coordinator" / "keys" / "coordinator.key").read_bytes()
    assert main(["provision", "--sites", "2", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "coordinator" / "keys" / "coordinator.key").read_bytes() == before
    # a leftover site folder alone also counts as a kit
    os.rename(out / "coordinator", tmp_path / "moved")
    with pytest.raises(ConfigError):
        provision(out, sites=1)
    # --force regenerates keys and leaves state alone
    (out / "site-1" / "state").mkdir()
    (out / "site-1" / "state" / "ledger.json").write_text("{}")
    provision(out, sites=2, run_id="r2", force=True)
    assert (out / "coordinator" / "keys" / "coordinator.key").read_bytes() != before
    assert (out / "site-1" / "state" / "ledger.json").read_text() == "{}"
    assert verify_site_federation(load_site_config(out / "site-1" / "site.toml")).run_id == "r2"


def test_remote_host_and_bad_arguments(tmp_path):
    from secgan.commands.provision import provision

    written = provision(tmp_path / "r", sites=1, host="0.0.0.0", advertise="coord.example.org", port=7000)
    cfg = load_coordinator_config(written["coordinator"])
    assert cfg.allow_remote and cfg.bind == "tcp://0.0.0.0:7000" and cfg.endpoint == "tcp://coord.example.org:7000"
    site = load_site_config(written["site-1"])
    assert site.allow_remote and site.coordinator_endpoint == "tcp://coord.example.org:7000"
    for kwargs in (dict(sites=0), dict(sites=1, port=0), dict(sites=1, host="0.0.0.0"), dict(sites=1, run_id="a b"),
                   dict(sites=1, image_size=40)):
        with pytest.raises(ConfigError):
            provision(tmp_path / "bad", **kwargs)
        assert not (tmp_path / "bad").exists()  # nothing half-written


def test_manifest_is_signed_by_the_coordinator_key(tmp_path):
    from secgan.commands.provision import provision

    provision(tmp_path / "k", sites=2)
    c = tmp_path / "k" / "coordinator"
    pub = load_verify_key(c / "signing.pub")
    m = load_manifest(c / "manifest.json", coordinator_verify_key=pub)
    site_pub = load_verify_key(tmp_path / "k" / "site-1" / "signing.pub")
    assert public_raw(m.site("site-1").ed25519_public) == public_raw(site_pub)
    data = json.loads((c / "manifest.json").read_text())
    assert data["signature"]["key_id"] == key_id(pub)

"""Service configs: strict loading names the key; cross-field checks; relative paths; manifest checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from secgan.core.errors import ConfigError, CryptoError
from secgan.settings import SiteConfig, load_site_config, verify_site_federation

from coordinator.config import CoordinatorConfig, load_coordinator_config, verify_coordinator_federation

SITE_MIN = 'site_id = "site-1"\ndata_dir = "data"\n'


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def err(loader, path) -> str:
    with pytest.raises(ConfigError) as exc:
        loader(path)
    return str(exc.value)


def test_defaults_and_relative_paths(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    c = load_coordinator_config(write(sub, 'keys_dir = "k"\nstate_dir = "/abs/state"\n'))
    assert c.keys_dir == str((sub / "k").resolve()) and c.state_dir == "/abs/state"
    assert c.manifest == str((sub / "manifest.json").resolve())
    assert c.bind == "tcp://127.0.0.1:5555" and c.endpoint == "tcp://127.0.0.1:5555"
    s = load_site_config(write(sub, SITE_MIN + '[policy]\ntarget_epsilon = 3.0\n', "s.toml"))
    assert s.data_dir == str((sub / "data").resolve())
    assert s.coordinator_signing_key == str((sub / "coordinator-signing.pub").resolve())
    assert s.policy.target_epsilon == 3.0 and s.curve_key_name == "site-1"


@pytest.mark.parametrize(
    "text,key",
    [
        ("bogus = 1\n", "bogus"),
        ("port = \"5555\"\n", "port"),
        ("port = 70000\n", "port"),
        ("min_sites = 0\n", "min_sites"),
        ("round_deadline_s = 0\n", "round_deadline_s"),
        ("allow_remote = 1\n", "allow_remote"),
        ("aggregation = \"mean\"\n", "aggregation"),
        ("[train]\nlr_g = 2.0\n", "train.lr_g"),
        ("[train]\nsteps = true\n", "train.steps"),
        ("[image]\nsize = 8\n", "image.size"),
        ("[model]\nunknown = 1\n", "model.unknown"),
        ("[wire]\nmax_frames = 0\n", "wire.max_frames"),
        ("[tuning]\nsndhwm = 0\n", "tuning.sndhwm"),
    ],
)
def test_coordinator_errors_name_the_key(tmp_path, text, key):
    msg = err(load_coordinator_config, write(tmp_path, text))
    assert key in msg and str(tmp_path) in msg


@pytest.mark.parametrize(
    "text,key",
    [
        ('data_dir = "d"\n', "site_id"),  # missing
        (SITE_MIN + "seed = -1\n", "seed"),
        (SITE_MIN + "seed = 1.5\n", "seed"),
        (SITE_MIN + "extra = true\n", "extra"),
        (SITE_MIN + '[policy]\nmode = "lax"\n', "policy.mode"),
        (SITE_MIN + "[policy]\ntarget_epsilon = 0\n", "policy.target_epsilon"),
        (SITE_MIN + "[policy]\ndelta = 0.5\n", "policy.delta"),
        (SITE_MIN + '[policy]\nmode = "off"\n', "allow_off"),
        (SITE_MIN + "[train]\nlr_d = -1.0\n", "train.lr_d"),
        (SITE_MIN + '[train]\nloss = "wgan"\n', "train.loss"),
        ('site_id = "Site 1"\ndata_dir = "d"\n', "site_id"),
    ],
)
def test_site_errors_name_the_key(tmp_path, text, key):
    assert key in err(load_site_config, write(tmp_path, text))


def test_cross_field_checks(tmp_path):
    assert "allow_remote" in err(load_coordinator_config, write(tmp_path, 'host = "10.1.2.3"\n'))
    ok = load_coordinator_config(write(tmp_path, 'host = "10.1.2.3"\nallow_remote = true\n'))
    assert ok.endpoint == "tcp://10.1.2.3:5555"
    assert "advertise" in err(load_coordinator_config, write(tmp_path, 'host = "0.0.0.0"\nallow_remote = true\n'))
    c = load_coordinator_config(write(tmp_path, 'host = "0.0.0.0"\nallow_remote = true\nadvertise = "tcp://gpu-1:6000"\n'))
    assert c.endpoint == "tcp://gpu-1:6000" and c.bind == "tcp://0.0.0.0:5555"
    assert "bank_dir" in err(load_coordinator_config, write(tmp_path, 'condition_source = "bank"\n'))
    assert "min_sites" in err(load_coordinator_config, write(tmp_path, 'aggregation = "secure-sum"\nmin_sites = 2\n'))
    assert "heartbeat_timeout_s" in err(load_coordinator_config, write(tmp_path, "heartbeat_timeout_s = 0.5\n"))
    assert "run_id" in err(load_coordinator_config, write(tmp_path, 'run_id = "a b"\n'))
    assert "g_depth" in err(load_coordinator_config, write(tmp_path, "[image]\nsize = 16\n[model]\ng_depth = 5\n"))
    assert "allow_remote" in err(load_site_config, write(tmp_path, SITE_MIN + 'coordinator_endpoint = "tcp://10.0.0.1:5555"\n'))
    assert "coordinator_endpoint" in err(load_site_config, write(tmp_path, SITE_MIN + 'coordinator_endpoint = "ipc://x"\n'))
    assert "l1_weight" in err(load_site_config, write(tmp_path, SITE_MIN + "[train]\nl1_weight = 1.0\n"))
    assert "empty" in err(load_site_config, write(tmp_path, 'site_id = "site-1"\ndata_dir = ""\n'))


def test_missing_and_invalid_toml(tmp_path):
    assert "not found" in err(load_site_config, tmp_path / "none.toml")
    assert "TOML" in err(load_site_config, write(tmp_path, "site_id = \n"))


# --- start-up verification against a provisioned kit -------------------------------------------


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    from secgan.commands.provision import provision

    out = tmp_path_factory.mktemp("kit") / "fed"
    provision(out, sites=2, run_id="run-7")
    return out


def copy_kit(kit: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "fed"
    shutil.copytree(kit, dst)
    return dst


def test_verify_federation_happy_path(kit):
    m = verify_coordinator_federation(load_coordinator_config(kit / "coordinator" / "coordinator.toml"))
    assert [s.site_id for s in m.sites] == ["site-1", "site-2"] and m.run_id == "run-7"
    m2 = verify_site_federation(load_site_config(kit / "site-2" / "site.toml"))
    assert m2 == m or m2.coordinator.curve_public == m.coordinator.curve_public


def test_verify_refuses_foreign_or_mismatched_files(kit, tmp_path):
    fed = copy_kit(kit, tmp_path)
    ctoml = fed / "coordinator" / "coordinator.toml"
    s1 = fed / "site-1" / "site.toml"
    # quorum larger than the federation
    ctoml.write_text(ctoml.read_text().replace("min_sites = 2", "min_sites = 3"))
    with pytest.raises(ConfigError, match="min_sites"):
        verify_coordinator_federation(load_coordinator_config(ctoml))
    ctoml.write_text(ctoml.read_text().replace("min_sites = 3", "min_sites = 2").replace('run_id = "run-7"', 'run_id = "other"'))
    with pytest.raises(ConfigError, match="run_id"):
        verify_coordinator_federation(load_coordinator_config(ctoml))
    # site-1 pointing at site-2's keys
    shutil.copy(fed / "site-2" / "keys" / "site-2.key_secret", fed / "site-1" / "keys" / "site-1.key_secret")
    (fed / "site-1" / "keys" / "site-1.key").unlink()
    with pytest.raises(ConfigError, match="keys_dir"):
        verify_site_federation(load_site_config(s1))
    # a tampered manifest at the site
    s2 = fed / "site-2" / "site.toml"
    mpath = fed / "site-2" / "manifest.json"
    mpath.write_text(mpath.read_text().replace('"site-1"', '"site-9"'))
    with pytest.raises(CryptoError):
        verify_site_federation(load_site_config(s2))
    # a site pinned to another coordinator signing key
    mpath.write_text((kit / "site-2" / "manifest.json").read_text())
    shutil.copy(fed / "site-2" / "signing.pub", fed / "site-2" / "coordinator-signing.pub")
    with pytest.raises(CryptoError):
        verify_site_federation(load_site_config(s2))


def test_site_not_in_manifest(kit, tmp_path):
    fed = copy_kit(kit, tmp_path)
    s1 = fed / "site-1" / "site.toml"
    s1.write_text(s1.read_text().replace('site_id = "site-1"', 'site_id = "site-5"\nkey_name = "site-1"'))
    with pytest.raises(ConfigError, match="site-5"):
        verify_site_federation(load_site_config(s1))


def test_dataclasses_are_frozen():
    c = CoordinatorConfig()
    with pytest.raises(Exception):
        c.port = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        SiteConfig(site_id="site-1", data_dir="d", coordinator_endpoint="tcp://example.org:1")

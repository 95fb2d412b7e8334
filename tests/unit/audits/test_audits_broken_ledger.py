"""An audit never signs a broken ledger's epsilon as fine; `secgan ledger show` warns and fails on one.

The broken state is the one two writers leave: the release log holds more releases (and a larger
epsilon) than the ledger counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from secgan.cli import main

SMALL_MODEL = {"g_width": 8, "d_width": 8, "g_depth": 2, "d_layers": 2, "noise_dim": 4}


def _site(root: Path, *, assumption: bool = False) -> tuple[Path, float]:
    from secgan.keys.signing import generate_signing_key, write_signing_key
    from secgan.data.dataset import load_site
    from secgan.data.phantom import write_phantom
    from secgan.privacy.ledger import SHARD_AMPLIFICATION, LedgerParams, PrivacyLedger
    from secgan.privacy.release_log import ReleaseLog
    from secgan.gan.synthetic import write_synthetic

    (site_dir,) = write_phantom(root / "data", sites=1, patients=16, seed=5, size=32, slices=8)
    write_signing_key(root / "signing.pem", generate_signing_key())
    (root / "site.toml").write_text(
        'site_id = "site-1"\ndata_dir = "data/site-1"\nstate_dir = "state"\nsigning_key = "signing.pem"\n'
        "[image]\nsize = 32\n[model]\n" + "\n".join(f"{k} = {v}" for k, v in SMALL_MODEL.items()) + "\n"
        + ('[policy]\nmode = "sanitize"\nassume_shard_amplification = true\ntarget_epsilon = 50.0\n' if assumption
           else '[policy]\nmode = "dpsgd"\ntarget_epsilon = 50.0\n')
    )
    state = root / "state"
    params = LedgerParams(mode="sanitize" if assumption else "dpsgd", delta=1e-5, target_epsilon=50.0, clip_norm=1.0,
                          dataset_fingerprint="f" * 64, policy_hash="p" * 64,
                          assumptions=(SHARD_AMPLIFICATION,) if assumption else ())
    ledger = PrivacyLedger.open(state, params=params)
    rlog = ReleaseLog(state)
    ledger.attach_release_log(rlog)
    for i in range(3):
        eps = ledger.reserve_step(noise_multiplier=1.0, sample_rate=0.25)
        rlog.append(step=i, round=i, run_id="r", tensors={"grad": torch.zeros(2, 4, 32, 32)}, epsilon_after=eps)
    im, co, _, _ = load_site(site_dir, split="train", image_size=32).all_slices()
    pick = np.random.default_rng(0).choice(len(im), 16)
    write_synthetic(root / "syn", im[pick], co[pick], previews=False, nifti=False)
    return state, ledger.epsilon


def _break(state: Path) -> float:
    """A second writer's release: logged, never counted by this ledger."""
    from secgan.privacy.release_log import ReleaseLog

    ReleaseLog(state).append(step=9, round=9, run_id="r", tensors={"grad": torch.ones(2, 4, 32, 32)}, epsilon_after=9.5)
    return 9.5


def test_ledger_show_warns_and_fails_on_a_broken_ledger(tmp_path, capsys):
    state, _ = _site(tmp_path)
    assert main(["ledger", "show", "--site-dir", str(state)]) == 0
    capsys.readouterr()
    _break(state)
    assert main(["ledger", "show", "--site-dir", str(state)]) == 1
    out = capsys.readouterr()
    assert "does NOT verify" in out.out and "[UNVERIFIED]" in out.out
    assert "ledger counts 3 releases but the log holds 4" in out.err and "ledger recover" in out.err
    assert main(["ledger", "show", "--site-dir", str(state), "--json"]) == 1
    shown = json.loads(capsys.readouterr().out)
    assert shown["verification"]["ok"] is False and shown["verification"]["problems"]


@pytest.mark.slow
def test_audit_refuses_a_broken_ledger_by_default_and_marks_it_critical_on_request(tmp_path, capsys):
    state, _ = _site(tmp_path)
    logged_eps = _break(state)
    base = ["audit", "run", "--site-config", str(tmp_path / "site.toml"), "--synthetic", str(tmp_path / "syn"),
            "--seed", "1"]
    assert main(base + ["--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "fails verification" in err and "ledger recover" in err and "--mark-broken-ledger" in err
    assert not (tmp_path / "refused").exists()  # nothing signed

    assert main(base + ["--out", str(tmp_path / "marked"), "--mark-broken-ledger"]) == 0
    r = json.loads((tmp_path / "marked" / "report.json").read_text())
    assert r["verdict"] == "Critical"
    assert r["epsilon"]["ledger_verification"]["ok"] is False
    assert r["epsilon"]["claimed"] >= logged_eps  # never the broken ledger's lower figure
    crit = [f for f in r["findings"] if f["subject"] == "privacy ledger"]
    assert crit and crit[0]["level"] == "Critical" and r["findings"][0]["level"] == "Critical"
    assert any("fails verification" in s for s in r["summary"])
    html = (tmp_path / "marked" / "report.html").read_text()
    assert "Privacy ledger FAILS verification" in html and "UNVERIFIED" in html
    assert main(["audit", "verify", str(tmp_path / "marked"), "--public-key", str(_pub(tmp_path))]) == 0


def _pub(root: Path) -> Path:
    from secgan.keys.signing import load_signing_key, write_verify_key

    pub = root / "site.pub"
    write_verify_key(pub, load_signing_key(root / "signing.pem"))
    return pub


@pytest.mark.slow
def test_audit_names_an_accounting_assumption(tmp_path):
    _site(tmp_path, assumption=True)
    assert main(["audit", "run", "--site-config", str(tmp_path / "site.toml"), "--synthetic", str(tmp_path / "syn"),
                 "--seed", "1", "--out", str(tmp_path / "r")]) == 0
    r = json.loads((tmp_path / "r" / "report.json").read_text())
    assert r["epsilon"]["assumptions"] == ["sanitize_shard_amplification"]
    assert r["epsilon"]["ledger_verification"]["ok"] is True
    f = [f for f in r["findings"] if f["subject"] == "privacy accounting"]
    assert f and f[0]["level"] == "Amber" and "sanitize_shard_amplification" in f[0]["reason"]
    assert r["verdict"] != "Green"
    assert "sanitize_shard_amplification" in (tmp_path / "r" / "report.html").read_text()

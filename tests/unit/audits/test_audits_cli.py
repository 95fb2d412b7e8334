"""`secgan audit run / verify / merge` end to end on a phantom site folder (real NIfTI, real keys)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from secgan.cli import build_parser, main

SMALL_MODEL = {"g_width": 8, "d_width": 8, "g_depth": 2, "d_layers": 2, "noise_dim": 4}


def _toml_table(d: dict) -> str:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items())


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A site with data, keys, ledger, discriminator state, a generator checkpoint and a
    'synthetic' release made of its own training slices (a memorising generator)."""
    import torch

    from secgan.keys.curve import generate_curve_keypair
    from secgan.keys.manifest import manifest_dict, write_manifest
    from secgan.keys.signing import generate_signing_key, write_signing_key, write_verify_key
    from secgan.gan.checkpoint import save_checkpoint, save_module_state
    from secgan.core.config import to_dict
    from secgan.data.dataset import load_site
    from secgan.data.phantom import write_phantom
    from secgan.gan.models import build_discriminator, build_generator
    from secgan.privacy.ledger import LedgerParams, PrivacyLedger
    from secgan.gan.config import ModelConfig
    from secgan.run.config import RunConfig
    from secgan.core.spec import ImageSpec
    from secgan.gan.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("audit-kit")
    (site_dir,) = write_phantom(root / "data", sites=1, patients=16, seed=11, size=32, slices=8)
    site_key, coord_key, other_key = (generate_signing_key() for _ in range(3))
    write_signing_key(root / "signing.pem", site_key)
    write_verify_key(root / "site.pub", site_key)
    write_verify_key(root / "other.pub", other_key)
    write_verify_key(root / "coordinator.pub", coord_key)
    manifest = manifest_dict(
        federation="fed", coordinator_curve_public=generate_curve_keypair()[0], coordinator_verify_key=coord_key,
        endpoint="tcp://127.0.0.1:5555", sites=[("site-1", generate_curve_keypair()[0], site_key)], created="now",
    )
    write_manifest(root / "manifest.json", manifest, coord_key)
    (root / "site.toml").write_text(
        'site_id = "site-1"\ndata_dir = "data/site-1"\nstate_dir = "state"\nsigning_key = "signing.pem"\n'
        f"[image]\nsize = 32\n[model]\n{_toml_table(SMALL_MODEL)}\n"
        '[policy]\nmode = "dpsgd"\ntarget_epsilon = 5.0\n'
    )
    model, image = ModelConfig(**SMALL_MODEL), ImageSpec(size=32)
    state = root / "state"
    state.mkdir()
    ledger = PrivacyLedger.open(state, params=LedgerParams(mode="dpsgd", delta=1e-5, target_epsilon=5.0, clip_norm=1.0,
                                                           dataset_fingerprint="f" * 64, policy_hash="p" * 64))
    for _ in range(3):
        ledger.reserve_step(noise_multiplier=1.0, sample_rate=0.1)
    with torch.random.fork_rng():  # model init draws from torch's global RNG: keep it local to this fixture
        torch.manual_seed(0)  # hygiene-ok: test-only, scoped by fork_rng
        D = build_discriminator(model, image)
        G = build_generator(model, image)
    save_module_state(state / "discriminator.safetensors", D, None, {})
    ck = save_checkpoint(root / "g.safetensors", generator=G, optimizer=torch.optim.Adam(G.parameters()), step=1,
                         rng_state={}, meta={}, config=to_dict(RunConfig(image=image, model=model)))
    im, co, _, _ = load_site(site_dir, split="train", image_size=32).all_slices()
    pick = np.random.default_rng(0).choice(len(im), 48)
    write_synthetic(root / "syn", im[pick], co[pick], previews=False, nifti=False)
    out = root / "report"
    rc = main(["audit", "run", "--site-config", str(root / "site.toml"), "--synthetic", str(root / "syn"),
               "--out", str(out), "--generator", str(ck), "--seed", "1", "--annex"])
    return {"root": root, "out": out, "rc": rc, "epsilon": ledger.epsilon, "checkpoint": ck}


def _verify(report: Path, *extra: str) -> int:
    return main(["audit", "verify", str(report), *extra])


@pytest.mark.slow
def test_run_writes_a_signed_red_report_with_every_attack(kit: dict) -> None:
    assert kit["rc"] == 0
    r = json.loads((kit["out"] / "report.json").read_text())
    assert r["verdict"] in ("Red", "Critical")
    assert r["positive_class"] == "member"
    assert {a["name"] for a in r["attacks"] if a["status"] == "run"} >= {"gan_leaks", "gan_leaks_cal", "domias", "discriminator", "projection"}
    assert r["epsilon"]["claimed"] == pytest.approx(kit["epsilon"])
    assert r["epsilon"]["mode"] == "dpsgd" and r["epsilon"]["ledger_found"]
    prov = r["provenance"]
    assert len(prov["data"]["salt"]) == 32 and len(prov["data"]["members_fingerprint"]) == 64
    assert prov["data"]["members_fingerprint"] != prov["data"]["nonmembers_fingerprint"]
    assert "dataset_fingerprint" not in prov["ledger"] and "dataset_fingerprint_salted" in prov["ledger"]
    assert prov["rubric"]["version"] == "rubric-v3" and prov["code"]["secgan_version"]
    assert set(r["memorisation"]) == {"pixels", "embedding"}
    html = (kit["out"] / "report.html").read_text()
    assert "Verdict: " + r["verdict"] in html and "data:image/png;base64," in html
    assert "Site1-P" not in html and "Site1-P" not in (kit["out"] / "report.json").read_text()


@pytest.mark.slow
def test_annex_is_separate_and_private(kit: dict) -> None:
    annex = kit["out"] / "annex.html"
    assert annex.is_file() and stat.S_IMODE(annex.stat().st_mode) == 0o600
    html = (kit["out"] / "report.html").read_text()
    assert "nearest train" not in html and "annex" not in html.lower()
    # the main report holds only plots: far smaller than the annex with its image strips
    assert annex.stat().st_size > 0


@pytest.mark.slow
def test_verify_accepts_untouched_report(kit: dict, capsys) -> None:
    assert _verify(kit["out"] / "report.json", "--public-key", str(kit["root"] / "site.pub")) == 0
    assert "matches the signed SHA-256" in capsys.readouterr().out
    assert _verify(kit["out"], "--manifest", str(kit["root"] / "manifest.json"),
                   "--coordinator-key", str(kit["root"] / "coordinator.pub")) == 0


@pytest.mark.slow
def test_tampered_json_html_and_unknown_key_fail(kit: dict, tmp_path: Path, capsys) -> None:
    pub = str(kit["root"] / "site.pub")
    bad_json = tmp_path / "json"
    shutil.copytree(kit["out"], bad_json)
    r = json.loads((bad_json / "report.json").read_text())
    r["verdict"] = "Green"
    (bad_json / "report.json").write_text(json.dumps(r))
    assert _verify(bad_json / "report.json", "--public-key", pub) != 0
    assert "signature verification failed" in capsys.readouterr().err

    bad_html = tmp_path / "html"
    shutil.copytree(kit["out"], bad_html)
    p = bad_html / "report.html"
    p.write_text(p.read_text().replace("Verdict: ", "Verdict: Green (was) "))
    assert _verify(bad_html / "report.json", "--public-key", pub) != 0
    assert "report.html" in capsys.readouterr().err

    assert _verify(kit["out"] / "report.json", "--public-key", str(kit["root"] / "other.pub")) != 0
    assert "signature verification failed" in capsys.readouterr().err

    # a manifest signed by someone else is refused before any report is trusted
    assert _verify(kit["out"], "--manifest", str(kit["root"] / "manifest.json"),
                   "--coordinator-key", str(kit["root"] / "other.pub")) != 0


@pytest.mark.slow
def test_merge_writes_federation_summary_and_refuses_tampering(kit: dict, tmp_path: Path) -> None:
    m = ["--manifest", str(kit["root"] / "manifest.json"), "--coordinator-key", str(kit["root"] / "coordinator.pub")]
    assert main(["audit", "merge", str(kit["out"] / "report.json"), "--out", str(tmp_path / "sum"), *m]) == 0
    s = json.loads((tmp_path / "sum" / "summary.json").read_text())
    assert s["verdict"] in ("Red", "Critical") and s["manifest"] is True
    (row,) = s["sites"]
    assert row["site_id"] == "site-1" and row["epsilon_claimed"] == pytest.approx(kit["epsilon"])
    assert "verified" in row["signature"]
    assert "Federation verdict" in (tmp_path / "sum" / "summary.html").read_text()

    bad = tmp_path / "bad"
    shutil.copytree(kit["out"], bad)
    r = json.loads((bad / "report.json").read_text())
    r["verdict"] = "Green"
    (bad / "report.json").write_text(json.dumps(r))
    assert main(["audit", "merge", str(bad / "report.json"), "--out", str(tmp_path / "sum2"), *m]) != 0
    assert not (tmp_path / "sum2" / "summary.json").exists()


@pytest.mark.slow
def test_clear_errors_for_missing_and_mismatched_inputs(kit: dict, tmp_path: Path, capsys) -> None:
    from secgan.gan.synthetic import write_synthetic

    root = kit["root"]
    base = ["audit", "run", "--site-config", str(root / "site.toml"), "--out", str(tmp_path / "r")]
    assert main(base + ["--synthetic", str(tmp_path / "nowhere")]) == 2
    assert "synthetic data file not found" in capsys.readouterr().err
    small = np.full((4, 4, 16, 16), -1.0, np.float32)
    write_synthetic(tmp_path / "small", small, np.zeros_like(small), previews=False, nifti=False)
    assert main(base + ["--synthetic", str(tmp_path / "small")]) == 2
    assert "16x16" in capsys.readouterr().err
    assert main(["audit", "run", "--site-config", str(tmp_path / "none.toml"), "--synthetic", str(root / "syn"),
                 "--out", str(tmp_path / "r")]) == 2
    assert "none.toml" in capsys.readouterr().err
    assert _verify(tmp_path / "missing" / "report.json", "--public-key", str(root / "site.pub")) == 2
    assert "report file not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_short_form_and_subcommands_parse() -> None:
    parser = build_parser()
    a = parser.parse_args(["audit", "--site-config", "s.toml", "--synthetic", "d", "--out", "o"])
    assert a.audit_command is None and str(a.site_config) == "s.toml" and str(a.out) == "o"
    b = parser.parse_args(["audit", "run", "--site-config", "s.toml", "--synthetic", "d", "--out", "o", "--annex"])
    assert b.audit_command == "run" and b.annex is True and b.seed == 0
    c = parser.parse_args(["audit", "verify", "r.json", "--public-key", "k.pub"])
    assert c.audit_command == "verify" and str(c.public_key) == "k.pub"
    d = parser.parse_args(["audit", "merge", "a.json", "b.json", "--out", "x"])
    assert d.audit_command == "merge" and len(d.reports) == 2


@pytest.mark.slow
def test_rerun_needs_force_and_fail_on_red_exits_4(kit: dict, tmp_path: Path, capsys) -> None:
    root = kit["root"]
    shutil.copytree(kit["out"], tmp_path / "again")
    base = ["audit", "run", "--site-config", str(root / "site.toml"), "--synthetic", str(root / "syn"),
            "--out", str(tmp_path / "again"), "--seed", "1"]
    signed = (tmp_path / "again" / "report.json").read_bytes()
    assert main(base) == 2
    assert "already holds a report" in capsys.readouterr().err
    assert (tmp_path / "again" / "report.json").read_bytes() == signed
    assert main(base + ["--force", "--fail-on", "red"]) == 4  # this fixture's report is Red or Critical
    assert not (tmp_path / "again" / "annex.html").exists()  # the previous run's annex is not left beside it
    assert _verify(tmp_path / "again", "--public-key", str(root / "site.pub")) == 0


@pytest.mark.slow
def test_generator_that_did_not_draw_the_folder_is_refused(kit: dict, tmp_path: Path, capsys) -> None:
    from secgan.gan.synthetic import read_synthetic, write_synthetic

    root = kit["root"]
    im, co = read_synthetic(root / "syn")
    other = tmp_path / "other-g.safetensors"
    other.write_bytes(b"another generator")
    write_synthetic(tmp_path / "syn", im, co, previews=False, nifti=False, generator_checkpoint=other)
    rc = main(["audit", "run", "--site-config", str(root / "site.toml"), "--synthetic", str(tmp_path / "syn"),
               "--out", str(tmp_path / "r"), "--generator", str(kit["checkpoint"])])
    assert rc == 2
    assert "drawn from a generator with SHA-256" in capsys.readouterr().err
    assert not (tmp_path / "r" / "report.json").exists()
    # the kit's folder records no generator: the report says the pairing cannot be confirmed
    r = json.loads((kit["out"] / "report.json").read_text())
    assert any(f["area"] == "provenance" and f["level"] == "Amber" for f in r["findings"])
    assert r["provenance"]["data"]["generator_matches_synthetic"] is None

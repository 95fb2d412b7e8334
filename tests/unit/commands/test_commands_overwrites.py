"""No silent overwrite: `secgan sample` and `secgan audit run` refuse a folder holding a previous
output unless --force; a forced sample leaves no stale file of the previous one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from secgan.core import exitcodes
from secgan.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from secgan.gan.checkpoint import save_checkpoint
    from secgan.core.config import to_dict
    from secgan.gan.models import build_generator
    from secgan.gan.config import ModelConfig
    from secgan.run.config import RunConfig
    from secgan.core.spec import ImageSpec

    image, model = ImageSpec(size=16), ModelConfig(g_width=8, g_depth=2, d_width=8, d_layers=2, noise_dim=4)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # hygiene-ok: test-only model init, scoped by fork_rng
        G = build_generator(model, image)
    path = tmp_path_factory.mktemp("ck") / "g.safetensors"
    return save_checkpoint(path, generator=G, optimizer=torch.optim.Adam(G.parameters()), step=1, rng_state={},
                           meta={}, config=to_dict(RunConfig(image=image, model=model)))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_sample_refuses_a_previous_sample_and_force_leaves_nothing_stale(checkpoint, tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "20", "--out", str(out)]) == 0
    first = _files(out)
    assert any(f.startswith("nifti/syn-0001/") for f in first) and any(f.startswith("previews/") for f in first)
    capsys.readouterr()

    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "4", "--out", str(out), "--no-previews"]) \
        == exitcodes.USAGE
    err = capsys.readouterr().err
    assert "--force" in err and str(out) in err and len(err.strip().splitlines()) == 1
    assert _files(out) == first  # untouched

    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "4", "--out", str(out), "--no-previews",
                 "--force"]) == 0
    second = _files(out)
    assert not any(f.startswith(("nifti/syn-0001", "previews/")) for f in second), second
    assert "synthetic.safetensors" in second and "nifti/syn-0000/syn-0000_seg.nii.gz" in second
    from secgan.gan.synthetic import read_synthetic

    assert read_synthetic(out)[0].shape[0] == 4


def test_sample_force_never_deletes_what_it_did_not_write(checkpoint, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "2", "--out", str(out), "--force"]) \
        == exitcodes.USAGE
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me" and _files(out) == {"notes.txt"}


def test_audit_run_refuses_to_replace_a_signed_report(tmp_path, capsys):
    site = tmp_path / "site.toml"
    site.write_text('site_id = "site-1"\ndata_dir = "data"\n')
    (tmp_path / "syn").mkdir()
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text('{"signed": "previously"}')
    rc = main(["audit", "run", "--site-config", str(site), "--synthetic", str(tmp_path / "syn"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == exitcodes.USAGE and "already holds a report" in err and "--force" in err
    assert (out / "report.json").read_text() == '{"signed": "previously"}'
    # with --force the refusal is gone (this fake site then fails for its own reasons, later) and
    # the previous report is still there: it is replaced only by a report that was written
    rc = main(["audit", "run", "--site-config", str(site), "--synthetic", str(tmp_path / "syn"), "--out", str(out),
               "--force"])
    assert rc == exitcodes.USAGE and "already holds a report" not in capsys.readouterr().err
    assert (out / "report.json").read_text() == '{"signed": "previously"}'


@pytest.mark.parametrize("verdict,fail_on,code", [
    ("Green", None, 0), ("Critical", None, 0), ("Amber", "red", 0), ("Red", "red", 4), ("Critical", "red", 4),
    ("Amber", "amber", 4), ("Red", "critical", 0), ("Inconclusive", "critical", 4),
])
def test_fail_on_maps_the_verdict_to_the_exit_code(verdict, fail_on, code):
    from audits.cli import verdict_exit_code

    assert verdict_exit_code(verdict, fail_on) == code
    assert exitcodes.AUDIT_FLAGGED == 4

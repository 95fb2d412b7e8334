"""The tiny sweep end to end through the CLI, then its resume behaviour."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from secgan.cli import main

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sweep-tiny.toml"


def _config(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text()
    text, n = re.subn(r'^data = .*$', 'data = "phantom"', text, flags=re.M)
    assert n == 1
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


@pytest.mark.timeout(600)
def test_tiny_sweep_runs_and_resumes(tmp_path: Path, capsys):
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    # every job (the eight GAN runs, then the U-Nets) in this process, each after the jobs it needs;
    # the same jobs in `secgan sweep --job ID` processes (--jobs N, a Slurm job list, Dask) give the
    # same table byte for byte (test_eval_sweep_jobs.py, on a smaller sweep: about 30 interpreter
    # start-ups here cost minutes)
    assert main(["sweep", "--config", str(cfg), "--out", str(out)]) == 0
    assert (tmp_path / "phantom" / "site-2" / "split.json").is_file()  # generated from [phantom]
    records = {p.stem: json.loads(p.read_text()) for p in (out / "jobs").glob("*.json")}
    gan_jobs = sorted(n for n in records if n.startswith("gan."))
    assert len(gan_jobs) == 8 and "gan.asyndgan-dp-eps3-run1" in gan_jobs
    assert all(r.get("result") is not None for r in records.values())

    rows = json.loads((out / "results.json").read_text())
    settings = [r["setting"] for r in rows]
    assert settings == [
        "real-all", "real-subset-1", "real-subset-2", "syn-all", "asyndgan", "public-only", "asyndgan-dp-eps3",
        "real-subset-1+synthetic", "real-subset-2+synthetic",
        "missing-flair-site-1", "missing-flair-site-1-completed",
    ]
    for r in rows:
        assert {"setting", "epsilon", "dice_mean", "dice_std", "hd95_mean"} <= set(r)
        assert 0.0 <= r["dice_mean"] <= 1.0
    by = {r["setting"]: r for r in rows}
    dp = by["asyndgan-dp-eps3"]
    assert dp["epsilon"] == 3.0
    assert 0.0 < dp["epsilon_spent"] <= 3.0  # the sites' ledgers stayed within the target
    assert by["asyndgan"]["epsilon"] is None and by["asyndgan"]["epsilon_spent"] is None
    for s in ("syn-all", "asyndgan", "public-only", "asyndgan-dp-eps3"):
        assert 0.0 <= by[s]["precision"] <= 1.0 and by[s]["w1_flair"] >= 0.0
        # gan.runs = 2: two GANs per setting, each scored with the one U-Net seed
        assert by[s]["gan_runs"] == 2 and by[s]["seeds"] == 2 and len(by[s]["dice_per_gan"]) == 2
        assert by[s]["dice_mean"] == pytest.approx(sum(by[s]["dice_per_gan"]) / 2, abs=1e-5)
        second = json.loads((out / "gans" / f"{s}-run1" / "run.json").read_text())
        assert second["run_id"] == f"{s}-run1" and second["steps_done"] == 4
    with (out / "results.csv").open() as fh:
        assert [r["setting"] for r in csv.DictReader(fh)] == settings
    assert (out / "dice_vs_epsilon.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert "asyndgan-dp-eps3" in page and "data:image/png;base64," in page
    # the DP run really ran DP-SGD at each site, with a ledger
    dp_run = json.loads((out / "gans" / "asyndgan-dp-eps3" / "run.json").read_text())
    assert dp_run["privacy_mode"] == "dpsgd" and dp_run["steps_done"] == 4
    assert any((out / "gans" / "asyndgan-dp-eps3" / "sites").rglob("ledger.json"))
    # public-only: G pretrained on the public cohort alone (generated beside the data), privacy off,
    # one pretraining per GAN seed; the DP runs started from the pretraining of their own seed
    assert (tmp_path / "phantom-public" / "site-1" / "split.json").is_file()
    assert all(c.name.startswith("Public1-") for c in (tmp_path / "phantom-public" / "site-1").iterdir() if c.is_dir())
    for run, folder in enumerate(("public-only", "public-only-run1")):
        pub = json.loads((out / "gans" / folder / "run.json").read_text())
        assert pub["privacy_mode"] == "off" and list(pub["sites"]) == ["site-1"]
        info = json.loads((out / "gans" / folder / "pretrain.json").read_text())
        assert info["trained_on"]["public_cohort"] == "site-1" and info["clip_norm"]["recommended"] > 0
        assert info["train"]["seed"] == run  # gan.seed + run
        dp_cfg = json.loads((out / "gans" / ("asyndgan-dp-eps3" + ("-run1" if run else "")) / "sweep-run-config.json").read_text())
        assert Path(dp_cfg["train"]["init_from"]) == (out / "gans" / folder).resolve()
        assert dp_cfg["privacy"]["freeze_d_stages"] == 1
    assert json.loads((out / "gans" / "asyndgan" / "sweep-run-config.json").read_text())["train"]["init_from"] is None
    assert "vs public-only" in page  # the floor target: every DP row above the public-only row
    # Syn-All is one pooled site
    assert list(json.loads((out / "gans" / "syn-all" / "run.json").read_text())["sites"]) == ["site-1"]

    # resume: a second run recomputes nothing ...
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "settings").iterdir()}
    capsys.readouterr()
    assert main(["sweep", "--config", str(cfg), "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "settings").iterdir()} == stamps
    # ... and after losing one setting and a GAN run cut off after its checkpoint, only those are redone
    (out / "settings" / "real-subset-1.json").unlink()
    (out / "settings" / "asyndgan.json").unlink()
    (out / "gans" / "asyndgan" / "run.json").unlink()
    assert main(["sweep", "--config", str(cfg), "--out", str(out)]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "settings").iterdir()}
    changed = {n for n in after if after[n] != stamps.get(n)}
    assert changed == {"real-subset-1.json", "asyndgan.json"}
    resumed = json.loads((out / "gans" / "asyndgan" / "run.json").read_text())
    assert resumed["started_at_step"] == 4 and resumed["steps_done"] == 4
    rows2 = {r["setting"]: r for r in json.loads((out / "results.json").read_text())}
    # same seeds, same data: the recomputed real-subset-1 is identical
    assert rows2["real-subset-1"]["dice_mean"] == pytest.approx(by["real-subset-1"]["dice_mean"], abs=1e-9)

    # a changed configuration is never mixed with old results: a new U-Net setting redoes every
    # setting (the GANs, whose configuration is unchanged, are reused) ...
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "settings").iterdir()}
    gan_stamp = (out / "gans" / "asyndgan" / "run.json").stat().st_mtime_ns
    changed_cfg = tmp_path / "sweep-lr.toml"
    changed_cfg.write_text(cfg.read_text().replace("batch_size = 16", "batch_size = 16\nlr = 0.001", 1))
    capsys.readouterr()
    assert main(["sweep", "--config", str(changed_cfg), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "real-all: the configuration it depends on changed since it ran; running it again" in said
    after = {p.name: p.stat().st_mtime_ns for p in (out / "settings").iterdir()}
    assert all(after[n] != stamps[n] for n in stamps)
    assert (out / "gans" / "asyndgan" / "run.json").stat().st_mtime_ns == gan_stamp
    # ... and a GAN folder trained with other GAN settings is refused, before any work, naming the key
    other_gan = tmp_path / "sweep-steps.toml"
    other_gan.write_text(changed_cfg.read_text().replace("steps = 4", "steps = 5", 1))
    after_lr = dict(after)
    assert main(["sweep", "--config", str(other_gan), "--out", str(out), "--jobs", "2"]) == 2
    err = capsys.readouterr().err
    assert "trained with another configuration (train.steps 4 -> 5" in err and "new --out folder" in err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "settings").iterdir()} == after_lr


def test_sweep_refuses_bad_parallel_options(tmp_path: Path, capsys):
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(cfg), "--out", str(out), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
    assert main(["sweep", "--config", str(cfg), "--out", str(out), "--train-gans", "asyndgan:0,nonsense:3"]) == 2
    err = capsys.readouterr().err
    assert "unknown GAN run(s) nonsense:3" in err and "asyndgan:1" in err
    assert not (out / "gans" / "asyndgan").exists()  # nothing trained when the list is refused


def test_a_validation_sweep_with_a_lever_row_never_reads_the_test_patients(tmp_path: Path):
    """score_on = "validation": every GAN and U-Net works on held-out training patients; the lever row
    trains with its own policy."""
    text = _config(tmp_path).read_text()
    text = text.replace("augment_subsets = true", 'augment_subsets = false\nsyn_all = false\nscore_on = "validation"\n'
                                                   "validation_fraction = 0.25")
    text = text.replace("runs = 2 ", "runs = 1 ").replace("[missing_modality]", "[missing_modality]\nenabled = false")
    text += '\n[[variants]]\nname = "clip2"\nepsilons = [3.0]\nprivacy = { clip_norm = 2.0 }\n'
    cfg = tmp_path / "sweep-val.toml"
    cfg.write_text(text)
    out = tmp_path / "out-val"
    assert main(["sweep", "--config", str(cfg), "--out", str(out)]) == 0
    rows = {r["setting"]: r for r in json.loads((out / "results.json").read_text())}
    assert list(rows) == ["real-all", "real-subset-1", "real-subset-2", "asyndgan", "public-only", "asyndgan-dp-eps3",
                          "lever-clip2-eps3"]
    test_ids = {c for k in (1, 2) for c in json.loads((tmp_path / "phantom" / f"site-{k}" / "split.json").read_text())["test"]}
    val = tmp_path / "phantom-validation"
    val_ids = {c for k in (1, 2) for c in json.loads((val / f"site-{k}" / "split.json").read_text())["test"]}
    assert val_ids and not val_ids & test_ids
    assert all(r["test_patients"] == len(val_ids) for r in rows.values())  # scored on the validation patients
    assert (tmp_path / "phantom-public" / "site-1" / "split.json").is_file()  # one public cohort, beside the data
    for gan in ("asyndgan", "asyndgan-dp-eps3", "lever-clip2-eps3"):
        run = json.loads((out / "gans" / gan / "sweep-run-config.json").read_text())
        assert all(str(val) in d for d in run["data"]["site_dirs"])  # trained on the copy
    lever = json.loads((out / "gans" / "lever-clip2-eps3" / "sweep-run-config.json").read_text())["privacy"]
    assert lever["clip_norm"] == 2.0 and lever["target_epsilon"] == 3.0
    assert "SCORED ON VALIDATION PATIENTS" in (out / "report.html").read_text()

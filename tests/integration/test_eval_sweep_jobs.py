"""The sweep's jobs run four ways (in this process, as a Slurm array would run the job list, on a
Dask local cluster of two worker processes, in up to two ``secgan sweep --job ID`` processes of the
local pool) give byte-identical tables; a killed worker's claim is taken over after its lease; a job
whose inputs changed runs again."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from secgan.cli import main
from secgan.evaluation.sweep_claims import is_stale, read_claim
from tests.integration.net_helpers import REPO, Proc, child_env, wait_until

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "sweep-tiny.toml"
TABLE = ("results.csv", "results.json", "dice_vs_epsilon.png")


def _config(tmp_path: Path, *, epochs: int = 1) -> Path:
    """The tiny sweep cut to one GAN a setting, one U-Net seed: real-all, two real subsets, AsynDGAN,
    public-only and one DP row that starts from the public pretraining (three job stages)."""
    text = EXAMPLE.read_text()
    text, n = re.subn(r"^data = .*$", 'data = "phantom"', text, flags=re.M)
    assert n == 1
    for old, new in (("augment_subsets = true", "augment_subsets = false\nsyn_all = false"),
                     ("quality = true", "quality = false"), ("runs = 2 ", "runs = 1 "),
                     ("[missing_modality]", "[missing_modality]\nenabled = false"),
                     ("epochs = 1", f"epochs = {epochs}")):
        assert old in text
        text = text.replace(old, new, 1)
    # DP noise seeded from each site's generator_seed: by default it comes from the OS's entropy, and
    # then a DP row differs from run to run whichever engine runs it
    text += "\n[privacy.policy]\nreproducible_noise = true\n"
    path = tmp_path / f"sweep-e{epochs}.toml"
    path.write_text(text)
    return path


def _records(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "jobs").glob("*.json")}


def _page_without_wall_time(out: Path) -> str:
    return re.sub(r"Wall time (\d+\.\d min|unknown)\.", "", (out / "report.html").read_text())


def test_a_sweep_run_four_ways_gives_the_same_table(tmp_path: Path, capsys):
    cfg = _config(tmp_path)
    base = ["sweep", "--config", str(cfg)]

    # (a) the default: every job one after another in this process
    local = tmp_path / "local"
    assert main([*base, "--out", str(local)]) == 0
    jobs = sorted(p.stem for p in (local / "jobs").glob("*.json"))
    assert jobs == ["gan.asyndgan", "gan.asyndgan-dp-eps3", "gan.public-only", "unet.asyndgan-dp-eps3.run0.seed0",
                    "unet.asyndgan.run0.seed0", "unet.public-only.run0.seed0", "unet.real-all.seed0",
                    "unet.real-subset-1.seed0", "unet.real-subset-2.seed0"]

    # (b) the job list, line by line in a fresh shell each, as a Slurm array runs it, stage by stage
    array = tmp_path / "array"
    listing = tmp_path / "jobs.txt"
    assert main([*base, "--out", str(array), "--jobs-out", str(listing)]) == 0
    assert "stage 1: lines 1-5; stage 2: lines 6-8; stage 3: lines 9-9" in capsys.readouterr().out
    lines = listing.read_text().splitlines()
    assert len(lines) == len(jobs)
    stages = [int(line.rsplit("# stage ", 1)[1]) for line in lines]
    assert stages == sorted(stages)
    # the DP run needs the public pretraining: stage 2; its U-Net: stage 3
    assert "--job gan.asyndgan-dp-eps3 " in lines[5] and "--job unet.asyndgan-dp-eps3.run0.seed0 " in lines[8]
    for n in range(1, len(lines) + 1):
        done = subprocess.run(["sh", "-c", f"sed -n {n}p {listing} | sh"], cwd=tmp_path, env=child_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    # a line run again finds its job done
    again = subprocess.run(["sh", "-c", f"sed -n 1p {listing} | sh"], cwd=tmp_path, env=child_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "done already, skipped" in again.stdout
    before = _records(array)
    capsys.readouterr()
    assert main([*base, "--out", str(array)]) == 0  # the final step: the table, running nothing
    assert _records(array) == before
    assert "unet.real-all.seed0: done" not in capsys.readouterr().out

    # (c) Dask: a local cluster of two worker processes, one thread each
    dask = tmp_path / "dask"
    assert main([*base, "--out", str(dask), "--engine", "dask", "--jobs", "2"]) == 0
    assert "local Dask cluster of 2 worker process(es)" in capsys.readouterr().out

    # (d) the local pool (--jobs 2): each job in its own `secgan sweep --job ID` process, at most two
    # at a time, each after the jobs it needs; each job's output in jobs/logs/<id>.log
    pool = tmp_path / "pool"
    assert main([*base, "--out", str(pool), "--jobs", "2"]) == 0
    logs = {w.stem: w.read_text() for w in (pool / "jobs" / "logs").glob("*.log")}
    assert sorted(logs) == jobs and all(f"{n}: done" in text for n, text in logs.items())

    ways = (array, dask, pool)
    for name in TABLE:
        ref = (local / name).read_bytes()
        for way in ways:
            assert (way / name).read_bytes() == ref, (way.name, name)
    for p in sorted((local / "settings").glob("*.json")):
        assert all((way / "settings" / p.name).read_bytes() == p.read_bytes() for way in ways), p.name
    assert all(_page_without_wall_time(way) == _page_without_wall_time(local) for way in ways)
    rows = json.loads((local / "results.json").read_text())
    assert [r["setting"] for r in rows] == ["real-all", "real-subset-1", "real-subset-2", "asyndgan", "public-only",
                                            "asyndgan-dp-eps3"]
    assert "wall_seconds" not in rows[0]  # timings are not part of the table: timings.json
    assert set(json.loads((local / "timings.json").read_text())["job_seconds_per_setting"]) == {r["setting"] for r in rows}


def test_a_killed_worker_leaves_a_claim_that_is_taken_over_after_its_lease(tmp_path: Path, capsys):
    cfg = _config(tmp_path, epochs=12)  # long enough to be killed mid-way
    out = tmp_path / "out"
    job = "unet.real-all.seed0"  # reads no checkpoint, so it can run on its own
    claim = out / "jobs" / f"{job}.claim"
    record = out / "jobs" / f"{job}.json"
    worker = Proc(["-m", "secgan", "sweep", "--config", str(cfg), "--out", str(out), "--job", job, "--lease", "6"],
                  tmp_path / "worker.log")
    try:
        worker._wait(claim.is_file, timeout=120, what="the worker to claim its job")
        worker.kill9()
    finally:
        worker.close()
    assert claim.is_file() and not record.exists()  # killed mid-job: claimed, not done
    held = read_claim(claim)
    if not is_stale(held):
        # while its lease runs, nobody else runs the job
        assert main(["sweep", "--config", str(cfg), "--out", str(out), "--job", job, "--lease", "6"]) == 2
        assert "claimed by another worker" in capsys.readouterr().err
        assert not record.exists()
    wait_until(lambda: is_stale(read_claim(claim)), timeout=30, what="the dead worker's lease to pass")
    assert main(["sweep", "--config", str(cfg), "--out", str(out), "--job", job, "--lease", "6"]) == 0
    assert record.is_file() and not claim.exists()  # taken over, done, released
    assert json.loads(record.read_text())["result"]["test_patients"] > 0


def test_a_job_whose_inputs_changed_runs_again(tmp_path: Path, capsys):
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(cfg), "--out", str(out)]) == 0
    before = _records(out)
    dp_run = (out / "gans" / "asyndgan-dp-eps3" / "run.json").stat().st_mtime_ns
    # the public pretraining's generator is replaced by another (as if retrained to another result):
    # its done record names the new weights, so the DP run that starts from it, and the U-Net that
    # reads that run's checkpoint, have changed inputs; nothing else does
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from secgan.evaluation.sweep_jobs import file_sha256

    weights = out / "gans" / "public-only" / "generator.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name] + 0.05
    with safe_open(str(weights), framework="pt") as fh:
        meta = fh.metadata()
    save_file(tensors, str(weights), metadata=meta)
    rec_path = out / "jobs" / "gan.public-only.json"
    rec = json.loads(rec_path.read_text())
    rec["result"]["outputs"]["gans/public-only/generator.safetensors"] = file_sha256(weights)
    rec_path.write_text(json.dumps(rec))
    before["gan.public-only.json"] = rec_path.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["sweep", "--config", str(cfg), "--out", str(out)]) == 0
    after = _records(out)
    changed = {n for n in after if after[n] != before[n]}
    assert changed == {"gan.asyndgan-dp-eps3.json", "unet.asyndgan-dp-eps3.run0.seed0.json"}
    assert (out / "gans" / "asyndgan-dp-eps3" / "run.json").stat().st_mtime_ns != dp_run  # retrained
    dp = json.loads((out / "jobs" / "gan.asyndgan-dp-eps3.json").read_text())
    assert dp["inputs"]["init"]["files"] == rec["result"]["outputs"]

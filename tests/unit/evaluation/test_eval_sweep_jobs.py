"""The sweep's job plan and job list: stable ids, every need in an earlier stage, one command a job."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from secgan.cli import main
from secgan.core.errors import ConfigError
from secgan.evaluation.sweep import Sweep
from secgan.evaluation.sweep_config import load_sweep_config
from secgan.evaluation.sweep_data import ensure_data
from secgan.evaluation.sweep_jobs import plan_jobs
from secgan.evaluation.sweep_slurm import job_lines, stage_ranges

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "sweep-tiny.toml"


def _sweep(tmp_path: Path, *replace: tuple[str, str]) -> tuple[Sweep, Path]:
    text = re.sub(r"^data = .*$", 'data = "phantom"', EXAMPLE.read_text(), flags=re.M)
    for old, new in replace:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    cfg, root = load_sweep_config(path)
    ensure_data(cfg, root)
    return Sweep(cfg, root, tmp_path / "out"), path


def test_every_job_needs_only_jobs_of_earlier_stages(tmp_path: Path):
    sweep, _ = _sweep(tmp_path)
    jobs = plan_jobs(sweep)
    ids = [j.id for j in jobs]
    assert len(ids) == len(set(ids))
    stage = {j.id: j.stage for j in jobs}
    for j in jobs:
        assert all(n in stage and stage[n] < j.stage for n in j.needs), j
    # runs = 2: two GANs a setting, each scored by its own U-Net job; the DP runs start pretrained
    assert stage["gan.public-only-run1"] == 1 and stage["gan.asyndgan-dp-eps3-run1"] == 2
    assert stage["unet.asyndgan-dp-eps3.run1.seed0"] == 3 and stage["unet.real-all.seed0"] == 1
    by = {j.id: j for j in jobs}
    assert by["unet.asyndgan-dp-eps3.run1.seed0"].needs == ("gan.asyndgan-dp-eps3-run1",)
    assert by["unet.real-subset-1+synthetic.seed0"].needs == ("gan.asyndgan",)
    assert by["unet.missing-flair-site-1.seed0"].needs == ("gan.asyndgan",)  # both missing-modality rows
    assert not any(i.startswith("unet.missing-flair-site-1-completed") for i in ids)
    assert by["quality.syn-all"].needs == ("gan.syn-all",)
    assert ids == [j.id for j in plan_jobs(sweep)]  # stable


def test_a_pretrained_dp_run_without_a_public_only_row_still_has_its_pretraining_job(tmp_path: Path):
    sweep, _ = _sweep(tmp_path, ("[public]", "[public]\nenabled = false"))
    by = {j.id: j for j in plan_jobs(sweep)}
    assert "unet.public-only.run0.seed0" not in by  # no row ...
    assert by["gan.public-only"].stage == 1  # ... but the pretraining the DP runs start from
    assert by["gan.asyndgan-dp-eps3"].needs == ("gan.public-only",)


def test_the_job_list_has_one_command_a_job_stage_by_stage(tmp_path: Path):
    sweep, path = _sweep(tmp_path)
    jobs = plan_jobs(sweep)
    lines = job_lines(jobs, config_path=path, out=tmp_path / "out dir", lease_s=60, threads=2)
    assert len(lines) == len(jobs)
    ranges = stage_ranges(lines)
    assert sorted(ranges) == [1, 2, 3]
    seen = []
    for s in sorted(ranges):
        first, last = ranges[s]
        assert all(line.endswith(f"# stage {s}") for line in lines[first - 1:last])
        seen += lines[first - 1:last]
    assert seen == lines  # contiguous
    args = shlex.split(lines[0], comments=True)
    assert args[:3] == [sys.executable, "-m", "secgan"]
    assert args[args.index("--out") + 1] == str(tmp_path / "out dir")  # quoted for the shell
    ran = sorted(shlex.split(line, comments=True)[shlex.split(line, comments=True).index("--job") + 1]
                 for line in lines)
    assert ran == sorted(j.id for j in jobs)


@pytest.mark.parametrize("extra, message", [
    (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --engine dask"),
    (["--job", "unet.real-all.seed0", "--jobs-out", "x.txt"], "--job and --jobs-out cannot be combined"),
    (["--lease", "0"], "--lease must be > 0"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--job", "unet.nonsense.seed0"], "unknown job 'unet.nonsense.seed0'"),
])
def test_bad_job_options_are_refused_with_a_clear_error(tmp_path: Path, capsys, extra, message):
    _, path = _sweep(tmp_path)
    assert main(["sweep", "--config", str(path), "--out", str(tmp_path / "out"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_the_dask_engine_without_dask_names_the_extra(monkeypatch, tmp_path: Path):
    from secgan.evaluation import sweep_dask

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'secgan\[cluster\]'"):
        sweep_dask._import_distributed()

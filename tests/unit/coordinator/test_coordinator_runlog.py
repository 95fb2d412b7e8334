"""run.json: counters carried over a --resume, late and dropped gradients per site, writes that fail
without ending the run, and the open-files limit raised at start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from secgan.net.schema import GradientReply
from secgan.gan.models import build_generator
from secgan.gan.config import ModelConfig
from secgan.core.spec import ImageSpec
from coordinator.core import GeneratorCore

from coordinator.registry import Registry
from coordinator.runlog import RunLog
from coordinator.scheduler import QuorumPolicy, Scheduler

IMAGE = ImageSpec(size=16)
MODEL = ModelConfig(g_width=8, g_depth=2, d_width=8, d_layers=2, noise_dim=4)
REPO = Path(__file__).resolve().parents[3]


class _Conds:
    def draw(self, n, *, generator):
        return (torch.rand(n, 4, IMAGE.size, IMAGE.size, generator=generator) > 0.5).float()


def _scheduler(sites=("site-1", "site-2", "site-3"), min_sites=2):
    G = build_generator(MODEL, IMAGE)
    core = GeneratorCore(G, torch.optim.Adam(G.parameters(), lr=1e-3), _Conds(), batch_size=2,
                         noise_dim=MODEL.noise_dim, generator=torch.Generator().manual_seed(0))
    reg = Registry(list(sites))
    for s in reg.sites:
        reg.welcome(s, routing_id=s.encode(), now=0.0, policy={"mode": "off"})
    sched = Scheduler(core, reg, QuorumPolicy(min_sites=min_sites, round_deadline_s=5.0, max_attempts=5),
                      run_id="r", total_steps=10)
    return reg, sched


def _answer(sched, sent, site):
    b = sent[site]
    sched.on_gradient(site, GradientReply(run_id="r", round=b.round, step=b.step, grad=torch.ones_like(b.fake)), 10)


def test_late_and_dropped_gradients_are_shown_next_to_steps_served():
    reg, sched = _scheduler()
    sent = {}
    sched.start_round(0.0, lambda s, m: sent.__setitem__(s, m) or 100)
    _answer(sched, sent, "site-1")
    _answer(sched, sent, "site-2")  # site-3 misses the deadline
    assert sched.close_round().stepped
    sent.clear()
    sched.start_round(10.0, lambda s, m: sent.__setitem__(s, m) or 100)
    _answer(sched, sent, "site-1")  # alone: below the quorum, the round fails and its answer is dropped
    assert not sched.close_round().stepped
    summary = reg.summary()
    assert (summary["site-1"]["steps_served"], summary["site-1"]["gradients_late"],
            summary["site-1"]["gradients_dropped"]) == (1, 0, 1)
    assert (summary["site-2"]["steps_served"], summary["site-2"]["gradients_late"]) == (1, 1)
    assert (summary["site-3"]["steps_served"], summary["site-3"]["gradients_late"]) == (0, 2)


def _previous(tmp_path: Path) -> dict:
    reg, sched = _scheduler()
    rec = reg["site-1"]
    rec.steps_served, rec.gradients_late, rec.gradients_dropped, rec.deaths = 7, 2, 1, 1
    rec.bytes_in, rec.bytes_out = 1000, 5000
    rec.drops["stale"] += 3
    rec.refusals["budget_exhausted"] += 1
    rec.step_bytes_in, rec.step_bytes_out = [10] * 7, [50] * 7
    reg.unattributed_drops["unauthenticated"] += 2
    log = RunLog(tmp_path / "run.json", run_id="r")
    log.protocol_errors["bad_json"] += 4
    log.handshake_failures["auth"] += 5
    return log.write(registry=reg, scheduler=sched, status="interrupted", stop_reason="SIGTERM",
                     extra={"stale_replies": 3, "auth": {"allowed": 6, "denied": 5}})


def test_resume_carries_every_counter_over_and_counts_incarnations(tmp_path):
    prev = _previous(tmp_path)
    assert prev["incarnation"] == 1
    reg, sched = _scheduler()
    log = RunLog(tmp_path / "run.json", run_id="r", previous=json.loads((tmp_path / "run.json").read_text()))
    log.restore_sites(reg)
    reg["site-1"].steps_served += 1
    reg["site-1"].step_bytes_in.append(20)
    reg["site-1"].step_bytes_out.append(50)
    log.protocol_errors["bad_json"] += 1
    snap = log.snapshot(registry=reg, scheduler=sched, status="running", stop_reason=None)
    s1 = snap["sites"]["site-1"]
    assert snap["incarnation"] == 2
    assert (s1["steps_served"], s1["gradients_late"], s1["gradients_dropped"], s1["deaths"]) == (8, 2, 1, 1)
    assert (s1["bytes_in"], s1["bytes_out"]) == (1000, 5000)
    assert s1["drops"] == {"stale": 3} and s1["refusals"] == {"budget_exhausted": 1}
    assert s1["mean_bytes_in_per_step"] == 11.2 and s1["mean_bytes_out_per_step"] == 50.0
    assert snap["protocol_errors"] == {"bad_json": 5} and snap["handshake_failures"] == {"auth": 5}
    assert snap["unattributed_drops"] == {"unauthenticated": 2}
    assert log.prior_counter("stale_replies") == 3 and log.prior_counter("auth", "denied") == 5


def test_a_previous_file_of_another_run_or_with_junk_is_not_carried(tmp_path):
    _previous(tmp_path)
    prev = json.loads((tmp_path / "run.json").read_text())
    reg, sched = _scheduler()
    other = RunLog(tmp_path / "x.json", run_id="other-run", previous=prev)
    other.restore_sites(reg)
    assert other.incarnation == 1 and reg["site-1"].steps_served == 0
    prev["sites"]["site-1"].update(steps_served="7", drops={"stale": -3}, bytes_in=True)
    prev["incarnation"] = "x"
    reg, sched = _scheduler()
    junk = RunLog(tmp_path / "y.json", run_id="r", previous=prev)
    junk.restore_sites(reg)
    assert reg["site-1"].steps_served == 0 and not reg["site-1"].drops and reg["site-1"].bytes_in == 0
    assert junk.incarnation == 1


def test_a_failed_write_is_counted_and_never_raised(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    reg, sched = _scheduler()
    log = RunLog(blocker / "run.json", run_id="r")
    for _ in range(3):
        snap = log.write(registry=reg, scheduler=sched, status="running", stop_reason=None)
    assert snap["run_json_write_failures"] == 3 and log.write_failures == 3
    ok = RunLog(tmp_path / "run.json", run_id="r")
    ok.write_failures = 3
    ok.write(registry=reg, scheduler=sched, status="running", stop_reason=None)
    assert json.loads((tmp_path / "run.json").read_text())["run_json_write_failures"] == 3


def test_open_files_limit_is_raised_to_the_hard_limit():
    code = (
        "import resource\n"
        "from coordinator.upkeep import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "before, after = raise_open_files_limit(cap=1024)\n"
        "print(before, after, resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )

    def low() -> None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         preexec_fn=low, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    before, after, now = map(int, out.stdout.split())
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert before == 256 and after == now == (1024 if hard == resource.RLIM_INFINITY else min(hard, 1024))

"""A FeTS-size federation on one machine: 71 DP-SGD sites in two ``secgan site-host`` processes
against a real coordinator process, CURVE on 127.0.0.1, for a few steps; afterwards every one of
the 71 ledgers is exact: it verifies against its release log, counts every step the coordinator
says the site served, and its epsilon equals Opacus's RDP accountant stepped independently over
the same (sigma, q) for that many steps (none under-counted). Every site acknowledged the final
Stop: the coordinator lingers after the run until all 71 have (a hosted node that missed the Stop
while its host finished others gets it again when it next talks; see test_net_final_stop.py).
Marked slow; it runs in the default suite (``make test``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.net_helpers import coordinator_proc, free_port, make_kit, site_host_proc, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_SITES = 71  # FeTS 2022
STEPS = 3
HOSTS = 2  # one per core
DISTINCT = 16  # phantom sites written; the rest link to them
IMAGE = 32


def _federation_data(root: Path) -> Path:
    """71 site folders at 32 px, 4 training patients each: ``DISTINCT`` phantom sites, the others
    links to them (a site's data is only read; each site keeps its own state folder, keys and
    ledger, which is what this test is about, and writing 71 phantoms would take a third of its
    time). At 16 px the phantom's tumours are too small for most slices to qualify (10 tumour
    pixels), so sites would load fewer patients."""
    from secgan.data.phantom import write_phantom

    data = root / "data"
    write_phantom(data, sites=DISTINCT, patients=5, seed=11, size=IMAGE, slices=8)
    for k in range(DISTINCT + 1, N_SITES + 1):
        os.symlink(data / f"site-{(k - 1) % DISTINCT + 1}", data / f"site-{k}")
    return data


def _rss_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def test_71_dp_sites_in_two_host_processes_keep_exact_ledgers(tmp_path):
    from opacus.accountants import RDPAccountant

    from secgan.privacy.ledger import PrivacyLedger
    from secgan.privacy.release_log import verify_release_log

    data = _federation_data(tmp_path)
    port = free_port()
    model = {"g_width": 4, "g_depth": 1, "d_width": 4, "d_layers": 1, "noise_dim": 2}
    train = {"steps": STEPS, "batch_size": 2, "checkpoint_every": 10**6, "seed": 3}
    kit = make_kit(tmp_path / "kit", data_root=data, sites=N_SITES, port=port, image_size=IMAGE,
                   coordinator={"min_sites": N_SITES, "round_deadline_s": 120.0, "heartbeat_timeout_s": 60.0,
                                "startup_grace_s": 120.0, "model": model, "train": train},
                   site={"model": model, "train": train, "heartbeat_interval_s": 2.0, "status_every_s": 5.0,
                         "policy": {"mode": "dpsgd", "allow_off": False, "target_epsilon": 10.0, "delta": 1e-5,
                                    "planned_steps": STEPS, "expected_batch_size": 2}})
    names = [f"site-{k}" for k in range(1, N_SITES + 1)]
    logs = tmp_path / "logs"
    coord = coordinator_proc(kit, logs / "coordinator.log", "--log-json")
    hosts = [site_host_proc(kit, names[i::HOSTS], logs / f"host-{i}.log", "--log-json") for i in range(HOSTS)]
    peak_kib = {i: 0 for i in range(HOSTS)}
    try:
        def finished() -> bool:
            for i, h in enumerate(hosts):
                peak_kib[i] = max(peak_kib[i], _rss_kib(h.p.pid, "VmHWM"))
            return coord.p.poll() is not None

        def gave_up() -> str | None:  # a refused or failed site, or a host gone: the run cannot finish
            for h in hosts:
                if h.p.poll() is not None or h.count('"event": "(site_refused|hosted_node_failed)"'):
                    return f"a host gave up:\n{h.tail(5)}"
            return None

        wait_until(finished, timeout=240, what="the coordinator to finish its steps", gave_up=gave_up)
        assert coord.p.returncode == 0, coord.tail()
        for h in hosts:
            assert h.wait(timeout=60) == 0, h.tail()
            assert not h.events("hosted_node_failed") and not h.events("site_refused"), h.tail()
            assert len(h.events("stop_received")) == len(names[hosts.index(h)::HOSTS])
    finally:
        for p in [coord, *hosts]:
            p.close()
    print(f"host peak RSS: {', '.join(f'{v / 1024:.0f} MiB' for v in peak_kib.values())} "
          f"({N_SITES} DP learners in {HOSTS} processes)")
    run = json.loads((tmp_path / "kit" / "coordinator" / "state" / "run.json").read_text())
    assert run["steps_done"] == STEPS
    final = run["final_stop"]
    assert final["owed"] == N_SITES and final["acknowledged"] == N_SITES and final["unacknowledged"] == [], final
    assert sorted(run["sites"]) == sorted(names)
    for name in names:
        state = tmp_path / "kit" / name / "state"
        res = verify_release_log(state)
        assert res.ok, (name, res.problems)
        ledger = PrivacyLedger.read(state)
        served = run["sites"][name]["steps_served"]
        assert served == STEPS, (name, served)
        assert ledger.releases == res.releases == served, name
        assert ledger.steps == res.steps == served, name
        assert ledger.mode == "dpsgd" and ledger.accountant == "rdp"
        # the accountant recomputed from scratch: Opacus's own RDPAccountant, one step per charge
        independent = RDPAccountant()
        charged = 0
        for sigma, q, k in ledger.history:
            for _ in range(int(k)):
                independent.step(noise_multiplier=float(sigma), sample_rate=float(q))
            charged += int(k)
        assert charged == served, name
        expected = independent.get_epsilon(delta=ledger.delta)
        assert ledger.epsilon == pytest.approx(expected, rel=1e-9), name
        assert ledger.epsilon >= (res.max_epsilon or 0.0) > 0, name
        status = json.loads((state / "site.json").read_text())
        assert (status["releases"], status["epsilon"]) == (ledger.releases, ledger.epsilon), name
        assert status["exit_reason"].startswith("stop:"), name
    # every site's sampling rate is its own: expected patients over its own training patients
    assert {round(float(PrivacyLedger.read(tmp_path / "kit" / n / "state").history[0][1]), 6) for n in names} == {0.5}
    # memory: 71 Opacus learners (16 px) in two processes
    assert all(0 < v < 3 * 2**20 for v in peak_kib.values()), peak_kib

"""kill -9 between the durable ledger write and the send; the ledger may only over-count.

Also the ``secgan ledger`` command on the state the crash left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from secgan.cli import main as cli_main
from secgan.net.schema import GradientReply
from sites.learner import SiteLearner
from secgan.privacy.release_log import LOG_FILE, verify_release_log

from .privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy

ROOT = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent(
    """
    import sys, time
    from sites.learner import SiteLearner
    from tests.unit.privacy.privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy

    def hold(releases):
        if releases == 3:
            print("RESERVED", releases, flush=True)
            time.sleep(120)

    site = SiteLearner(dataset=dataset(), policy=policy("dpsgd"), model=MODEL, image=IMAGE, train=TRAIN,
                       state_dir=sys.argv[1], generator_seed=1, on_reserved=hold)
    for msg in batches(5):
        site.serve(msg)
        print("SENT", msg.step, flush=True)
    """
)


@pytest.mark.slow
def test_kill_after_ledger_write_before_send(tmp_path, capsys):
    state = tmp_path / "site"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(state)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    sent = 0
    try:
        for line in proc.stdout:  # the child reaches the hook within a few seconds; the timeout guards
            if line.startswith("SENT"):
                sent += 1
            if line.startswith("RESERVED"):
                break
        else:
            pytest.fail("child ended before reserving its third release")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert sent == 2
    ledger = json.loads((state / "ledger.json").read_text())
    logged = len((state / LOG_FILE).read_text().splitlines())
    assert ledger["releases"] == 3 >= logged == sent  # over-counts by the unsent release, never under
    assert verify_release_log(state).ok

    # restart: same data and policy resume from the ledger; serving continues within the budget
    site = SiteLearner(dataset=dataset(), policy=policy("dpsgd"), model=MODEL, image=IMAGE, train=TRAIN, state_dir=state, generator_seed=1)
    assert site.ledger.releases == 3
    reply = site.serve(next(iter(batches(1))))
    assert isinstance(reply, GradientReply) and site.ledger.releases == 4
    assert site.epsilon() > ledger["epsilon"]

    # the command line agrees
    capsys.readouterr()
    assert cli_main(["ledger", "show", "--site-dir", str(state), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["steps"] == 4 and shown["mode"] == "dpsgd" and shown["epsilon"] == pytest.approx(site.epsilon())
    for key in ("epsilon", "delta", "target_epsilon", "steps", "mode"):
        assert key in shown
    assert cli_main(["ledger", "verify", "--site-dir", str(state)]) == 0
    lines = (state / LOG_FILE).read_text().splitlines()
    entry = json.loads(lines[0])
    entry["sha256"] = "0" * 64
    lines[0] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    (state / LOG_FILE).write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert cli_main(["ledger", "verify", "--site-dir", str(state)]) == 1
    assert "altered" in capsys.readouterr().err
    assert cli_main(["ledger", "show", "--site-dir", str(tmp_path / "nowhere")]) == 2

"""One writer per site state, the ledger cross-checked with its release log, and recovery.

The ledger may over-count; it never starts below what the release log shows, whatever was
removed, restored or appended behind its back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secgan.cli import main as cli_main
from secgan.core.errors import PrivacyError
from secgan.net.schema import GradientReply
from secgan.privacy import accounting as acc
from sites.learner import SiteLearner
from secgan.privacy.ledger import LEDGER_FILE, PrivacyLedger
from secgan.privacy.release_log import LOG_FILE, ReleaseLog, verify_chain, verify_release_log
from secgan.privacy.statelock import StateLock, StateLocked

from .privacy_helpers import IMAGE, MODEL, TRAIN, batches, dataset, policy

ROOT = Path(__file__).resolve().parents[3]
SIGMA, Q = 1.0, 3 / 10  # policy("dpsgd") on dataset(): noise 1.0, 3 of 10 patients a step


def make(state: Path, pol=None, **kw) -> SiteLearner:
    return SiteLearner(dataset=dataset(), policy=pol or policy("dpsgd"), model=MODEL, image=IMAGE, train=TRAIN,
                       state_dir=state, generator_seed=1, **kw)


def serve(site: SiteLearner, n: int, start: int = 0) -> list[GradientReply]:
    out = []
    for msg in list(batches(start + n))[start:]:
        reply = site.serve(msg)
        assert isinstance(reply, GradientReply)
        out.append(reply)
    return out


def logged(state: Path) -> tuple[int, float | None]:
    res = verify_chain(state / LOG_FILE)
    assert res.ok, res.problems
    return res.releases, res.max_epsilon


# ------------------------------------------------------------------ the chain check before every release


def test_foreign_append_between_releases_is_refused_before_the_next_release(tmp_path):
    state = tmp_path / "site"
    site = make(state)
    serve(site, 2)
    # a second writer by another path (here another ReleaseLog on the same folder) appends a line
    ReleaseLog(state).append(step=9, round=9, run_id="other", tensors={"grad": torch.zeros(3, 4, 16, 16)}, epsilon_after=0.1)
    before = PrivacyLedger.read(state).to_dict()
    with pytest.raises(PrivacyError, match="release log changed under this process"):
        site.serve(next(iter(batches(3))))  # no reply at all: nothing to send
    assert PrivacyLedger.read(state).to_dict() == before  # refused before the reserve: not even charged
    with pytest.raises(PrivacyError):  # and it stays refused
        site.serve(next(iter(batches(4))))


def test_foreign_ledger_write_is_refused_before_the_next_release(tmp_path):
    state = tmp_path / "site"
    site = make(state)
    serve(site, 2)
    other = PrivacyLedger.read(state)
    other.reserve_step(noise_multiplier=SIGMA, sample_rate=Q)  # a second writer reserves behind its back
    with pytest.raises(PrivacyError, match="ledger changed under this process"):
        site.serve(next(iter(batches(3))))
    assert logged(state)[0] == 2


def test_the_ledger_records_the_log_entry_it_last_saw(tmp_path):
    state = tmp_path / "site"
    site = make(state)
    serve(site, 3)
    chain = verify_chain(state / LOG_FILE)
    # reserve of release 3 happened when the log ended with entry 2
    assert PrivacyLedger.read(state).log_tail == chain.hashes[1]
    assert verify_release_log(state).ok


# ------------------------------------------------------------------ the start-up cross-check


def test_ledger_removed_is_rebuilt_from_the_log_never_a_fresh_start(tmp_path):
    state = tmp_path / "site"
    site = make(state)
    replies = serve(site, 4)
    eps = site.epsilon()
    (state / LEDGER_FILE).unlink()
    again = make(state)
    assert again.ledger.releases == 4 and again.epsilon() >= eps and all(isinstance(r, GradientReply) for r in replies)
    assert again.epsilon() == pytest.approx(acc.epsilon_rdp(noise_multiplier=SIGMA, sample_rate=Q, steps=4, delta=1e-5))
    assert "missing" in again.ledger.to_dict()["recoveries"][0]["reason"]
    assert verify_release_log(state).ok
    serve(again, 1, start=4)
    assert again.ledger.releases == 5 and verify_release_log(state).ok


def test_ledger_and_discriminator_removed_is_rebuilt_from_the_log(tmp_path):
    state = tmp_path / "site"
    site = make(state)
    serve(site, 4)
    site.save()
    eps = site.epsilon()
    (state / LEDGER_FILE).unlink()
    (state / "discriminator.safetensors").unlink()
    again = make(state)
    assert again.ledger.releases == 4 and again.epsilon() >= eps


def test_older_ledger_and_discriminator_restored_is_brought_up_to_the_log(tmp_path):
    state, backup = tmp_path / "site", tmp_path / "backup"
    site = make(state)
    serve(site, 2)
    site.save()
    backup.mkdir()
    for name in (LEDGER_FILE, "discriminator.safetensors"):
        shutil.copy2(state / name, backup / name)
    serve(site, 3, start=2)
    eps = site.epsilon()
    for name in (LEDGER_FILE, "discriminator.safetensors"):  # restore the backup over the live state
        shutil.copy2(backup / name, state / name)
    again = make(state)
    n, max_logged = logged(state)
    assert n == 5 and again.ledger.releases >= 5 and again.epsilon() >= max(eps, max_logged)
    assert verify_release_log(state).ok


def test_ledger_without_its_log_is_refused_and_recover_carries_it_over(tmp_path, capsys):
    state = tmp_path / "site"
    site = make(state)
    serve(site, 3)
    eps = site.epsilon()
    (state / LOG_FILE).unlink()
    with pytest.raises(PrivacyError, match="does not hold entry"):
        make(state)
    capsys.readouterr()
    assert cli_main(["ledger", "recover", "--site-dir", str(state), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] and out["releases"] == 3 and out["epsilon"] >= eps
    assert verify_release_log(state).ok
    again = make(state)
    assert again.ledger.releases == 3 and again.epsilon() >= eps
    serve(again, 1, start=3)
    assert verify_release_log(state).ok and again.ledger.releases == 4


def test_another_sites_log_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    serve(make(a), 2)
    serve(make(b, policy("dpsgd", noise_multiplier=2.0)), 2)
    shutil.copy2(b / LOG_FILE, a / LOG_FILE)
    with pytest.raises(PrivacyError, match="another site's log"):
        make(a)


def test_broken_log_is_refused_then_recovered_without_lowering_anything(tmp_path, capsys):
    """The quoted case: two writers, two lines pointing at the same previous entry, ledger one behind."""
    state = tmp_path / "site"
    site = make(state)
    serve(site, 3)
    lines = (state / LOG_FILE).read_bytes().splitlines(keepends=True)
    twin = json.loads(lines[-1])
    twin["sha256"] = "f" * 64  # the other writer's release, chained to the same previous entry
    twin["epsilon_after"] = twin["epsilon_after"] + 0.5
    from secgan.privacy.release_log import entry_hash

    twin["hash"] = entry_hash(twin)
    with (state / LOG_FILE).open("ab") as fh:
        fh.write(json.dumps(twin, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    max_claimed = twin["epsilon_after"]
    with pytest.raises(PrivacyError, match="release log is broken.*ledger recover"):
        make(state)
    capsys.readouterr()
    assert cli_main(["ledger", "verify", "--site-dir", str(state)]) == 1
    assert "ledger recover" in capsys.readouterr().err
    assert cli_main(["ledger", "recover", "--site-dir", str(state)]) == 0
    assert "archived" in capsys.readouterr().out
    led = PrivacyLedger.read(state)
    assert led.releases >= 4 and led.epsilon >= max_claimed  # the max of ledger and log, never less
    assert list(state.glob("releases.broken-*.jsonl"))
    assert verify_release_log(state).ok
    again = make(state)
    assert again.ledger.releases == led.releases
    r = serve(again, 1, start=5)[0]
    assert isinstance(r, GradientReply) and again.epsilon() > led.epsilon and verify_release_log(state).ok


def test_recover_refuses_while_the_site_holds_the_lock(tmp_path):
    state = tmp_path / "site"
    serve(make(state), 1)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        from secgan.privacy.recovery import recover

        with pytest.raises(StateLocked, match=f"pid {holder.pid}"):
            recover(state)
    finally:
        holder.kill()
        holder.wait(timeout=30)


HOLD = textwrap.dedent(
    """
    import sys, time
    from secgan.privacy.statelock import StateLock
    lock = StateLock.acquire(sys.argv[1])
    print("LOCKED", flush=True)
    time.sleep(120)
    """
)


def test_state_lock_is_exclusive_across_processes_and_reentrant_within_one(tmp_path):
    state = tmp_path / "site"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        with pytest.raises(StateLocked, match=f"in use by another process \\(pid {holder.pid}\\)"):
            StateLock.acquire(state)
        with pytest.raises(StateLocked):
            make(state)
        assert not (state / LEDGER_FILE).exists()  # refused before anything was written
    finally:
        holder.kill()
        holder.wait(timeout=30)
    a = StateLock.acquire(state)  # free again once the holder died (kill -9 leaves no stale lock)
    b = StateLock.acquire(state)
    b.release()
    probe = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", ""), str(state)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert probe.returncode != 0 and "StateLocked" in probe.stderr  # still held by `a`
    a.release()


# ------------------------------------------------------------------ never under-counts, any order


OPS = st.lists(
    st.sampled_from(["serve", "crash_after_reserve", "crash_before_append", "crash_after_append", "restart",
                     "drop_ledger", "drop_ledger_and_d", "snapshot", "restore_snapshot"]),
    min_size=3, max_size=10,
)


class Crash(Exception):
    pass


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_ledger_never_under_counts_the_log_whatever_the_order_of_crashes_and_restarts(tmp_path_factory, ops):
    state = tmp_path_factory.mktemp("hyp") / "site"
    snap = state.parent / "snapshot"
    site = make(state)
    sent = 0  # gradients that left the learner
    step = 0

    def check(s: SiteLearner) -> None:
        n, max_logged = logged(state)
        assert s.ledger.releases >= n >= sent
        assert s.epsilon() >= (max_logged or 0.0)
        assert s.epsilon() >= acc.epsilon_rdp(noise_multiplier=SIGMA, sample_rate=Q, steps=sent, delta=1e-5) - 1e-12

    for op in ops:
        msg = list(batches(step + 1))[step]
        step += 1
        if op == "serve":
            assert isinstance(site.serve(msg), GradientReply)
            sent += 1
        elif op.startswith("crash"):
            original = site.release_log.append

            def hook(_r):
                raise Crash

            def before(**kw):
                raise Crash

            def after(**kw):
                original(**kw)
                raise Crash

            if op == "crash_after_reserve":
                site._on_reserved = hook
            else:
                site.release_log.append = before if op == "crash_before_append" else after
            with pytest.raises(Crash):
                site.serve(msg)
            del site
            site = make(state)
        elif op == "restart":
            site.save()
            site = make(state)
        elif op in ("drop_ledger", "drop_ledger_and_d"):
            del site
            (state / LEDGER_FILE).unlink()
            if op == "drop_ledger_and_d":
                for f in state.glob("discriminator*.safetensors"):
                    f.unlink()
            site = make(state)
        elif op == "snapshot":
            site.save()
            shutil.rmtree(snap, ignore_errors=True)
            snap.mkdir()
            for f in [state / LEDGER_FILE, *state.glob("discriminator*.safetensors")]:
                shutil.copy2(f, snap / f.name)
        elif op == "restore_snapshot" and snap.exists():
            del site
            for f in snap.iterdir():
                shutil.copy2(f, state / f.name)
            site = make(state)
        check(site)
    assert verify_release_log(state).ok


# ------------------------------------------------------------------ site.json agrees with the ledger


def test_site_json_epsilon_and_releases_are_the_ledgers(tmp_path):
    from secgan.core.spec import ImageSpec
    from secgan.settings import SiteConfig
    from sites.config import NodeConfig
    from sites.node import SiteNode

    state = tmp_path / "site"
    site = make(state)
    serve(site, 2)
    (state / LEDGER_FILE).unlink()  # a restart that rebuilds the ledger: this process served none of them
    site = make(state)
    serve(site, 1, start=2)
    settings = SiteConfig(site_id="site-1", data_dir=str(tmp_path), state_dir=str(state), image=ImageSpec(size=16),
                          policy=site.policy)
    node = SiteNode(NodeConfig(settings=settings, client_public=b"", client_secret=b"", server_public=b""), site)
    node.write_status()
    status = json.loads((state / "site.json").read_text())
    ledger = json.loads((state / LEDGER_FILE).read_text())
    assert (status["epsilon"], status["releases"]) == (ledger["epsilon"], ledger["releases"]) and ledger["releases"] == 3

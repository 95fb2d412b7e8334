"""The sweep job claim: one owner at a time, renewed while held, taken over once its lease passed."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

from secgan.evaluation.sweep_claims import is_stale, read_claim, try_claim


def _race(path: str, start: float, queue) -> None:
    while time.time() < start:
        pass
    claim = try_claim(Path(path), lease_s=30)
    queue.put(os.getpid() if claim is not None else 0)
    if claim is not None:
        time.sleep(0.5)  # still held while the others try
        claim.release()


def test_of_many_processes_claiming_at_once_exactly_one_wins(tmp_path: Path):
    path = tmp_path / "job.claim"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start = time.time() + 2.0
    procs = [ctx.Process(target=_race, args=(str(path), start, queue)) for _ in range(6)]
    for p in procs:
        p.start()
    try:
        wins = [queue.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert sum(1 for w in wins if w) == 1
    assert not path.exists()  # released by its owner


def test_a_live_claim_is_refused_and_a_stale_one_taken_over(tmp_path: Path):
    path = tmp_path / "job.claim"
    first = try_claim(path, lease_s=30)
    assert first is not None and first.held()
    assert try_claim(path, lease_s=30) is None
    first._stop.set()  # the owner dies: no more renewals
    data = json.loads(path.read_text())
    data["lease_until"] = time.time() - 1  # its lease has passed
    path.write_text(json.dumps(data))
    assert is_stale(read_claim(path))
    second = try_claim(path, lease_s=30)
    assert second is not None and second.held() and not first.held()
    first.release()  # the old owner's release leaves the new claim alone
    assert second.held() and path.exists()
    second.release()
    assert not path.exists() and not path.with_name(path.name + ".break").exists()


def test_a_held_claim_is_renewed_beyond_its_lease(tmp_path: Path):
    path = tmp_path / "job.claim"
    claim = try_claim(path, lease_s=0.8)
    try:
        first_until = read_claim(path)["lease_until"]
        deadline = time.monotonic() + 10
        while read_claim(path)["lease_until"] == first_until and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_claim(path)["lease_until"] > first_until
        time.sleep(1.2)  # longer than one lease: renewed meanwhile, so still live
        assert not is_stale(read_claim(path)) and try_claim(path, lease_s=0.8) is None
    finally:
        claim.release()


def test_an_unreadable_claim_counts_as_expired(tmp_path: Path):
    path = tmp_path / "job.claim"
    path.write_text("{not json")  # a claimer died while writing it
    assert is_stale(read_claim(path))
    claim = try_claim(path, lease_s=30)
    assert claim is not None and claim.held()
    claim.release()


def test_a_leftover_break_file_does_not_block_for_ever(tmp_path: Path):
    path = tmp_path / "job.claim"
    path.write_text(json.dumps({"owner": "x:1", "nonce": "n", "lease_until": time.time() - 100}))
    breaker = path.with_name(path.name + ".break")
    breaker.write_text("")
    old = time.time() - 100
    os.utime(breaker, (old, old))  # its breaker died long ago
    assert try_claim(path, lease_s=30) is None  # this attempt clears the break file ...
    claim = try_claim(path, lease_s=30)  # ... the next one takes over
    assert claim is not None
    claim.release()

"""The replay guard: stale, replayed and implausible messages, per authenticated peer."""

from __future__ import annotations

import pytest

from secgan.core.errors import ProtocolError
from secgan.net import replay, schema


def env(run="run-1", rnd=0, seq=0, type="fake_batch", site="site-1") -> schema.Envelope:
    return schema.Envelope(version=1, type=type, run_id=run, round=rnd, step=0, site=site, seq=seq)


def guard_code(guard, e, **kw) -> str:
    with pytest.raises(ProtocolError) as exc:
        guard.check(e, **kw)
    return exc.value.code


def test_replay_guard_rules_and_counts():
    g = replay.ReplayGuard(run_id="run-1")
    g.accept(env(seq=1))
    g.accept(env(seq=2, rnd=1))
    assert guard_code(g, env(seq=2, rnd=1)) == "replay"
    assert guard_code(g, env(seq=1, rnd=1)) == "replay"
    assert guard_code(g, env(seq=3, rnd=0)) == "stale"
    assert guard_code(g, env(seq=4, rnd=1, run="run-2")) == "wrong_run"
    g.accept(env(seq=10, rnd=1))  # drops leave the state alone
    assert guard_code(g, env(seq=10, rnd=1)) == "replay"
    assert g.counts == {"replay": 3, "stale": 1, "wrong_run": 1}


def test_replay_guard_is_per_peer_and_binds_run():
    g = replay.ReplayGuard()
    g.accept(env(seq=5, type="hello", run=""), peer=b"A")
    g.accept(env(seq=6, run="run-7"), peer=b"A")  # first run id binds
    assert guard_code(g, env(seq=7, run="run-8"), peer=b"A") == "wrong_run"
    g.accept(env(seq=1, run="run-8"), peer=b"B")  # another peer, own state
    # the peer key wins over the claimed site name
    assert guard_code(g, env(seq=1, run="run-8", site="site-9"), peer=b"B") == "replay"
    g.forget(b"B")
    g.accept(env(seq=1, run="run-8"), peer=b"B")
    # an empty run id is tolerated only on hello
    g2 = replay.ReplayGuard(run_id="run-1")
    g2.accept(env(seq=1, type="hello", run=""))
    assert guard_code(g2, env(seq=2, type="heartbeat", run="")) == "wrong_run"


def test_initial_seq_is_valid_and_grows():
    a = replay.initial_seq()
    b = replay.initial_seq()
    assert 0 < a <= b < 2**53

"""Site and coordinator state machines: refusals, retries with fresh masks, statistics."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secgan.core.errors import ConfigError, ProtocolError, SecganError
from secgan.keys.agreement import generate_agreement_key, public_hex
from secgan.secagg.packing import packed_shape
from secgan.secagg import (
    SecAggRefusal,
    SecAggRoundFailed,
    SecureSumAggregator,
    SecureSumClient,
    distributed_noise_statement,
    noise_share_std,
    resolve_threshold,
    summarize_rounds,
)

SHAPE = (2, 4, 4, 4)


def _key(i: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(hashlib.sha256(b"site%d" % i).digest())


def _federation(n: int = 4, **client_kw):
    keys = {f"site-{i}": _key(i) for i in range(1, n + 1)}
    roster = {k: public_hex(v) for k, v in keys.items()}
    clients = {k: SecureSumClient(site_id=k, agreement_key=v, roster=roster, run_id="run-1", **client_kw)
               for k, v in keys.items()}
    return keys, roster, clients


def _grads(ids, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {i: torch.randn(SHAPE, generator=g) * 1e-3 for i in ids}


@pytest.mark.parametrize("policy, size, expected", [(0, 3, 3), (0, 4, 3), (0, 5, 3), (0, 6, 4), (0, 9, 5),
                                                     (2, 2, 2), (4, 5, 4)])
def test_threshold_rule(policy, size, expected):
    assert resolve_threshold(policy, size) == expected


@pytest.mark.parametrize("policy, size", [(0, 2), (1, 4), (6, 5), (-1, 4), (0, 1)])
def test_threshold_rule_rejects_unsatisfiable(policy, size):
    with pytest.raises(ConfigError):
        resolve_threshold(policy, size)


def test_full_round_then_retry_without_a_dropped_site():
    _, roster, clients = _federation(4)
    agg = SecureSumAggregator(run_id="run-1", roster=roster)
    grads = _grads(clients)
    ann = agg.begin(round=0, step=0, participants=list(clients), shape=SHAPE)
    for i in ("site-1", "site-2", "site-4"):
        agg.accept(i, clients[i].contribute(ann, grads[i]))
    assert agg.missing == ("site-3",) and not agg.complete
    with pytest.raises(ProtocolError, match="secagg_incomplete"):
        agg.result()
    ann1 = agg.retry()
    assert ann1.attempt == 1 and [p[0] for p in ann1.participants] == ["site-1", "site-2", "site-4"]
    assert ann1.set_digest != ann.set_digest
    # a late vector of the failed attempt is stale and dropped
    with pytest.raises(ProtocolError) as exc:
        agg.accept("site-3", clients["site-3"].contribute(ann, grads["site-3"]))
    assert exc.value.code == "stale"
    for i in ("site-1", "site-2", "site-4"):
        assert not clients[i].needs_gradient(ann1)
        agg.accept(i, clients[i].contribute(ann1))
    total = agg.result()
    plain = sum(grads[i].double() for i in ("site-1", "site-2", "site-4")).numpy()
    assert np.abs(total - plain).max() <= agg.quantisation_bound()
    st = agg.stats
    assert (st.attempts, st.participants, st.dropped) == (2, 3, ["site-3"])
    # six vectors (three of each attempt) of words packed to k bits, less than int64 words would take
    packed = 6 * int(np.prod(packed_shape(SHAPE, st.modulus_bits)))
    assert packed < st.bytes_up < 6 * 8 * int(np.prod(SHAPE)) and st.bytes_down > 0
    summary = summarize_rounds([st])
    assert summary["rounds"] == 1 and summary["retried_rounds"] == 1
    assert summary["bytes_per_round"] == st.bytes_up + st.bytes_down


def test_retry_remasks_the_same_value_with_fresh_masks():
    _, roster, clients = _federation(4)
    agg = SecureSumAggregator(run_id="run-1", roster=roster)
    grads = _grads(clients)
    ann = agg.begin(round=0, step=0, participants=list(clients), shape=SHAPE)
    first = {i: clients[i].contribute(ann, grads[i]) for i in ("site-1", "site-2", "site-3")}
    for i, m in first.items():
        agg.accept(i, m)
    ann1 = agg.retry()
    second = clients["site-1"].contribute(ann1)
    assert not torch.equal(first["site-1"].masked, second.masked)
    with pytest.raises(SecganError, match="already fixed"):
        clients["site-2"].contribute(ann1, grads["site-2"])
    # the fixed value is what gets re-masked: the retry's sum equals the first attempt's inputs
    agg.accept("site-1", second)
    agg.accept("site-2", clients["site-2"].contribute(ann1))
    agg.accept("site-3", clients["site-3"].contribute(ann1))
    plain = sum(grads[i].double() for i in ("site-1", "site-2", "site-3")).numpy()
    assert np.abs(agg.result() - plain).max() <= agg.quantisation_bound()


def _tamper(ann, **changes):
    return dataclasses.replace(ann, **changes)


def test_site_refuses_substituted_key_unknown_sites_and_wrong_sets():
    keys, roster, clients = _federation(4)
    agg = SecureSumAggregator(run_id="run-1", roster=roster)
    ann = agg.begin(round=0, step=0, participants=list(clients), shape=SHAPE)
    c = clients["site-1"]

    def code(a):
        with pytest.raises(SecAggRefusal) as exc:
            c.contribute(a, torch.zeros(SHAPE))
        return exc.value.code

    evil = public_hex(generate_agreement_key())
    swapped = [[i, evil if i == "site-2" else pub] for i, pub in ann.participants]
    assert code(_tamper(ann, participants=swapped)) == "secagg_key_mismatch"
    extra = sorted(ann.participants + [["site-9", evil]])
    assert code(_tamper(ann, participants=extra)) == "secagg_unknown_participant"
    assert code(_tamper(ann, participants=ann.participants[1:])) == "secagg_not_a_participant"
    assert code(_tamper(ann, participants=ann.participants[:2])) == "secagg_below_threshold"
    assert code(_tamper(ann, participants=ann.participants[:3])) == "secagg_set_mismatch"  # digest of 4 sites
    assert code(_tamper(ann, set_digest="00" * 32)) == "secagg_set_mismatch"
    assert code(_tamper(ann, attempt=1)) == "secagg_set_mismatch"
    assert code(_tamper(ann, run_id="run-2")) == "secagg_wrong_run"
    assert code(_tamper(ann, modulus_bits=12)) == "secagg_bad_params"
    assert code(_tamper(ann, participants=list(reversed(ann.participants)))) == "secagg_bad_params"
    assert code(_tamper(ann, shape=[0, 3])) == "secagg_bad_params"
    with pytest.raises(SecAggRefusal) as exc:
        c.contribute(ann, torch.zeros(3))
    assert exc.value.code == "secagg_shape_mismatch"
    with pytest.raises(SecAggRefusal) as exc:
        c.contribute(ann)
    assert exc.value.code == "secagg_no_gradient"


def test_a_coordinator_relaying_a_consistent_but_wrong_set_learns_only_garbage():
    """Split view: sites 1, 2 are told {1,2,3}, site 3 is told {1,2,3,4}; each announcement is
    self-consistent (digest recomputed) so no site can tell, but the masks do not cancel."""
    _, roster, clients = _federation(4, policy_threshold=3)
    small = SecureSumAggregator(run_id="run-1", roster=roster, threshold=3)
    big = SecureSumAggregator(run_id="run-1", roster=roster, threshold=3)
    a_small = small.begin(round=0, step=0, participants=["site-1", "site-2", "site-3"], shape=SHAPE)
    a_big = big.begin(round=0, step=0, participants=list(clients), shape=SHAPE)
    grads = _grads(clients)
    small.accept("site-1", clients["site-1"].contribute(a_small, grads["site-1"]))
    small.accept("site-2", clients["site-2"].contribute(a_small, grads["site-2"]))
    wrong = clients["site-3"].contribute(a_big, grads["site-3"])
    with pytest.raises(ProtocolError) as exc:
        small.accept("site-3", wrong)
    assert exc.value.code == "secagg_set_mismatch"
    forged = dataclasses.replace(wrong, set_digest=a_small.set_digest)  # a cheating coordinator
    small.accept("site-3", forged)
    total = small.result()
    plain = sum(grads[i].double() for i in ("site-1", "site-2", "site-3")).numpy()
    assert np.abs(total - plain).max() > 1.0  # uniform garbage, nothing like the real sum


def test_site_refuses_stale_and_non_shrinking_retries_and_too_many_attempts():
    _, roster, clients = _federation(5, max_attempts=2)
    agg = SecureSumAggregator(run_id="run-1", roster=roster, max_attempts=5)
    c = clients["site-1"]
    ann0 = agg.begin(round=1, step=0, participants=["site-1", "site-2", "site-3", "site-4"], shape=SHAPE)
    for i in ("site-1", "site-2", "site-3"):
        agg.accept(i, clients[i].contribute(ann0, torch.zeros(SHAPE)))
    with pytest.raises(SecAggRefusal) as exc:
        c.contribute(ann0)
    assert exc.value.code == "secagg_stale_attempt"
    grown = SecureSumAggregator(run_id="run-1", roster=roster)
    grown.begin(round=1, step=0, participants=list(clients), shape=SHAPE)
    grown._ctx = dataclasses.replace(grown._ctx, attempt=1)  # coordinator adds site-5 on a retry
    with pytest.raises(SecAggRefusal) as exc:
        c.contribute(grown._ctx.announce())
    assert exc.value.code == "secagg_set_not_shrinking"
    ann1 = agg.retry()
    assert [p[0] for p in ann1.participants] == ["site-1", "site-2", "site-3"]
    for i in ("site-1", "site-2", "site-3"):
        agg.accept(i, clients[i].contribute(ann1))
    ann2 = agg.retry()
    with pytest.raises(SecAggRefusal) as exc:
        c.contribute(ann2)
    assert exc.value.code == "secagg_too_many_attempts"
    old = SecureSumAggregator(run_id="run-1", roster=roster)
    with pytest.raises(SecAggRefusal) as exc:
        c.contribute(old.begin(round=0, step=5, participants=list(clients), shape=SHAPE), torch.zeros(SHAPE))
    assert exc.value.code == "secagg_stale_round"


def test_aggregator_validation_and_quorum_loss():
    _, roster, clients = _federation(4)
    agg = SecureSumAggregator(run_id="run-1", roster=roster, max_attempts=3)
    with pytest.raises(ProtocolError, match="secagg_no_round"):
        agg.retry()
    with pytest.raises(ConfigError):
        agg.begin(round=0, step=0, participants=["site-1", "site-1", "site-2"], shape=SHAPE)
    with pytest.raises(ConfigError):
        agg.begin(round=0, step=0, participants=["site-1", "nobody"], shape=SHAPE)
    with pytest.raises(SecAggRoundFailed) as exc:
        agg.begin(round=0, step=0, participants=["site-1", "site-2"], shape=SHAPE)
    assert exc.value.code == "secagg_quorum_lost"
    ann = agg.begin(round=0, step=0, participants=list(clients), shape=SHAPE)
    m = clients["site-1"].contribute(ann, torch.zeros(SHAPE))
    with pytest.raises(ProtocolError, match="secagg_not_a_participant"):
        agg.accept("site-9", m)
    for bad in (m.masked.to(torch.float32), m.masked.to(torch.int64), m.masked[:-1], m.masked.reshape(2, -1),
                m.masked[..., :-1]):
        with pytest.raises(ProtocolError, match="secagg_bad_vector"):
            agg.accept("site-1", dataclasses.replace(m, masked=bad))
    with pytest.raises(ProtocolError, match="secagg_bad_attempt"):
        agg.accept("site-1", dataclasses.replace(m, attempt=1))
    agg.accept("site-1", m)
    with pytest.raises(ProtocolError, match="replay"):
        agg.accept("site-1", m)
    agg.refused("site-2", "budget_exhausted")
    assert agg.missing == ("site-3", "site-4")
    with pytest.raises(SecAggRoundFailed) as exc:
        agg.retry()  # only site-1 left
    assert exc.value.code == "secagg_quorum_lost"


def test_client_requires_its_own_key_in_the_manifest():
    keys, roster, _ = _federation(3)
    with pytest.raises(ConfigError, match="x25519_public"):
        SecureSumClient(site_id="site-1", agreement_key=_key(99), roster=roster, run_id="r")
    with pytest.raises(ConfigError, match="invalid"):
        SecureSumClient(site_id="site-1", agreement_key=keys["site-1"], roster={**roster, "site-2": "00"}, run_id="r")


def test_distributed_noise_sums_to_the_full_noise_with_slack():
    n, t, sigma = 4, 3, 0.5
    _, roster, clients = _federation(n, policy_threshold=t)
    agg = SecureSumAggregator(run_id="run-1", roster=roster, threshold=t)
    shape = (20000,)
    ann = agg.begin(round=0, step=0, participants=list(clients), shape=shape)
    share = noise_share_std(sigma, threshold=t)
    for idx, (i, c) in enumerate(clients.items()):
        gen = torch.Generator().manual_seed(100 + idx)
        agg.accept(i, c.contribute(ann, torch.zeros(shape), noise_std=share, generator=gen))
    total = agg.result()
    statement = distributed_noise_statement(sigma_total=sigma, threshold=t, participants=n)
    assert statement["variance_slack"] == pytest.approx(n / t)
    assert "coordinator follows" in statement["assumption"]
    assert total.std() == pytest.approx(statement["sigma_effective"], rel=0.03)
    assert total.std() > sigma
    with pytest.raises(ConfigError, match="Generator"):
        clients["site-1"].contribute(agg.begin(round=1, step=0, participants=list(clients), shape=shape),
                                     torch.zeros(shape), noise_std=share)

"""Statistical checks (fixed seeds) that masked vectors hide their inputs:
- one masked vector is uniform on Z_{2^k} (chi-square on byte buckets, per-bit frequencies) and
  uncorrelated with its input; its distribution does not depend on the input;
- the sum of any proper subset of one attempt's masked vectors is uniform and uncorrelated with
  every input, while the full set's sum is not (the checks have power);
- the partial vectors of a failed attempt, alone or next to the retry's vectors, are uniform.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from scipy import stats

from secgan.keys.agreement import public_hex
from secgan.secagg import SecureSumAggregator, SecureSumClient
from secgan.secagg.packing import unpack_words

N = 1 << 15
P_MIN = 1e-4
IDS = ("site-1", "site-2", "site-3", "site-4")
KEYS = {i: X25519PrivateKey.from_private_bytes(hashlib.sha256(i.encode() + b"/uniform").digest()) for i in IDS}
ROSTER = {i: public_hex(k) for i, k in KEYS.items()}


def _inputs(seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 40 * np.pi, N)
    # strongly structured inputs: a sinusoid, a ramp, sparse spikes, a constant
    return {
        "site-1": 30 * np.sin(t),
        "site-2": np.linspace(-60, 60, N),
        "site-3": np.where(rng.random(N) < 0.01, 50.0, 0.0),
        "site-4": np.full(N, 12.5),
    }


def _attempt(values, *, ids=IDS, round_=0, drop=()):
    clients = {i: SecureSumClient(site_id=i, agreement_key=KEYS[i], roster=ROSTER, run_id="u") for i in IDS}
    agg = SecureSumAggregator(run_id="u", roster=ROSTER)
    ann = agg.begin(round=round_, step=0, participants=list(ids), shape=(N,))
    masked = {}
    for i in ids:
        if i not in drop:
            m = clients[i].contribute(ann, torch.from_numpy(values[i]))
            agg.accept(i, m)
            masked[i] = unpack_words(m.masked.numpy(), (N,), ann.modulus_bits)  # the ring words it carries
    return agg, clients, masked, ann.modulus_bits


def _top_byte(v: np.ndarray, k: int) -> np.ndarray:
    return ((v >> np.uint64(k - 8)) & np.uint64(0xFF)).astype(np.int64)


def _assert_uniform(v: np.ndarray, k: int) -> None:
    for buckets in (_top_byte(v, k), (v & np.uint64(0xFF)).astype(np.int64)):
        counts = np.bincount(buckets, minlength=256)
        assert stats.chisquare(counts).pvalue > P_MIN
    ones = np.array([np.count_nonzero((v >> np.uint64(b)) & np.uint64(1)) for b in range(k)])
    z = (ones - N / 2) / np.sqrt(N / 4)
    assert np.max(np.abs(z)) < 4.5
    assert np.all(v < (1 << k))


def _assert_uncorrelated(v: np.ndarray, k: int, x: np.ndarray) -> None:
    if np.ptp(x) == 0:
        return
    r = np.corrcoef(v.astype(np.float64) / 2.0**k, x)[0, 1]
    assert abs(r) < 4.5 / np.sqrt(N)


def test_single_masked_vector_is_uniform_and_uncorrelated():
    values = _inputs()
    _, _, masked, k = _attempt(values)
    for i in IDS:
        _assert_uniform(masked[i], k)
        for j in IDS:
            _assert_uncorrelated(masked[i], k, values[j])


def test_masked_distribution_does_not_depend_on_the_input():
    zero = {i: np.zeros(N) for i in IDS}
    _, _, m_zero, k = _attempt(zero, round_=1)
    _, _, m_struct, _ = _attempt(_inputs(), round_=2)
    for i in IDS:
        table = np.stack([np.bincount(_top_byte(m_zero[i], k), minlength=256),
                          np.bincount(_top_byte(m_struct[i], k), minlength=256)])
        assert stats.chi2_contingency(table).pvalue > P_MIN


def test_any_proper_subset_reveals_nothing_but_the_full_set_does():
    values = _inputs()
    agg, _, masked, k = _attempt(values)
    codec = agg.context.codec
    for size in range(1, len(IDS)):
        for subset in itertools.combinations(IDS, size):
            s = np.zeros(N, dtype=np.uint64)
            for i in subset:
                s = codec.add(s, masked[i])
            _assert_uniform(s, k)
            for i in IDS:
                _assert_uncorrelated(s, k, values[i])
    full = agg.result()
    plain = sum(np.clip(values[i], -64, 64) for i in IDS)
    assert np.abs(full - plain).max() <= agg.quantisation_bound()
    with pytest.raises(AssertionError):  # the same checks detect the unmasked sum
        _assert_uniform(codec.encode(full), k)


def test_failed_attempt_partials_and_retry_reveal_nothing():
    values = _inputs()
    agg, clients, partial, k = _attempt(values, drop=("site-4",))
    codec = agg.context.codec
    s = np.zeros(N, dtype=np.uint64)
    for v in partial.values():
        s = codec.add(s, v)
    _assert_uniform(s, k)
    _assert_uncorrelated(s, k, values["site-1"] + values["site-2"] + values["site-3"])
    ann = agg.retry()
    retry = {}
    for i in partial:
        m = clients[i].contribute(ann)
        agg.accept(i, m)
        retry[i] = unpack_words(m.masked.numpy(), (N,), ann.modulus_bits)
    k1 = ann.modulus_bits
    for i in partial:
        # same value under two attempts: the two masked vectors are still unrelated
        low = min(k, k1)
        diff = (retry[i] - partial[i]) & np.uint64((1 << low) - 1)
        _assert_uniform(diff, low)
    plain = sum(np.clip(values[i], -64, 64) for i in partial)
    assert np.abs(agg.result() - plain).max() <= agg.quantisation_bound()

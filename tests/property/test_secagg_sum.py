"""Property: after masking, dropouts and retries, the unmasked sum equals the plain sum of the
clipped inputs of the sites that delivered, within the documented quantisation bound
n * 2^-(f+1) per coordinate."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from secgan.keys.agreement import public_hex
from secgan.secagg import SecureSumAggregator, SecureSumClient

KEYS = {f"s{i}": X25519PrivateKey.from_private_bytes(hashlib.sha256(b"prop%d" % i).digest()) for i in range(7)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(2, 7),
    length=st.integers(1, 24),
    clip=st.sampled_from([0.5, 4.0, 64.0]),
    frac_bits=st.integers(4, 40),
)
def test_unmasked_sum_matches_plain_sum_within_bound(data, n, length, clip, frac_bits):
    ids = sorted(KEYS)[:n]
    roster = {i: public_hex(KEYS[i]) for i in ids}
    threshold = 2
    clients = {i: SecureSumClient(site_id=i, agreement_key=KEYS[i], roster=roster, run_id="p",
                                  policy_threshold=threshold) for i in ids}
    agg = SecureSumAggregator(run_id="p", roster=roster, threshold=threshold, clip=clip, frac_bits=frac_bits,
                              noise_allowance=0.0)
    values = {i: data.draw(arrays(np.float64, (length,), elements=st.floats(-100, 100, allow_nan=False)))
              for i in ids}
    # a sequence of dropout waves, each leaving at least the threshold
    alive = list(ids)
    ann = agg.begin(round=0, step=0, participants=alive, shape=(length,))
    first = True
    while True:
        max_drop = len(alive) - threshold
        drop = data.draw(st.lists(st.sampled_from(alive), max_size=max_drop, unique=True)) if max_drop else []
        if agg.context.attempt + 1 >= agg.max_attempts:
            drop = []
        for i in alive:
            if i not in drop:
                grad = torch.from_numpy(values[i]) if first else None
                if not first and clients[i].needs_gradient(ann):
                    grad = torch.from_numpy(values[i])
                agg.accept(i, clients[i].contribute(ann, grad))
        first = False
        if agg.complete:
            break
        alive = [i for i in alive if i not in drop]
        ann = agg.retry()
    total = agg.result()
    plain = np.clip(np.stack([values[i] for i in alive]), -clip, clip).sum(axis=0)
    bound = len(alive) * 2.0 ** -(frac_bits + 1)
    assert agg.quantisation_bound() == bound
    float_slack = 8 * np.finfo(np.float64).eps * len(alive) * clip  # float64 reference sum
    assert np.all(np.abs(total - plain) <= bound + float_slack)
    assert agg.stats.participants == len(alive)

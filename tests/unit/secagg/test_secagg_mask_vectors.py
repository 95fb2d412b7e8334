"""Mask expansion keeps its outputs: known answers pinned from the implementation before it was
vectorised (tests/vectors/secagg_mask_expansion.json), and the current code against a plain
reference (one keystream per pair, read as little-endian words, masked, summed) on random inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from secgan.secagg.kdf import pair_key, shared_secret
from secgan.secagg.masking import pairwise_mask
from secgan.secagg.prg import expand_mask, keystream

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "secagg_mask_expansion.json").read_text())
SITES = {f"site-{i:02d}": X25519PrivateKey.from_private_bytes(hashlib.sha256(b"secgan-mask-site-%d" % i).digest())
         for i in range(6)}


def _sha(words: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(words, dtype="<u8").tobytes()).hexdigest()


def _key(i: int) -> bytes:
    return hashlib.sha256(b"secgan-mask-vector-%d" % i).digest()


@pytest.mark.parametrize("case", VECTORS["expand"], ids=lambda c: f"n{c['n_words']}-k{c['modulus_bits']}")
def test_expand_mask_known_answers(case):
    words = expand_mask(_key(case["key"]), case["n_words"], case["modulus_bits"])
    assert words.dtype == np.uint64 and words.shape == (case["n_words"],)
    assert [int(x) for x in words[:8]] == case["head"]
    assert _sha(words) == case["sha256"]


@pytest.mark.parametrize("case", VECTORS["pairwise"], ids=lambda c: f"ctx{c['context']}-{c['site']}")
def test_pairwise_mask_known_answers(case):
    digest = hashlib.sha256(b"secgan-mask-context-%d" % case["context"]).digest()
    peers = {p: SITES[p].public_key() for p in case["members"]}
    mask = pairwise_mask(own_id=case["site"], own_key=SITES[case["site"]], peers=peers, context_digest=digest,
                         n_words=case["n_words"], modulus_bits=case["modulus_bits"])
    assert mask.dtype == np.uint64 and mask.shape == (case["n_words"],)
    assert [int(x) for x in mask[:8]] == case["head"]
    assert _sha(mask) == case["sha256"]


def test_pinned_masks_of_a_context_cancel():
    for c in {case["context"] for case in VECTORS["pairwise"]}:
        cases = [case for case in VECTORS["pairwise"] if case["context"] == c]
        k, n = cases[0]["modulus_bits"], cases[0]["n_words"]
        digest = hashlib.sha256(b"secgan-mask-context-%d" % c).digest()
        total = np.zeros(n, dtype=np.uint64)
        for case in cases:
            peers = {p: SITES[p].public_key() for p in case["members"]}
            total += pairwise_mask(own_id=case["site"], own_key=SITES[case["site"]], peers=peers,
                                   context_digest=digest, n_words=n, modulus_bits=k)
        assert not np.any(total & np.uint64((1 << k) - 1))


def reference_mask(own_id, own_key, peers, digest, n_words, k):
    """The definition, one pair at a time: M_i = sum_{j > i} PRG(k_ij) - sum_{j < i} PRG(k_ij) mod 2^k."""
    out = [0] * n_words
    for peer in sorted(peers):
        if peer == own_id:
            continue
        key = pair_key(shared_secret(own_key, peers[peer]), id_a=own_id, id_b=peer, context_digest=digest)
        raw = keystream(key, 8 * n_words)
        sign = 1 if peer > own_id else -1
        for i in range(n_words):
            out[i] += sign * (int.from_bytes(raw[8 * i:8 * i + 8], "little") % (1 << k))
    return np.array([v % (1 << k) for v in out], dtype=np.uint64)


@settings(max_examples=40, deadline=None)
@given(members=st.integers(2, 6), n_words=st.integers(1, 300), k=st.integers(2, 63), seed=st.binary(min_size=32, max_size=32))
def test_pairwise_mask_equals_the_reference(members, n_words, k, seed):
    ids = sorted(SITES)[:members]
    peers = {p: SITES[p].public_key() for p in ids}
    for own in ids:
        got = pairwise_mask(own_id=own, own_key=SITES[own], peers=peers, context_digest=seed, n_words=n_words,
                            modulus_bits=k)
        assert np.array_equal(got, reference_mask(own, SITES[own], peers, seed, n_words, k))


@settings(max_examples=40, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), n_words=st.integers(0, 2000), k=st.integers(1, 64))
def test_expand_mask_equals_the_reference(key, n_words, k):
    raw = keystream(key, 8 * n_words)
    want = [int.from_bytes(raw[8 * i:8 * i + 8], "little") % (1 << k) for i in range(n_words)]
    assert expand_mask(key, n_words, k).tolist() == want

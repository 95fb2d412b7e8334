"""Masked vectors on the wire at the ring's width (protocol 3): a site's SecAggMasked carries its
words packed to the attempt's k bits, through the real codec to the aggregator; every check the
receiver makes (length, unused bits, what a word may be, the version) refuses what breaks it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from secgan.core.errors import ProtocolError
from secgan.keys.agreement import public_hex
from secgan.net import codec
from secgan.net.schema import PROTOCOL_VERSION, SUPPORTED_VERSIONS, SecAggMasked
from secgan.secagg import SecureSumAggregator, SecureSumClient
from secgan.secagg.packing import PackingError, pack_words, packed_shape, unpack_words


def _federation(n: int, **agg_kw):
    keys = {f"site-{i}": X25519PrivateKey.from_private_bytes(hashlib.sha256(b"wire%d" % i).digest())
            for i in range(1, n + 1)}
    roster = {k: public_hex(v) for k, v in keys.items()}
    clients = {k: SecureSumClient(site_id=k, agreement_key=v, roster=roster, run_id="run-w") for k, v in keys.items()}
    return clients, SecureSumAggregator(run_id="run-w", roster=roster, **agg_kw)


def _wire(msg: SecAggMasked) -> list:
    return codec.encode(msg, run_id=msg.run_id, round=msg.round, step=msg.step, site="site-1", seq=1)


def _through_the_codec(msg: SecAggMasked) -> SecAggMasked:
    return codec.decode([bytes(f) for f in _wire(msg)])[1]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 5), lead=st.lists(st.integers(1, 4), max_size=2), width=st.integers(1, 40),
       frac_bits=st.sampled_from([4, 16, 32]), seed=st.integers(0, 2**32 - 1))
def test_packed_round_trip_through_the_codec(n, lead, width, frac_bits, seed):
    clients, agg = _federation(n, frac_bits=frac_bits)
    shape = (*lead, width)
    gen = torch.Generator().manual_seed(seed)
    grads = {i: torch.randn(shape, generator=gen, dtype=torch.float64) for i in clients}
    ann = agg.begin(round=1, step=0, participants=list(clients), shape=shape)
    k = ann.modulus_bits
    for i, c in clients.items():
        sent = c.contribute(ann, grads[i])
        assert sent.masked.dtype == torch.uint8 and tuple(sent.masked.shape) == packed_shape(shape, k)
        assert sent.masked.shape[-1] == math.ceil(width * k / 8)  # k bits a word, not 64
        agg.accept(i, _through_the_codec(sent))
    total = agg.result()
    plain = sum(np.clip(g.numpy(), -agg.clip, agg.clip) for g in grads.values())
    assert np.abs(total - plain).max() <= agg.quantisation_bound()
    tensor_bytes = n * math.prod(packed_shape(shape, k))  # what the statistics count: packed bytes + headers
    assert tensor_bytes < agg.stats.bytes_up < tensor_bytes + n * 400


def _one_contribution(shape=(3, 5)):
    clients, agg = _federation(3)
    ann = agg.begin(round=1, step=0, participants=list(clients), shape=shape)
    return agg, ann, clients["site-1"].contribute(ann, torch.zeros(shape))


def _refused(agg, msg) -> ProtocolError:
    with pytest.raises(ProtocolError) as exc:
        agg.accept("site-1", _through_the_codec(msg))
    return exc.value


def test_a_vector_of_the_wrong_length_is_refused():
    agg, ann, m = _one_contribution()
    for bad in (m.masked[..., :-1], torch.cat([m.masked, m.masked[..., :1]], dim=-1), m.masked[:-1],
                m.masked.reshape(-1)):
        err = _refused(agg, dataclasses.replace(m, masked=bad.contiguous()))
        assert err.code == "secagg_bad_vector" and "shape" in err.detail
    agg.accept("site-1", _through_the_codec(m))  # the untouched vector is still accepted


def test_a_set_unused_bit_is_refused():
    agg, ann, m = _one_contribution()  # 5 words of 44 bits: 220 bits in 28 bytes, the top 4 bits unused
    assert ann.modulus_bits == 44 and m.masked.shape[-1] == 28
    for row in range(3):
        bad = m.masked.clone()
        bad[row, -1] |= 0x80
        err = _refused(agg, dataclasses.replace(m, masked=bad))
        assert err.code == "secagg_bad_vector" and "unused bits" in err.detail


def test_a_word_outside_the_ring_cannot_be_sent_or_received():
    # the sender: a word of k + 1 bits is never packed
    with pytest.raises(PackingError, match="below 2\\^46"):
        pack_words(np.array([[1 << 46, 0]], dtype=np.uint64), 46)
    # the receiver: 64-bit words (protocol 2's int64 form) are refused by the codec and by the aggregator
    agg, ann, m = _one_contribution()
    words = unpack_words(m.masked.numpy(), (3, 5), ann.modulus_bits)
    words[0, 0] |= np.uint64(1 << 50)
    wide = dataclasses.replace(m, masked=torch.from_numpy(words.view(np.int64)))
    with pytest.raises(ProtocolError) as exc:
        _wire(wide)
    assert exc.value.code == "bad_dtype"
    with pytest.raises(ProtocolError) as exc:
        agg.accept("site-1", wide)
    assert exc.value.code == "secagg_bad_vector"


def test_a_version_2_peer_is_refused_not_summed():
    assert PROTOCOL_VERSION == 3 and SUPPORTED_VERSIONS == (3,)
    agg, ann, m = _one_contribution()
    # protocol 2's message: the same header under "v": 2 and int64 words
    words = unpack_words(m.masked.numpy(), (3, 5), ann.modulus_bits).view(np.int64)
    frames = _wire(m)
    header = json.loads(bytes(frames[0]))
    header["v"] = 2
    header["tensors"][0].update(dtype="int64", shape=[3, 5], nbytes=words.nbytes)
    with pytest.raises(ProtocolError) as exc:
        codec.decode([json.dumps(header).encode(), words.tobytes()])
    assert exc.value.code == "unsupported_version"
    # and protocol 3 bytes under a version 2 header are not read either
    header = json.loads(bytes(frames[0]))
    header["v"] = 2
    with pytest.raises(ProtocolError) as exc:
        codec.decode([json.dumps(header).encode(), bytes(frames[1])])
    assert exc.value.code == "unsupported_version"

"""Ring words packed to k bits: known answers, round trips (hypothesis), one refusal per parameter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secgan.core.errors import ProtocolError
from secgan.secagg.packing import PackingError, pack_words, packed_shape, unpack_words


def reference_pack(words: np.ndarray, k: int) -> np.ndarray:
    """The layout written out bit by bit: word i of a row at bits [i*k, (i+1)*k), little-endian."""
    rows = words.reshape(-1, words.shape[-1])
    out = []
    for row in rows:
        acc = 0
        for i, w in enumerate(row):
            acc |= int(w) << (i * k)
        out.append(list(acc.to_bytes((len(row) * k + 7) // 8, "little")))
    return np.array(out, dtype=np.uint8).reshape(*words.shape[:-1], -1)


def test_known_answers():
    # k = 4: two words a byte, the first in the low nibble
    assert pack_words(np.array([1, 2, 15], dtype=np.uint64), 4).tolist() == [0x21, 0x0F]
    # k = 12: 0xABC, 0x123 -> bytes BC 3A 12
    assert pack_words(np.array([0xABC, 0x123], dtype=np.uint64), 12).tolist() == [0xBC, 0x3A, 0x12]
    # k = 44, one word: 5.5 bytes, the high nibble of byte 5 unused (zero)
    w = np.array([(1 << 44) - 1], dtype=np.uint64)
    assert pack_words(w, 44).tolist() == [0xFF] * 5 + [0x0F]
    # k = 63 keeps every bit of a 63-bit word (straddles the 8-byte window)
    w = np.array([(1 << 63) - 1, 1, 0, 5, (1 << 62) + 3, 7, 9, 11, 13], dtype=np.uint64)
    assert np.array_equal(pack_words(w, 63), reference_pack(w, 63))
    # rows are packed separately: the last axis only
    w = np.arange(6, dtype=np.uint64).reshape(2, 3)
    assert pack_words(w, 3).tolist() == [[0b10001000, 0b0], [0b01100011, 0b1]]


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 63), st.lists(st.integers(1, 20), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_round_trip_and_layout(k, shape, seed):
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 1 << k, size=shape, dtype=np.uint64, endpoint=False)
    packed = pack_words(words, k)
    assert packed.dtype == np.uint8 and packed.shape == packed_shape(tuple(shape), k)
    assert packed.shape[-1] == (shape[-1] * k + 7) // 8  # exactly the ring's width, per row
    assert np.array_equal(packed, reference_pack(words, k))
    assert np.array_equal(unpack_words(packed, tuple(shape), k), words)


@pytest.mark.parametrize("k", [1, 64, 0, -3, 2.0, True, None])
def test_k_out_of_range_is_refused(k):
    with pytest.raises(PackingError, match="ring width"):
        pack_words(np.zeros(4, dtype=np.uint64), k)
    with pytest.raises(PackingError, match="ring width"):
        unpack_words(np.zeros(4, dtype=np.uint8), (4,), k)


def test_length_and_shape_mismatch_is_refused():
    packed = pack_words(np.arange(10, dtype=np.uint64), 44)  # 55 bytes
    for bad in (packed[:-1], np.concatenate([packed, [0]]).astype(np.uint8), packed.reshape(5, 11)):
        with pytest.raises(PackingError, match="shape") as exc:
            unpack_words(bad, (10,), 44)
        assert isinstance(exc.value, ProtocolError) and exc.value.code == "secagg_bad_vector"
    with pytest.raises(PackingError, match="shape"):
        unpack_words(packed, (11,), 44)  # announced another length
    with pytest.raises(PackingError, match="uint8"):
        unpack_words(packed.astype(np.int64), (10,), 44)


def test_trailing_bits_set_are_refused():
    packed = pack_words(np.arange(3, dtype=np.uint64), 44)  # 132 bits: 4 unused in the last byte
    for bit in range(4, 8):
        bad = packed.copy()
        bad[-1] |= np.uint8(1 << bit)
        with pytest.raises(PackingError, match="unused bits"):
            unpack_words(bad, (3,), 44)
    rows = pack_words(np.arange(6, dtype=np.uint64).reshape(2, 3), 44)
    rows[0, -1] |= 0x80  # a row that is not the last one
    with pytest.raises(PackingError, match="unused bits"):
        unpack_words(rows, (2, 3), 44)


def test_words_outside_the_ring_are_refused():
    with pytest.raises(PackingError, match="below 2\\^44"):
        pack_words(np.array([1 << 44], dtype=np.uint64), 44)
    with pytest.raises(PackingError, match="uint64"):
        pack_words(np.array([1], dtype=np.int64), 44)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 63), st.integers(1, 3), st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_wide_rows_round_trip_against_the_reference(k, rows, width, seed):
    # several periods of the layout a row, rows that end on a byte boundary (packed as one run) or not
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 1 << k, size=(rows, width), dtype=np.uint64, endpoint=False)
    words[0, 0] = (1 << k) - 1  # every bit of a word set
    packed = pack_words(words, k)
    assert np.array_equal(packed, reference_pack(words, k))
    assert np.array_equal(unpack_words(packed, (rows, width), k), words)

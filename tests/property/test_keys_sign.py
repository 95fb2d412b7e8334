"""Hypothesis: signed JSON round-trips and any change to the signed object is caught."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secgan.core.errors import CryptoError
from secgan.keys.curve import is_z85_key
from secgan.keys.signing import canonical_json, generate_signing_key, sign_json, verify_json

KEY = generate_signing_key()
OTHER = generate_signing_key()

leaf = (st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20))
values = st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=25)
objects = st.dictionaries(st.text(max_size=8).filter(lambda k: k != "signature"), values, max_size=6)


@settings(max_examples=50, deadline=None)
@given(objects)
def test_sign_verify_round_trip_through_json_text(obj):
    signed = sign_json(obj, KEY)
    text = json.dumps(signed, indent=1, ensure_ascii=True)  # any formatting of the same JSON
    assert verify_json(json.loads(text), KEY.public_key()) == json.loads(canonical_json(obj))
    with pytest.raises(CryptoError):
        verify_json(signed, OTHER.public_key())


@settings(max_examples=50, deadline=None)
@given(objects, st.text(max_size=8).filter(lambda k: k != "signature"), values)
def test_any_change_is_detected(obj, k, v):
    signed = sign_json(obj, KEY)
    changed = copy.deepcopy(signed)
    changed[k] = v
    if k in obj and canonical_json(obj[k]) == canonical_json(v):
        return  # not a change
    with pytest.raises(CryptoError, match="^signature verification failed$"):
        verify_json(changed, KEY.public_key())


@settings(max_examples=60, deadline=None)
@given(values)
def test_verify_never_raises_anything_else(junk):
    with pytest.raises(CryptoError):
        verify_json(junk, KEY.public_key())
    with pytest.raises(CryptoError):
        verify_json({"a": 1, "signature": junk}, KEY.public_key())


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=60))
def test_z85_validation(raw):
    text = raw.decode("latin-1").encode("utf-8", "replace")
    if is_z85_key(text):
        from zmq.utils import z85

        assert len(z85.decode(text)) == 32

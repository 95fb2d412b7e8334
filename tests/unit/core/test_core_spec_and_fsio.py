from __future__ import annotations

import io
import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from secgan.core.fsio import atomic_write_bytes, atomic_write_json
from secgan.core.logs import get_logger, setup_logging
from secgan.core.spec import ImageSpec, decode_condition, encode_condition


@given(
    arrays(np.int16, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.sampled_from([0, 1, 2, 4])),
    st.data(),
)
def test_condition_round_trip(seg: np.ndarray, data: st.DataObject) -> None:
    brain = data.draw(arrays(np.bool_, seg.shape))
    cond = encode_condition(seg, brain)
    assert cond.dtype == np.float32 and cond.shape == (4,) + seg.shape
    # tumour channels are disjoint and inside the brain channel
    assert (cond[1:].sum(axis=0) <= 1).all()
    assert (cond[1:].max(axis=0) <= cond[0]).all()
    seg2, brain2 = decode_condition(cond)
    np.testing.assert_array_equal(seg2, seg)
    np.testing.assert_array_equal(brain2, brain | (seg > 0))


def test_condition_shape_errors() -> None:
    with pytest.raises(ValueError):
        encode_condition(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError):
        decode_condition(np.zeros((3, 4, 4)))


def test_image_spec_validates() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        ImageSpec(size=40)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]
    with pytest.raises(ValueError):
        atomic_write_json(target, {"a": float("nan")})
    assert json.loads(target.read_text()) == {"a": 2}  # a failed write leaves the old content


def test_atomic_writes_default_to_0644(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        atomic_write_bytes(tmp_path / "pub", b"y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "pub").stat().st_mode) == 0o644


def test_logs_redact_secrets_and_payloads() -> None:
    buf = io.StringIO()
    setup_logging("INFO", as_json=True, stream=buf)
    try:
        get_logger("t").info("evt", secret_key="abc", payload=b"123", step=3, patient="P1", arr=np.zeros((2, 2)))
    finally:
        setup_logging("WARNING")
    line = json.loads(buf.getvalue())
    assert line["event"] == "evt" and line["step"] == 3
    assert line["secret_key"] == "<redacted>" and line["patient"] == "<redacted>"
    assert line["payload"] == "<redacted>"
    assert line["arr"] == "<array (2, 2)>"
    assert "abc" not in buf.getvalue() and "P1" not in buf.getvalue()
    logging.getLogger().handlers.clear()

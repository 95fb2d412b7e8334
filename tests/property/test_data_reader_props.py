"""Hypothesis: reader validation accepts exactly what it should (labels, shapes) and the volume
normaliser keeps its contract for arbitrary inputs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from secgan.data.brats import CaseError, ReaderLimits, open_checked, read_labels
from secgan.data.slicing import normalise_volume

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _write(d: str, data: np.ndarray, suffix: str = ".nii.gz") -> Path:
    p = Path(d) / f"x{suffix}"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(p))
    return p


@FAST
@given(
    values=st.lists(st.integers(-3, 9), min_size=1, max_size=6),
    dtype=st.sampled_from([np.uint8, np.int16, np.int32, np.float32]),
    seed=st.integers(0, 2**16),
)
def test_labels_accepted_iff_brats_subset(values, dtype, seed):
    if np.dtype(dtype).kind == "u":
        values = [abs(v) for v in values]
    arr = np.random.default_rng(seed).choice(np.array(values), size=(8, 8, 8)).astype(dtype)
    present = set(np.unique(arr).tolist())
    with tempfile.TemporaryDirectory() as d:
        p = _write(d, arr, ".nii")
        try:
            seg = read_labels(p, open_checked(p))
        except CaseError as exc:
            seg = exc
    if isinstance(seg, CaseError):
        exc = seg
        assert not present <= {0, 1, 2, 4}
        assert "labels outside" in str(exc) and str(p) in str(exc)
    else:
        assert present <= {0, 1, 2, 4}
        assert seg.dtype == np.int16 and np.array_equal(seg, arr.astype(np.int16))


@FAST
@given(shape=st.lists(st.integers(1, 12), min_size=2, max_size=4))
def test_shapes_accepted_iff_3d_within_limits(shape):
    limits = ReaderLimits(min_dim=4, max_dim=10)
    ok = len(shape) == 3 and all(4 <= n <= 10 for n in shape)
    with tempfile.TemporaryDirectory() as d:
        p = _write(d, np.zeros(tuple(shape), np.int16), ".nii")
        try:
            img = open_checked(p, limits)
        except CaseError as exc:
            assert not ok, str(exc)
            assert str(p) in str(exc)
        else:
            assert ok and tuple(img.shape) == tuple(shape)


@FAST
@given(
    vol=hnp.arrays(np.float32, (6, 5, 4), elements=st.floats(-1e6, 1e6, width=32)),
    mask=hnp.arrays(np.bool_, (6, 5, 4)),
)
def test_normalise_volume_contract(vol, mask):
    out = normalise_volume(vol, mask)
    assert out.dtype == np.float32 and out.shape == vol.shape
    assert np.all(np.isfinite(out))
    assert np.all(out >= -1.0) and np.all(out <= 1.0)
    assert np.all(out[~mask] == -1.0)
    # Monotone: a brighter voxel never maps darker.
    inside_v, inside_o = vol[mask], out[mask]
    order = np.argsort(inside_v, kind="stable")
    assert np.all(np.diff(inside_o[order]) >= -1e-6)


@FAST
@given(
    payload=st.binary(min_size=1, max_size=4000),
    cuts=st.lists(st.integers(0, 4000), max_size=3),
    level=st.sampled_from([0, 1, 6, 9]),
    flip=st.integers(0, 10**6),
    bit=st.integers(0, 7),
)
def test_gunzip_never_returns_damaged_bytes(payload, cuts, level, flip, bit):
    """Whole-stream reading: any (multi-member) gzip stream decodes to its payload, and one flipped
    bit anywhere past the member header either fails with a CaseError or (where it lands in a
    header field nothing reads) decodes to the very same payload, never to other bytes."""
    import gzip

    from secgan.data.brats import _gunzip_whole

    points = sorted({0, len(payload), *(c % (len(payload) + 1) for c in cuts)})
    stream = b"".join(gzip.compress(payload[a:b], compresslevel=level, mtime=0) for a, b in zip(points, points[1:]))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.nii.gz"
        p.write_bytes(stream)
        assert _gunzip_whole(p, len(payload) + 16) == payload
        damaged = bytearray(stream)
        i = 10 + flip % (len(stream) - 10)  # past the first member's fixed header
        damaged[i] ^= 1 << bit
        p.write_bytes(bytes(damaged))
        try:
            out = _gunzip_whole(p, len(payload) + 16)
        except CaseError:
            return
        assert out == payload

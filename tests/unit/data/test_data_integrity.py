"""Damaged compressed bytes anywhere in a .nii.gz are caught (the whole gzip stream is read, so
its CRC is checked); valid variants of the stream still load."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pytest

from secgan.core.errors import DataError
from secgan.data.brats import CaseError, read_case

from . import layout_fixtures as fx


@pytest.fixture()
def case(tmp_path: Path) -> Path:
    vols, seg = fx.patient(0)
    return fx.brats2021_case(tmp_path, "BraTS2021_00000", vols, seg)


def _flip(path: Path, n: int, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    start = int(len(data) * where)
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("level,seed,where", [(0, 0, 0.5), (0, 1, 0.3), (1, 2, 0.5), (1, 3, 0.5), (6, 0, 0.5),
                                              (6, 0, 0.8), (9, 1, 0.5)])
def test_64_flipped_bytes_mid_file_fail_with_a_clear_message(tmp_path: Path, level: int, seed: int, where: float):
    # Stored (level 0) and fast (level 1) deflate streams decode fine with flipped bytes: only the
    # CRC-32 in the trailer catches them, and a reader that stops after the voxels never reads it.
    vols, seg = fx.patient(seed)
    case = fx.brats2021_case(tmp_path, "BraTS2021_00000", vols, seg)
    p = case / "BraTS2021_00000_t1.nii.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()), compresslevel=level, mtime=0))
    _flip(p, 64, where)
    with pytest.raises(CaseError) as info:
        read_case(case)
    assert "BraTS2021_00000_t1.nii.gz" in str(info.value)
    assert "corrupt" in info.value.problem and "gzip" in info.value.problem


def test_flipped_bytes_in_the_crc_trailer_fail(case: Path):
    p = case / "BraTS2021_00000_seg.nii.gz"
    data = bytearray(p.read_bytes())
    data[-6] ^= 0x01  # inside the CRC-32 of the trailer: every voxel byte is intact
    p.write_bytes(bytes(data))
    with pytest.raises(CaseError, match="integrity check"):
        read_case(case)


def test_stream_cut_before_its_trailer_is_truncated(case: Path):
    p = case / "BraTS2021_00000_t2.nii.gz"
    p.write_bytes(p.read_bytes()[:-4])
    with pytest.raises(CaseError, match="truncated"):
        read_case(case)


def test_multi_member_and_zero_padded_streams_still_load(case: Path):
    p = case / "BraTS2021_00000_flair.nii.gz"
    raw = gzip.decompress(p.read_bytes())
    half = len(raw) // 2
    p.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + b"\0" * 512)
    c = read_case(case)
    vols, _ = fx.patient(0)
    assert np.array_equal(c.volumes["flair"], vols["flair"].astype(np.float32))


def test_garbage_after_the_last_member_is_refused(case: Path):
    p = case / "BraTS2021_00000_flair.nii.gz"
    p.write_bytes(p.read_bytes() + b"trailing junk")
    with pytest.raises(DataError, match="corrupt"):
        read_case(case)


def test_stream_larger_than_its_header_is_refused(case: Path):
    p = case / "BraTS2021_00000_t1ce.nii.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw + b"\0" * (3 << 20)))
    with pytest.raises(CaseError, match="exceeds"):
        read_case(case)


def test_zlib_is_what_checks(case: Path):
    # The fixture's stream is a plain gzip stream whose CRC matches its payload.
    raw = (case / "BraTS2021_00000_t1.nii.gz").read_bytes()
    payload = gzip.decompress(raw)
    assert int.from_bytes(raw[-8:-4], "little") == zlib.crc32(payload)

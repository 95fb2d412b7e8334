"""Small real image folders written through Pillow for the tile and ISIC reader tests."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def rgb(h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def instances(h: int = 16, w: int = 16) -> np.ndarray:
    inst = np.zeros((h, w), dtype=np.int32)
    inst[2:6, 2:6] = 1
    inst[8:13, 7:12] = 7
    return inst


def write_split(site: Path, train: list[str], test: list[str]) -> None:
    (site / "split.json").write_text(json.dumps({"train": train, "test": test}))


def tile_site(root: Path, cases: dict[str, int], *, size: int = 16) -> Path:
    """``root/images/<case>_tNN.png`` + ``root/masks/<case>_tNN.tif`` for ``cases`` (id -> tile count)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k, (case, n) in enumerate(cases.items()):
        for t in range(1, n + 1):
            Image.fromarray(rgb(size, size, seed=10 * k + t), mode="RGB").save(root / "images" / f"{case}_t{t:02d}.png")
            Image.fromarray(instances(size, size), mode="I").save(root / "masks" / f"{case}_t{t:02d}.tif")
    ids = sorted(cases)
    write_split(root, ids[:-1], ids[-1:])
    return root


def png_rgb16(path: Path, h: int = 16, w: int = 16) -> None:
    """A valid 16-bit-per-channel RGB PNG (Pillow cannot write one; Pillow reads it narrowed to 8 bits)."""
    raw = b"".join(b"\x00" + np.full((w, 3), 40000, ">u2").tobytes() for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def isic_site(root: Path, rows: list[tuple[str, str, str]], *, split: tuple[list[str], list[str]] | None = None,
              size: tuple[int, int] = (20, 16)) -> Path:
    """``root/images/<id>.png`` + ``root/labels.csv`` (image_name, patient_id, diagnosis) + split by patient."""
    (root / "images").mkdir(parents=True)
    for k, (image_id, _, _) in enumerate(rows):
        Image.fromarray(rgb(size[1], size[0], seed=k), mode="RGB").save(root / "images" / f"{image_id}.png")
    lines = ["image_name,patient_id,diagnosis"] + [",".join(r) for r in rows]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    patients = sorted({r[1] for r in rows})
    train, test = split if split is not None else (patients[:-1], patients[-1:])
    write_split(root, train, test)
    return root

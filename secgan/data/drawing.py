"""Small 2-D drawing helpers shared by the tile phantoms (nuclei, dermoscopy).

Every function takes its numpy Generator explicitly; nothing touches a global RNG.
"""

from __future__ import annotations

import numpy as np


def lowfreq(g: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """A smooth random field ``float32 [h, w]`` with unit-ish spread and structure ``cell`` pixels
    wide: Gaussian values on a coarse grid, bilinearly interpolated."""
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    coarse = g.standard_normal((gh, gw)).astype(np.float32)
    ys = np.arange(h, dtype=np.float32) / cell + 0.5
    xs = np.arange(w, dtype=np.float32) / cell + 0.5
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return (a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx).astype(np.float32)


def smooth3(img: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 blur along the first two axes (edge-replicated)."""
    out = np.asarray(img, dtype=np.float32)
    for axis in (0, 1):
        p = np.pad(out, [(1, 1) if a == axis else (0, 0) for a in range(out.ndim)], mode="edge")
        n = out.shape[axis]
        out = (np.take(p, range(0, n), axis=axis) + 2 * np.take(p, range(1, n + 1), axis=axis)
               + np.take(p, range(2, n + 2), axis=axis)) / 4.0
    return out.astype(np.float32)


def curve_mask(g: np.random.Generator, h: int, w: int, *, length: float, width: float) -> np.ndarray:
    """A thin random curved stroke (a hair, a vessel) as a soft coverage mask ``float32 [h, w]`` in [0, 1]."""
    y, x = g.uniform(0, h), g.uniform(0, w)
    angle = g.uniform(0, 2 * np.pi)
    bend = g.normal(0.0, 0.04)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cover = np.zeros((h, w), dtype=np.float32)
    for _ in range(max(2, int(length / 1.5))):
        d2 = (yy - y) ** 2 + (xx - x) ** 2
        cover = np.maximum(cover, np.clip(1.0 - (np.sqrt(d2) - width / 2.0), 0.0, 1.0))
        angle += bend
        y, x = y + 1.5 * np.sin(angle), x + 1.5 * np.cos(angle)
    return cover

"""Procedural H&E-like nuclei tiles, one "organ" per site, written in a MoNuSeg/Kumar-style layout.

AsynDGAN's second task is multi-organ nuclei segmentation: the sites are organs (breast, liver,
kidney, prostate) whose tiles differ in how the slide was stained and in what the nuclei look
like. This phantom reproduces those differences at the level a small GAN or U-Net cares about:

- colour by Beer-Lambert stain mixing: optical density = H * h_vec + E * e_vec, RGB = 255 exp(-OD),
  with the haematoxylin (nuclei, blue-purple) and eosin (stroma and cytoplasm, pink) vectors of
  Ruifrok and Johnston (2001) tilted per site, and per-site stain strengths (a lab's protocol and
  scanner); each slide (case) adds a small stain jitter of its own, as slides of one lab do;
- nuclei are irregular ellipses with chromatin texture, drawn without overlap (touching allowed):
  per-site density (nuclei per 10^4 pixels), mean radius, size spread and elongation, from the
  organ's row of :data:`ORGAN_LOOKS` (liver: large round nuclei, sparse; prostate: small dense
  elongated ones; breast and kidney between);
- a smooth eosin field with pale lumen-like gaps, Gaussian sensor noise.

Sites cycle through :data:`ORGANS` (site 1 breast, 2 liver, 3 kidney, 4 prostate, 5 breast ...),
each with its own draws. Labels are an instance map (int32, 0 = background, 1..n one id per
nucleus) from which :func:`instances_to_classes` derives the 3-class map the U-Net learns
(background, nucleus interior, boundary).

A "patient" is the slide's case: a case has several tiles. Every random draw comes from its own
numpy Generator: the site's stain from (seed, site), a slide's jitter from (seed, site, case), a
tile from (seed, site, case, tile), the split from (seed, site), each with its own tag, so one
tile does not depend on how many others are generated.

Layout written by :func:`write_nuclei_phantom` (read back by :mod:`secgan.data.tiles`)::

    out/site-K/images/<case>_t<NN>.png   RGB, 8 bit
    out/site-K/masks/<case>_t<NN>.tif    instance map, 32-bit integer TIFF
    out/site-K/split.json                {"train": [case ids], "test": [case ids]}
    out/site-K/phantom.json              what generated the folder

Case ids are obviously synthetic (``Site1-C001``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from secgan.data.drawing import lowfreq, smooth3

ORGANS = ("breast", "liver", "kidney", "prostate")
# Ruifrok & Johnston's optical-density stain vectors (unit length), RGB order.
_H_VEC = np.array([0.650, 0.704, 0.286], dtype=np.float32)
_E_VEC = np.array([0.072, 0.990, 0.105], dtype=np.float32)
# 3-class map values
BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2

_SITE_TAG = 0x4E0C
_CASE_TAG = 0x4E1A
_TILE_TAG = 0x4E71
_SPLIT_TAG = 0x4E5B


@dataclass(frozen=True)
class OrganLook:
    """What an organ's nuclei and stain look like on average (a row of :data:`ORGAN_LOOKS`)."""

    # nuclei per 10^4 pixels
    density: float
    # mean nucleus radius in pixels, and the sigma of its per-nucleus log-normal factor
    radius: float
    radius_spread: float
    # mean ratio of the long to the short axis
    elongation: float
    # stain strengths (optical density scale of haematoxylin in nuclei, of eosin in the stroma)
    haematoxylin: float
    eosin: float


ORGAN_LOOKS = {
    "breast": OrganLook(density=22.0, radius=4.2, radius_spread=0.20, elongation=1.35, haematoxylin=1.25, eosin=0.55),
    "liver": OrganLook(density=12.0, radius=5.2, radius_spread=0.12, elongation=1.10, haematoxylin=1.05, eosin=0.80),
    "kidney": OrganLook(density=28.0, radius=3.8, radius_spread=0.15, elongation=1.25, haematoxylin=1.40, eosin=0.65),
    "prostate": OrganLook(density=36.0, radius=3.2, radius_spread=0.18, elongation=1.60, haematoxylin=1.15, eosin=0.45),
}


@dataclass(frozen=True)
class SiteStain:
    """One site's organ, stain and nuclear statistics (drawn once per site)."""

    organ: str
    h_vec: np.ndarray  # [3] haematoxylin optical density per unit concentration
    e_vec: np.ndarray  # [3] eosin
    h_strength: float
    e_strength: float
    density: float
    radius: float
    radius_spread: float
    elongation: float
    noise: float  # sensor noise sigma in 8-bit units


def _tilted(g: np.random.Generator, vec: np.ndarray, spread: float) -> np.ndarray:
    v = np.clip(vec + g.normal(0.0, spread, size=3), 0.02, None)
    return (v / np.linalg.norm(v)).astype(np.float32)


def site_stain(seed: int, site: int) -> SiteStain:
    """Site ``site``'s (1-based) stain and nuclei, deterministic in (seed, site)."""
    organ = ORGANS[(site - 1) % len(ORGANS)]
    look = ORGAN_LOOKS[organ]
    g = np.random.default_rng([seed, site, _SITE_TAG])
    return SiteStain(
        organ=organ,
        h_vec=_tilted(g, _H_VEC, 0.06),
        e_vec=_tilted(g, _E_VEC, 0.06),
        h_strength=float(look.haematoxylin * g.uniform(0.9, 1.1)),
        e_strength=float(look.eosin * g.uniform(0.85, 1.15)),
        density=float(look.density * g.uniform(0.9, 1.1)),
        radius=float(look.radius * g.uniform(0.93, 1.07)),
        radius_spread=look.radius_spread,
        elongation=look.elongation,
        noise=float(g.uniform(2.0, 5.0)),
    )


def case_id(site: int, case: int) -> str:
    """Obviously synthetic slide case id, e.g. ``Site1-C007``."""
    return f"Site{site}-C{case:03d}"


def tile_name(site: int, case: int, tile: int) -> str:
    """File stem of one tile: ``<case>_t<NN>`` (what :mod:`secgan.data.tiles` groups by)."""
    return f"{case_id(site, case)}_t{tile:02d}"


def _draw_nuclei(g: np.random.Generator, size: int, stain: SiteStain) -> np.ndarray:
    """Instance map int32 [size, size]: non-overlapping irregular ellipses, ids 1..n in drawing order."""
    inst = np.zeros((size, size), dtype=np.int32)
    count = int(g.poisson(stain.density * size * size / 1e4))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    next_id = 1
    for _ in range(count):
        cy, cx = g.uniform(0, size, size=2)
        a = stain.radius * g.lognormal(0.0, stain.radius_spread) * np.sqrt(stain.elongation * g.uniform(0.85, 1.15))
        b = a / (stain.elongation * g.uniform(0.85, 1.15))
        theta = g.uniform(0, np.pi)
        k, phase = g.uniform(0.0, 0.12, size=2), g.uniform(0, 2 * np.pi, size=2)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        phi = np.arctan2(v, u)
        wobble = 1.0 + k[0] * np.cos(2 * phi + phase[0]) + k[1] * np.cos(3 * phi + phase[1])
        inside = (u / a) ** 2 + (v / b) ** 2 < wobble**2
        free = inside & (inst == 0)
        if free.sum() >= max(4, 0.8 * inside.sum()):  # keep nuclei whole: touching yes, overlapping no
            inst[free] = next_id
            next_id += 1
    return inst


def synthesize_tile(seed: int, site: int, case: int, tile: int, *, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One tile: (RGB uint8 [size, size, 3], instance map int32 [size, size]).

    Deterministic in (seed, site, case, tile, size).
    """
    stain = site_stain(seed, site)
    gc = np.random.default_rng([seed, site, case, _CASE_TAG])
    h_vec = _tilted(gc, stain.h_vec, 0.02)
    e_vec = _tilted(gc, stain.e_vec, 0.02)
    slide_gain = gc.uniform(0.92, 1.08, size=2)
    g = np.random.default_rng([seed, site, case, tile, _TILE_TAG])
    inst = _draw_nuclei(g, size, stain)
    nucleus = inst > 0
    eosin = stain.e_strength * slide_gain[1] * np.clip(0.75 + 0.25 * lowfreq(g, size, size, 12.0), 0.2, None)
    lumen = lowfreq(g, size, size, 20.0) > 1.1
    eosin = np.where(lumen & ~nucleus, eosin * 0.15, eosin)
    chromatin = 0.85 + 0.15 * lowfreq(g, size, size, 2.0)
    haem = np.where(nucleus, stain.h_strength * slide_gain[0] * chromatin, 0.04)
    od = haem[..., None] * h_vec + eosin[..., None] * e_vec
    rgb = 255.0 * np.exp(-smooth3(od)) + g.normal(0.0, stain.noise, size=(size, size, 3))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), inst


def instances_to_classes(instances: np.ndarray) -> np.ndarray:
    """Instance map ``[H, W]`` (0 = background) -> 3-class map uint8 (0 background, 1 interior, 2 boundary).

    A nucleus pixel is boundary when one of its 4 neighbours has another value (background or another
    nucleus), interior otherwise. The tile's edge is not a boundary (outside pixels count as equal).
    Depends only on which pixels share an id, not on the ids themselves.
    """
    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise ValueError(f"instance map must be 2-D, got shape {inst.shape}")
    p = np.pad(inst, 1, mode="edge")
    h, w = inst.shape
    differs = np.zeros(inst.shape, dtype=bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        differs |= p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] != inst
    out = np.zeros(inst.shape, dtype=np.uint8)
    out[inst > 0] = INTERIOR
    out[(inst > 0) & differs] = BOUNDARY
    return out


def classes_to_instances(classes: np.ndarray, *, reach: float = 2.0) -> np.ndarray:
    """3-class map -> instance map int32 (what a U-Net's 3-class output is scored with).

    Each 4-connected component of interior pixels is a nucleus; a boundary pixel joins the nearest
    one within ``reach`` pixels; boundary pixels left over form nuclei of their own (8-connected
    components: nuclei too small to have an interior). Ids are 1..n.
    """
    from scipy import ndimage

    cls = np.asarray(classes)
    if cls.ndim != 2:
        raise ValueError(f"class map must be 2-D, got shape {cls.shape}")
    seeds, n = ndimage.label(cls == INTERIOR)
    out = seeds.astype(np.int32)
    boundary = cls == BOUNDARY
    if n:
        dist, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
        join = boundary & (dist <= reach)
        out[join] = seeds[iy[join], ix[join]]
    rest, m = ndimage.label(boundary & (out == 0), structure=np.ones((3, 3), dtype=bool))
    out[rest > 0] = rest[rest > 0] + n
    return out


def write_nuclei_phantom(out: Path, *, sites: int, cases: int, tiles: int, seed: int, size: int = 64,
                         test_fraction: float = 0.25) -> list[Path]:
    """Write the layout of the module docstring for sites 1..``sites``; returns the site folders.

    Raises ValueError for impossible arguments.
    """
    from PIL import Image

    from secgan.data.splits import check_writer_counts, random_split, write_site_files

    check_writer_counts(sites=sites, size=size, test_fraction=test_fraction, cases=(cases, 2, 999),
                        tiles=(tiles, 1, 99))
    site_dirs = []
    for site in range(1, sites + 1):
        site_dir = Path(out) / f"site-{site}"
        (site_dir / "images").mkdir(parents=True, exist_ok=True)
        (site_dir / "masks").mkdir(exist_ok=True)
        for case in range(1, cases + 1):
            for t in range(1, tiles + 1):
                rgb, inst = synthesize_tile(seed, site, case, t, size=size)
                stem = tile_name(site, case, t)
                Image.fromarray(rgb, mode="RGB").save(site_dir / "images" / f"{stem}.png")
                Image.fromarray(inst, mode="I").save(site_dir / "masks" / f"{stem}.tif")
        ids = [case_id(site, c) for c in range(1, cases + 1)]
        split = random_split(np.random.default_rng([seed, site, _SPLIT_TAG]), ids, test_fraction)
        write_site_files(site_dir, split, {"generator": "secgan phantom", "domain": "nuclei",
                                           "organ": site_stain(seed, site).organ, "seed": seed, "size": size,
                                           "tiles": tiles})
        site_dirs.append(site_dir)
    return site_dirs

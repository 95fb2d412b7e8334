"""Procedural dermoscopy-like lesion images from three institutions, written in an ISIC-style folder.

The decentralised dermatology study trains across three institutions whose images differ in two
ways: which lesions they see (a referral centre sees more melanoma, a skin-cancer clinic for older
patients more carcinoma and keratosis) and how they photograph them (device colour, dermoscope
vignetting, hair left on the skin). This phantom keeps both:

- classes: the seven diagnoses of HAM10000 / ISIC 2018 (:data:`DERM_CLASSES`), with HAM10000's
  strong imbalance (nevi about two thirds, dermatofibroma about 1 %); each institution multiplies
  the base mix by its own factors (:data:`INSTITUTIONS`);
- a class's look (:data:`CLASS_LOOKS`): lesion colour, size, border irregularity, texture, a second
  colour in patches (melanoma's blue-grey, seborrhoeic keratosis' mottling), and one of a few
  features (vessels for BCC, a pale centre for dermatofibroma, dark lacunae for vascular lesions);
- acquisition per institution: a colour cast (per-channel gain), vignetting (and, for one, the
  black corners of a round dermoscope field), a hair density (dark curved occluders), sensor noise;
- a patient has a skin tone and 1-4 images (each of its own lesion and class).

Sites 4, 5, ... reuse the three institutions' looks in turn with their own draws. Every random draw
comes from its own numpy Generator: the institution's acquisition from (seed, site), a patient from
(seed, site, patient), an image from (seed, site, patient, image), the split from (seed, site).

Layout written by :func:`write_derm_phantom` (read back by :mod:`secgan.data.isic`)::

    out/site-K/images/<image id>.png     RGB, 8 bit
    out/site-K/labels.csv                image_name,patient_id,diagnosis   (ISIC 2020 columns)
    out/site-K/split.json                {"train": [patient ids], "test": [patient ids]}
    out/site-K/phantom.json              what generated the folder

Ids are obviously synthetic (``Site1-P001``, ``Site1-I00001``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from secgan.data.drawing import curve_mask, lowfreq, smooth3

DERM_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
# HAM10000's class frequencies (Tschandl et al. 2018), DERM_CLASSES order
BASE_MIX = (0.111, 0.669, 0.051, 0.033, 0.110, 0.011, 0.014)

_SITE_TAG = 0xDE51
_PATIENT_TAG = 0xDE9A
_IMAGE_TAG = 0xDE1A
_SPLIT_TAG = 0xDE5B


@dataclass(frozen=True)
class ClassLook:
    """How one diagnosis looks in this phantom."""

    colour: tuple[float, float, float]  # lesion RGB in [0, 1]
    radius: float  # mean radius as a fraction of the image side
    irregularity: float  # border wobble amplitude
    texture: float  # amplitude of the lesion's smooth texture
    second: tuple[float, float, float]  # patch colour
    second_fraction: float  # share of the lesion covered by patches (0: none)
    feature: str  # "", "vessels", "pale_centre", "lacunae"


CLASS_LOOKS = {
    "MEL": ClassLook((0.25, 0.15, 0.12), 0.34, 0.25, 0.20, (0.35, 0.38, 0.46), 0.30, ""),
    "NV": ClassLook((0.47, 0.31, 0.21), 0.24, 0.05, 0.06, (0.0, 0.0, 0.0), 0.0, ""),
    "BCC": ClassLook((0.82, 0.58, 0.58), 0.25, 0.12, 0.08, (0.0, 0.0, 0.0), 0.0, "vessels"),
    "AKIEC": ClassLook((0.76, 0.45, 0.40), 0.28, 0.15, 0.25, (0.88, 0.80, 0.74), 0.15, ""),
    "BKL": ClassLook((0.60, 0.45, 0.30), 0.28, 0.10, 0.15, (0.42, 0.30, 0.20), 0.35, ""),
    "DF": ClassLook((0.55, 0.40, 0.32), 0.16, 0.06, 0.05, (0.0, 0.0, 0.0), 0.0, "pale_centre"),
    "VASC": ClassLook((0.62, 0.16, 0.26), 0.18, 0.08, 0.10, (0.0, 0.0, 0.0), 0.0, "lacunae"),
}


@dataclass(frozen=True)
class Institution:
    """What makes one institution's images differ: its case mix and its camera."""

    # factors on BASE_MIX (DERM_CLASSES order)
    mix_factors: tuple[float, ...]
    # per-channel gain (colour cast)
    cast: tuple[float, float, float]
    # darkening at the corners (0: none)
    vignetting: float
    # black outside a round dermoscope field
    round_field: bool
    # mean number of hairs per image
    hairs: float


INSTITUTIONS = (
    Institution(mix_factors=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), cast=(1.06, 1.0, 0.90), vignetting=0.10,
                round_field=False, hairs=0.8),  # general dermatology, warm camera
    Institution(mix_factors=(3.0, 0.7, 1.0, 0.6, 0.8, 1.0, 1.2), cast=(0.92, 0.98, 1.08), vignetting=0.45,
                round_field=True, hairs=2.5),  # melanoma referral centre, contact dermoscope
    Institution(mix_factors=(1.0, 0.5, 3.0, 3.0, 1.6, 1.0, 0.8), cast=(0.97, 1.07, 0.95), vignetting=0.25,
                round_field=False, hairs=5.0),  # skin-cancer clinic, older patients
)


@dataclass(frozen=True)
class SiteAcquisition:
    """One site's drawn class mix and camera."""

    mix: np.ndarray  # [len(DERM_CLASSES)] probabilities
    cast: np.ndarray  # [3]
    vignetting: float
    round_field: bool
    hairs: float
    noise: float  # sensor noise sigma, [0, 1] units


def site_acquisition(seed: int, site: int) -> SiteAcquisition:
    """Site ``site``'s (1-based) class mix and camera, deterministic in (seed, site)."""
    inst = INSTITUTIONS[(site - 1) % len(INSTITUTIONS)]
    g = np.random.default_rng([seed, site, _SITE_TAG])
    mix = np.asarray(BASE_MIX) * np.asarray(inst.mix_factors) * g.uniform(0.85, 1.15, size=len(DERM_CLASSES))
    return SiteAcquisition(
        mix=mix / mix.sum(),
        cast=np.asarray(inst.cast) * g.uniform(0.98, 1.02, size=3),
        vignetting=float(inst.vignetting * g.uniform(0.9, 1.1)),
        round_field=inst.round_field,
        hairs=float(inst.hairs * g.uniform(0.8, 1.2)),
        noise=float(g.uniform(0.01, 0.025)),
    )


def patient_id(site: int, patient: int) -> str:
    return f"Site{site}-P{patient:03d}"


def patient_images(seed: int, site: int, patient: int) -> list[int]:
    """The classes (indices into DERM_CLASSES) of the patient's images: 1-4 of them."""
    g = np.random.default_rng([seed, site, patient, _PATIENT_TAG])
    acq = site_acquisition(seed, site)
    n = int(min(4, g.geometric(0.55)))
    return [int(c) for c in g.choice(len(DERM_CLASSES), size=n, p=acq.mix)]


def _skin(seed: int, site: int, patient: int) -> np.ndarray:
    g = np.random.default_rng([seed, site, patient, _PATIENT_TAG, 1])
    tone = g.uniform(0.0, 1.0)  # light .. darker skin
    return np.array([0.93 - 0.30 * tone, 0.76 - 0.30 * tone, 0.66 - 0.28 * tone], dtype=np.float32)


def synthesize_image(seed: int, site: int, patient: int, image: int, label: int, *, size: int) -> np.ndarray:
    """One lesion image RGB uint8 [size, size, 3] of class ``label``; deterministic in its arguments."""
    look = CLASS_LOOKS[DERM_CLASSES[label]]
    acq = site_acquisition(seed, site)
    g = np.random.default_rng([seed, site, patient, image, _IMAGE_TAG])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    skin = _skin(seed, site, patient)
    img = skin * (1.0 + 0.04 * lowfreq(g, size, size, size / 6.0))[..., None]
    cy, cx = size / 2 + g.normal(0, size * 0.06, size=2)
    radius = size * look.radius * g.lognormal(0.0, 0.15)
    phi = np.arctan2(yy - cy, xx - cx)
    border = 1.0
    for harmonic in (2, 3, 5):
        border = border + look.irregularity * g.uniform(0, 1) / harmonic * 2 * np.cos(harmonic * phi + g.uniform(0, 2 * np.pi))
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (radius * border)
    lesion = np.clip((1.05 - r) / 0.15, 0.0, 1.0)[..., None]  # soft edge
    colour = np.asarray(look.colour, dtype=np.float32) * (1.0 + look.texture * lowfreq(g, size, size, size / 10.0))[..., None]
    if look.second_fraction > 0:
        field = lowfreq(g, size, size, size / 8.0)
        patches = field > np.quantile(field, 1.0 - look.second_fraction)
        colour = np.where(patches[..., None], np.asarray(look.second, dtype=np.float32), colour)
    if look.feature == "pale_centre":
        colour = np.where((r < 0.45)[..., None], np.asarray([0.85, 0.78, 0.72], dtype=np.float32), colour)
    elif look.feature == "lacunae":
        dots = lowfreq(g, size, size, 2.5) > 0.9
        colour = np.where(dots[..., None], np.asarray([0.32, 0.05, 0.12], dtype=np.float32), colour)
    img = img * (1 - lesion) + colour * lesion
    if look.feature == "vessels":
        for _ in range(int(g.integers(2, 5))):
            v = curve_mask(g, size, size, length=size * 0.4, width=0.8)[..., None] * lesion
            img = img * (1 - 0.7 * v) + np.asarray([0.70, 0.10, 0.12], dtype=np.float32) * 0.7 * v
    for _ in range(int(g.poisson(acq.hairs))):
        hair = curve_mask(g, size, size, length=size * g.uniform(0.5, 1.2), width=g.uniform(0.6, 1.2))[..., None]
        img = img * (1 - 0.85 * hair) + np.asarray([0.12, 0.08, 0.06], dtype=np.float32) * 0.85 * hair
    img = smooth3(img) * acq.cast.astype(np.float32)
    edge = np.sqrt((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size / 2)
    img = img * (1.0 - acq.vignetting * np.clip(edge, 0, 1.5) ** 2)[..., None]
    if acq.round_field:
        img = np.where((edge > 0.98)[..., None], np.float32(0.02), img)
    img = img + g.normal(0.0, acq.noise, size=img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def labels_csv(rows: list[tuple[str, str, str]]) -> str:
    """The ISIC 2020 style CSV text (image_name, patient_id, diagnosis) of ``rows``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_name", "patient_id", "diagnosis"])
    w.writerows(rows)
    return buf.getvalue()


def write_derm_phantom(out: Path, *, sites: int, patients: int, seed: int, size: int = 64,
                       test_fraction: float = 0.25) -> list[Path]:
    """Write the layout of the module docstring for sites 1..``sites``; returns the site folders.

    Raises ValueError for impossible arguments.
    """
    from PIL import Image

    from secgan.core.fsio import atomic_write_bytes
    from secgan.data.splits import check_writer_counts, random_split, write_site_files

    check_writer_counts(sites=sites, size=size, test_fraction=test_fraction, patients=(patients, 2, 999))
    site_dirs = []
    for site in range(1, sites + 1):
        site_dir = Path(out) / f"site-{site}"
        (site_dir / "images").mkdir(parents=True, exist_ok=True)
        rows, n = [], 0
        for p in range(1, patients + 1):
            for k, label in enumerate(patient_images(seed, site, p), start=1):
                n += 1
                image_id = f"Site{site}-I{n:05d}"
                rgb = synthesize_image(seed, site, p, k, label, size=size)
                Image.fromarray(rgb, mode="RGB").save(site_dir / "images" / f"{image_id}.png")
                rows.append((image_id, patient_id(site, p), DERM_CLASSES[label]))
        atomic_write_bytes(site_dir / "labels.csv", labels_csv(rows).encode("utf-8"))
        ids = [patient_id(site, p) for p in range(1, patients + 1)]
        split = random_split(np.random.default_rng([seed, site, _SPLIT_TAG]), ids, test_fraction)
        write_site_files(site_dir, split, {"generator": "secgan phantom", "domain": "derm", "seed": seed,
                                           "size": size, "classes": list(DERM_CLASSES)})
        site_dirs.append(site_dir)
    return site_dirs

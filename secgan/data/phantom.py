"""Procedural multi-site brain-tumour phantoms written in the BraTS folder layout.

The phantoms exist so that demos and tests exercise the same code paths as real BraTS data
(NIfTI through nibabel, four modalities, labels 0/1/2/4, patient-level splits) without any
patient data. They look like brains at the level a small GAN or U-Net cares about:

- an elliptical head with a scalp/skull ring, cortical grey matter, white matter, ventricles;
- tissue contrasts per modality (T1: WM > GM > CSF; T2: CSF bright; FLAIR: CSF suppressed,
  oedema bright; T1ce: enhancing rim bright);
- a tumour made of nested irregular 3-D blobs: oedema (2) > enhancing rim (4) > necrotic core (1);
- per-site "scanner" differences: gain, smooth multiplicative bias field, Rician noise level,
  blur, on-disk dtype, and a site-specific tumour-size distribution.

Every random draw comes from a numpy Generator seeded by (seed, site, patient), so a phantom is
reproducible and one patient does not depend on how many others are generated.

Styles. What the generator draws from is a small frozen :class:`PhantomStyle`: the tissue contrast
table, a per-modality intensity curve (a gamma), the ranges the per-site scanner parameters are
drawn from (gain, bias, noise, blur, tumour size) and an RNG stream tag. ``SITE_STYLE`` is the
sites' world (the hospitals of every demo, test and sweep; its phantoms are byte-identical to
those written before styles existed). ``PUBLIC_STYLE`` stands in for a *public* cohort, such as an
earlier BraTS release scanned elsewhere, used for non-private pretraining. It is deliberately not
the sites' distribution with another seed:

=====================  ===================================  ======================================
what                   sites (``SITE_STYLE``)               public (``PUBLIC_STYLE``)
=====================  ===================================  ======================================
contrasts              the table below (``_CONTRAST``)      an older scanner: weaker T1 grey/white
                                                            contrast (0.55/0.70 vs 0.50/0.78),
                                                            weaker T1ce enhancement (0.85 vs 1.0),
                                                            FLAIR CSF less suppressed (0.25 vs
                                                            0.10), necrosis brighter on FLAIR
intensity curve        linear (gamma 1 everywhere)          gamma 0.8 / 1.2 / 0.85 / 1.25 on
                                                            t1 / t1ce / t2 / flair
bias field strength    0.05 - 0.30                          0.25 - 0.45
Rician noise           0.01 - 0.06                          0.04 - 0.09
blur sigma             0.0 - 0.9 voxels                     0.6 - 1.2 voxels
tumour size            scale 0.7 - 1.3, spread 0.2          scale 1.35 - 1.6, spread 0.3 (larger,
                                                            more varied tumours)
gain                   600 - 1400                           1500 - 3000
case ids               ``Site1-P001``                       ``Public1-P001`` (no id in common)
random streams         (seed, site, patient)                the same plus the tag 0x9B1C, so a
                                                            public patient is never a site's
                                                            patient even for the same seed
=====================  ===================================  ======================================

``secgan phantom --public`` writes a public cohort in the same BraTS layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from secgan.core.spec import IMAGE_CHANNELS

# Tissue classes (internal only).
BG, SCALP, SKULL, CSF, GM, WM, ED, ET, NCR = range(9)

# Mean relative intensity of each tissue class per modality (rows follow IMAGE_CHANNELS order:
# t1, t1ce, t2, flair; columns follow the class ids above).
_CONTRAST = np.array(
    [
        # bg   scalp skull csf   gm    wm    ed    et    ncr
        [0.0, 0.85, 0.10, 0.18, 0.50, 0.78, 0.40, 0.55, 0.25],  # t1
        [0.0, 0.80, 0.10, 0.18, 0.52, 0.74, 0.42, 1.00, 0.22],  # t1ce
        [0.0, 0.55, 0.08, 1.00, 0.62, 0.42, 0.85, 0.62, 0.92],  # t2
        [0.0, 0.50, 0.08, 0.10, 0.58, 0.45, 1.00, 0.72, 0.40],  # flair
    ],
    dtype=np.float32,
)

# The public style's contrast table (same layout as ``_CONTRAST``).
_PUBLIC_CONTRAST = np.array(
    [
        # bg   scalp skull csf   gm    wm    ed    et    ncr
        [0.0, 0.80, 0.12, 0.22, 0.55, 0.70, 0.45, 0.52, 0.30],  # t1
        [0.0, 0.78, 0.12, 0.22, 0.55, 0.68, 0.47, 0.85, 0.28],  # t1ce
        [0.0, 0.60, 0.10, 0.92, 0.66, 0.48, 0.80, 0.66, 0.88],  # t2
        [0.0, 0.55, 0.10, 0.25, 0.60, 0.50, 0.92, 0.70, 0.55],  # flair
    ],
    dtype=np.float32,
)

_SITE_TAG = 0x51E
_PATIENT_TAG = 0x9A7
_SPLIT_TAG = 0x5B1


@dataclass(frozen=True)
class PhantomStyle:
    """The distribution a phantom cohort is drawn from (see the module docstring's table)."""

    # names the style in logs and docs
    name: str
    # case ids are ``<case_prefix><site>-P<patient>``
    case_prefix: str
    # [4, 9] mean relative intensity per modality (IMAGE_CHANNELS order) and tissue class
    contrast: np.ndarray
    # per-modality intensity curve: clean ** gamma (1: linear, skipped)
    gamma: tuple[float, float, float, float]
    # ranges (low, high) the per-site scanner parameters are drawn from
    gain: tuple[float, float]
    bias: tuple[float, float]
    noise: tuple[float, float]
    blur: tuple[float, float]
    tumour_scale: tuple[float, float]
    # sigma of the per-patient log-normal factor on the tumour radius
    tumour_spread: float
    # extra tag appended to every RNG seed (0: none, the sites' streams)
    stream: int


SITE_STYLE = PhantomStyle(
    name="sites", case_prefix="Site", contrast=_CONTRAST, gamma=(1.0, 1.0, 1.0, 1.0), gain=(600.0, 1400.0),
    bias=(0.05, 0.30), noise=(0.01, 0.06), blur=(0.0, 0.9), tumour_scale=(0.7, 1.3), tumour_spread=0.2, stream=0,
)
PUBLIC_STYLE = PhantomStyle(
    name="public", case_prefix="Public", contrast=_PUBLIC_CONTRAST, gamma=(0.8, 1.2, 0.85, 1.25),
    gain=(1500.0, 3000.0), bias=(0.25, 0.45), noise=(0.04, 0.09), blur=(0.6, 1.2), tumour_scale=(1.35, 1.6),
    tumour_spread=0.3, stream=0x9B1C,
)
STYLES = {"sites": SITE_STYLE, "public": PUBLIC_STYLE}


def _seed(style: PhantomStyle, *parts: int) -> list[int]:
    return [*parts, style.stream] if style.stream else list(parts)


@dataclass(frozen=True)
class SiteScanner:
    """What makes one site's images differ from another's (drawn once per site)."""

    gain: np.ndarray  # [4] per-modality scale to scanner units
    bias_strength: float  # amplitude of the log bias field
    noise: float  # Rician noise sigma, relative to the gain
    blur: float  # Gaussian blur sigma in voxels
    tumour_scale: float  # multiplies tumour radii
    dtype: str  # on-disk dtype: "int16" or "float32"
    origin_shift: np.ndarray  # [3] mm, added to the affine's origin
    tumour_spread: float = 0.2  # sigma of the per-patient log-normal factor on tumour radii


def site_scanner(seed: int, site: int, style: PhantomStyle = SITE_STYLE) -> SiteScanner:
    """Scanner parameters of site ``site`` (1-based), deterministic in (seed, site, style)."""
    g = np.random.default_rng(_seed(style, seed, site, _SITE_TAG))
    return SiteScanner(
        gain=(g.uniform(*style.gain) * g.uniform(0.85, 1.15, size=4)).astype(np.float32),
        bias_strength=float(g.uniform(*style.bias)),
        noise=float(g.uniform(*style.noise)),
        blur=float(g.uniform(*style.blur)),
        tumour_scale=float(g.uniform(*style.tumour_scale)),
        dtype="int16" if site % 2 == 1 else "float32",
        origin_shift=g.uniform(-5.0, 5.0, size=3),
        tumour_spread=float(style.tumour_spread),
    )


def case_id(site: int, patient: int, style: PhantomStyle = SITE_STYLE) -> str:
    """Obviously synthetic case id, e.g. ``Site1-P007`` (``Public1-P007`` in the public style)."""
    return f"{style.case_prefix}{site}-P{patient:03d}"


def affine_for(shape: tuple[int, int, int], shift: np.ndarray) -> np.ndarray:
    """RAS affine with 1 mm isotropic voxels and the volume centre near the scanner origin."""
    aff = np.eye(4)
    aff[:3, 3] = -(np.asarray(shape, dtype=float) - 1.0) / 2.0 + shift
    return aff


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel centre coordinates in mm (1 mm voxels), centred on the volume, broadcastable."""
    x = np.arange(shape[0], dtype=np.float32) - (shape[0] - 1) / 2.0
    y = np.arange(shape[1], dtype=np.float32) - (shape[1] - 1) / 2.0
    z = np.arange(shape[2], dtype=np.float32) - (shape[2] - 1) / 2.0
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _smooth_noise(g: np.random.Generator, xyz, *, terms: int, wavelength: float) -> np.ndarray:
    """Low-frequency random field (sum of random 3-D plane waves), roughly in [-1, 1].

    cos(a.x + p) = Re(e^{i a0 x} e^{i a1 y} e^{i a2 z} e^{i p}) is separable, so the sum over terms
    is a sum of rank-one outer products instead of ``terms`` trigonometric passes over the volume
    (done with plain numpy ops: a threaded BLAS call this small is slower under contention).
    """
    x, y, z = (c.reshape(-1) for c in xyz)
    dirs = g.normal(size=(terms, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = g.uniform(0.5, 1.5, size=terms) * (2 * np.pi / wavelength)
    phases = g.uniform(0, 2 * np.pi, size=terms)
    amps = g.uniform(0.5, 1.0, size=terms)
    k = dirs * freqs[:, None]  # [terms, 3]
    ex = np.exp(1j * (k[:, 0:1] * x[None, :] + phases[:, None])) * amps[:, None]  # [terms, X]
    ey = np.exp(1j * k[:, 1:2] * y[None, :])  # [terms, Y]
    ez = np.exp(1j * k[:, 2:3] * z[None, :])  # [terms, Z]
    exy = (ex[:, :, None] * ey[:, None, :]).astype(np.complex64)  # [terms, X, Y]
    ez = ez.astype(np.complex64)
    field = np.zeros((len(x), len(y), len(z)), dtype=np.float32)
    for t in range(terms):
        field += exy[t].real[:, :, None] * ez[t].real - exy[t].imag[:, :, None] * ez[t].imag
    return field * np.float32(2.0 / float(amps.sum()))


def _tissue_labels(g: np.random.Generator, shape, scanner: SiteScanner) -> np.ndarray:
    """Tissue class per voxel (uint8), including the tumour classes."""
    xyz = _grid(shape)
    x, y, z = xyz
    sx, sy, sz = shape
    # Head ellipsoid: in-plane semi-axes fill most of the field of view, z spans the volume.
    ax = sx / 2.0 * g.uniform(0.80, 0.90)
    ay = sy / 2.0 * g.uniform(0.86, 0.95)
    az = sz / 2.0 * g.uniform(1.05, 1.25)
    cx, cy = g.uniform(-0.04, 0.04, size=2) * np.array([sx, sy])
    rho = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + (z / az) ** 2)
    wobble = _smooth_noise(g, xyz, terms=6, wavelength=max(sx, sy) / 3.0)
    r = rho + 0.025 * wobble

    # Ring thickness in units of rho so that it is ~1-2 voxels whatever the size.
    t = max(1.2 / min(ax, ay), 0.035)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[r < 1.0] = SCALP
    labels[r < 1.0 - t] = SKULL
    labels[r < 1.0 - 2 * t] = CSF
    brain_edge = 1.0 - 2.6 * t
    gyri = _smooth_noise(g, xyz, terms=8, wavelength=max(sx, sy) / 6.0)
    labels[r + 0.03 * gyri < brain_edge] = GM
    labels[r + 0.08 * gyri < brain_edge - 0.22] = WM
    # Ventricles: two small ellipsoids either side of the midline.
    vx, vy, vz = ax * 0.10, ay * 0.28, az * 0.30
    for side in (-1.0, 1.0):
        vr = ((x - cx - side * ax * 0.12) / vx) ** 2 + ((y - cy) / vy) ** 2 + (z / vz) ** 2
        labels[vr < 1.0] = CSF

    # Tumour: centre inside the brain, away from the midline, nested irregular blobs.
    intra = r < brain_edge - 0.1
    tx = g.uniform(0.15, 0.5) * ax * g.choice([-1.0, 1.0]) + cx
    ty = g.uniform(-0.45, 0.45) * ay + cy
    tz = g.uniform(-0.25, 0.25) * sz
    base = min(sx, sy) * 0.15 * scanner.tumour_scale * g.lognormal(0.0, scanner.tumour_spread)
    radii = base * g.uniform(0.8, 1.25, size=3)
    radii[2] = max(radii[2] * sz / max(sx, sy) * 1.6, 2.5)  # spans several slices
    d = np.sqrt(((x - tx) / radii[0]) ** 2 + ((y - ty) / radii[1]) ** 2 + ((z - tz) / radii[2]) ** 2)
    lumps = _smooth_noise(g, xyz, terms=8, wavelength=max(base * 2.0, 3.0))
    oedema = (d + 0.25 * lumps < 1.0) & intra
    core_frac = g.uniform(0.45, 0.65)
    enhancing = (d + 0.12 * _smooth_noise(g, xyz, terms=6, wavelength=max(base, 2.0)) < core_frac) & oedema
    necrotic = (d < core_frac * g.uniform(0.4, 0.7)) & enhancing if g.uniform() < 0.8 else np.zeros_like(oedema)
    labels[oedema] = ED
    labels[enhancing] = ET
    labels[necrotic] = NCR
    return labels


def _blur(vol: np.ndarray, sigmas: tuple[float, float, float]) -> np.ndarray:
    """Separable Gaussian blur with zero padding (a few shifted adds; avoids importing scipy)."""
    out = vol
    for axis, sigma in enumerate(sigmas):
        if sigma < 0.05:
            continue
        radius = max(1, int(np.ceil(3 * sigma)))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        taps = (taps / taps.sum()).astype(np.float32)
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad)
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, w in enumerate(taps):
            window = [slice(None)] * 3
            window[axis] = slice(k, k + n)
            acc += w * padded[tuple(window)]
        out = acc
    return out


def _bias_field(g: np.random.Generator, shape, strength: float) -> np.ndarray:
    xyz = _grid(shape)
    field = _smooth_noise(g, xyz, terms=4, wavelength=2.5 * max(shape))
    return np.exp(strength * field).astype(np.float32)


def synthesize_case(seed: int, site: int, patient: int, *, size: int, slices: int, with_tissue: bool = False,
                    style: PhantomStyle = SITE_STYLE):
    """One phantom case: (volumes name -> array in the site's dtype, seg uint8, affine[, tissue]).

    Deterministic in (seed, site, patient, size, slices, style). ``with_tissue`` also returns the
    internal tissue class map (uint8, classes BG..NCR of this module) so tests can check contrasts.
    """
    scanner = site_scanner(seed, site, style)
    g = np.random.default_rng(_seed(style, seed, site, patient, _PATIENT_TAG))
    shape = (size, size, slices)
    labels = _tissue_labels(g, shape, scanner)
    head = labels != BG
    bias = _bias_field(g, shape, scanner.bias_strength)
    texture = 1.0 + 0.04 * _smooth_noise(g, _grid(shape), terms=10, wavelength=3.0)
    volumes: dict[str, np.ndarray] = {}
    for m, name in enumerate(IMAGE_CHANNELS):
        clean = style.contrast[m][labels] * texture * bias
        if style.gamma[m] != 1.0:
            clean = np.power(clean, np.float32(style.gamma[m]), dtype=np.float32)
        if scanner.blur > 0.05:
            clean = _blur(clean, (scanner.blur, scanner.blur, scanner.blur * 0.5))
        sigma = scanner.noise
        n1 = g.standard_normal(shape, dtype=np.float32) * sigma
        n2 = g.standard_normal(shape, dtype=np.float32) * sigma
        mag = np.sqrt((clean + n1) ** 2 + n2**2) * scanner.gain[m]
        mag[~head] = 0.0  # skull-stripping style masking: background exactly zero
        if scanner.dtype == "int16":
            volumes[name] = np.clip(np.rint(mag), 0, 32767).astype(np.int16)
        else:
            volumes[name] = mag.astype(np.float32)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[labels == ED] = 2
    seg[labels == ET] = 4
    seg[labels == NCR] = 1
    affine = affine_for(shape, scanner.origin_shift)
    if with_tissue:
        return volumes, seg, affine, labels
    return volumes, seg, affine


def phantom_slices(patients, *, seed: int, site: int, size: int, slices: int,
                   min_tumour_pixels: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The listed phantom patients sliced in memory as a site's loader would slice them, without
    writing NIfTI: (images [N,4,H,W], conds [N,4,H,W], patient index [N] in list order)."""
    from secgan.data.brats import Case
    from secgan.data.slicing import case_to_slices

    ims, cos, grp = [], [], []
    for k, p in enumerate(patients):
        vols, seg, aff = synthesize_case(seed, site, p, size=size, slices=slices)
        case = Case(f"P{p}", {m: v.astype(np.float32) for m, v in vols.items()}, seg.astype(np.int16), aff)
        im, co, _ = case_to_slices(case, image_size=size, modalities=IMAGE_CHANNELS,
                                   min_tumour_pixels=min_tumour_pixels)
        ims.append(im)
        cos.append(co)
        grp.append(np.full(len(im), k, dtype=np.int64))
    return np.concatenate(ims), np.concatenate(cos), np.concatenate(grp)


def patient_split(seed: int, site: int, ids: list[str], test_fraction: float,
                  style: PhantomStyle = SITE_STYLE) -> dict[str, list[str]]:
    """Patient-level train/test split, deterministic in (seed, site, style); both sides non-empty."""
    from secgan.data.splits import random_split

    if len(ids) < 2:
        raise ValueError("a split needs at least 2 patients")
    return random_split(np.random.default_rng(_seed(style, seed, site, _SPLIT_TAG)), ids, test_fraction)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def write_phantom(
    out: Path,
    *,
    sites: int,
    patients: int,
    seed: int,
    size: int = 64,
    slices: int = 32,
    test_fraction: float = 0.25,
    style: PhantomStyle = SITE_STYLE,
) -> list[Path]:
    """Write ``out/site-K/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` and ``out/site-K/split.json``.

    Returns the site directories (K = 1..sites). Raises ValueError for impossible arguments.
    ``style``: the distribution drawn from (``SITE_STYLE``, or ``PUBLIC_STYLE`` for a public cohort).
    """
    from secgan.data.splits import write_site_files

    if not 1 <= sites <= 64:
        raise ValueError(f"sites must be in 1..64, got {sites}")
    if not 2 <= patients <= 999:
        raise ValueError(f"patients must be in 2..999 (a split needs train and test), got {patients}")
    if not 16 <= size <= 512:
        raise ValueError(f"size must be in 16..512, got {size}")
    if not 8 <= slices <= 512:
        raise ValueError(f"slices must be in 8..512, got {slices}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    out = Path(out)
    site_dirs = []
    for site in range(1, sites + 1):
        site_dir = out / f"site-{site}"
        site_dir.mkdir(parents=True, exist_ok=True)
        ids = []
        for patient in range(1, patients + 1):
            cid = case_id(site, patient, style)
            ids.append(cid)
            case_dir = site_dir / cid
            case_dir.mkdir(exist_ok=True)
            volumes, seg, affine = synthesize_case(seed, site, patient, size=size, slices=slices, style=style)
            for name, vol in volumes.items():
                _save_nifti(case_dir / f"{cid}_{name}.nii.gz", vol, affine)
            _save_nifti(case_dir / f"{cid}_seg.nii.gz", seg, affine)
        # The marker tells the folder is the built-in phantom: data crop = "auto" leaves its slices uncropped.
        write_site_files(site_dir, patient_split(seed, site, ids, test_fraction, style),
                         {"generator": "secgan phantom", "style": style.name, "seed": seed, "size": size, "slices": slices})
        site_dirs.append(site_dir)
    return site_dirs

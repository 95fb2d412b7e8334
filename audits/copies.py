"""Copies of real images: any synthetic image that is an (near-)exact copy of ANY real image at the site.

This is a finding on its own, whoever the image belongs to (a training patient, a held-out one or
any other patient in the site's data folder), and no population test smooths it away: one copied
slice is one leaked image.

The search runs in a space built to be robust to the edits that disguise a copy:
- intensity gain and offset: every channel of every image is standardised (zero mean, unit
  variance over the image), and a mild gamma is close to affine over an image's range;
- noise and blur: images are low-pass filtered (Gaussian) and pooled to ``working_size``;
- small affine and elastic warps: every real image is also compared under a small set of
  rotations and shifts (the distance is the minimum over them); then the closest candidates of
  every synthetic image that is not clearly far are registered onto it (an affine map plus a smooth,
  bounded displacement field, fitted by gradient descent). Registration also brings different
  patients closer, so registered distances are divided by how much it does so on the site's own
  real images (a calibration sample registered to their nearest other patients).

The threshold comes from the site's own real images: for every real image r, ``d_rr(r)`` is its
distance (same space, same transforms) to the nearest real image of ANOTHER patient, so the scale
of "how alike are two different patients' images here" is measured, not assumed. A synthetic image
s whose nearest real image is r is a copy when ``d(s, r) <= ratio * min(d_rr(r), median d_rr)``
(the median caps the threshold of an unusual real image). Exact pixel copies always count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from audits.neighbours import nearest
from secgan.core.config import rng as _range
from secgan.core.errors import DataError

SETS = ("training", "held-out", "other")


@dataclass(frozen=True)
class CopySearchConfig:
    # A synthetic image within this fraction of the real-to-real (different patient) distance of
    # its nearest real image is a copy.
    ratio: float = field(default=0.7, metadata=_range(min=0.0, max=1.0))
    # Rotations (degrees), isotropic scales and shifts (pixels at the image's own size) tried on
    # every real image; the distance is the minimum over all their combinations.
    rotations: tuple[float, ...] = (-5.0, 0.0, 5.0)
    scales: tuple[float, ...] = (1.0,)
    max_shift: int = field(default=1, metadata=_range(min=0, max=4))
    blur_sigma: float = field(default=1.0, metadata=_range(min=0.0, max=4.0))  # in pixels of the image
    working_size: int = field(default=16, metadata=_range(min=4, max=256))
    chunk: int = field(default=1024, metadata=_range(min=64))
    # Registration of the closest candidates: an affine map plus a smooth displacement field on a
    # grid x grid lattice, fitted by gradient descent, absorbs small elastic warps.
    candidates: int = field(default=2, metadata=_range(min=0, max=32))  # 0: no registration
    # Only synthetic images whose rigid ratio is at most this are registered (the others are far).
    register_below: float = field(default=1.0, metadata=_range(min=0.0))
    # Real images registered to their nearest other patient to calibrate the registered scale.
    calibration_images: int = field(default=96, metadata=_range(min=8))
    register_steps: int = field(default=30, metadata=_range(min=1, max=1000))
    register_grid: int = field(default=5, metadata=_range(min=2, max=32))
    register_lr: float = field(default=0.03, metadata=_range(min=1e-4, max=1.0))
    max_displacement: float = field(default=0.15, metadata=_range(min=0.0, max=1.0))  # normalised units


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    sd = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    return (x - mean) / sd


def _prep(x: torch.Tensor, cfg: CopySearchConfig) -> torch.Tensor:
    """Standardised, blurred and pooled images [N, C, ws, ws]: the space every distance is measured in
    (warps are applied here, after the low-pass: for small warps the two orders agree)."""
    x = _gaussian_blur(_standardise(x), cfg.blur_sigma)
    return F.adaptive_avg_pool2d(x, min(cfg.working_size, x.shape[-1]))


def _transforms(cfg: CopySearchConfig, size: int) -> torch.Tensor:
    """Affine matrices [K, 2, 3] (normalised coordinates) of every rotation x scale x shift."""
    mats = []
    shifts = range(-cfg.max_shift, cfg.max_shift + 1)
    for rot in cfg.rotations:
        a = math.radians(rot)
        for s in cfg.scales:
            for dy in shifts:
                for dx in shifts:
                    mats.append([[s * math.cos(a), -s * math.sin(a), 2.0 * dx / size],
                                 [s * math.sin(a), s * math.cos(a), 2.0 * dy / size]])
    return torch.tensor(mats, dtype=torch.float32)


def robust_features(images: np.ndarray, cfg: CopySearchConfig = CopySearchConfig(), *,
                    warps: bool = False, batch: int = 512) -> np.ndarray:
    """[N, C, H, W] -> [N, D] (``warps=False``) or [N, K, D] (every transform of every image)."""
    x_all = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x_all.ndim != 4 or x_all.shape[0] == 0:
        raise DataError(f"copy search needs a non-empty [N, C, H, W] array, got shape {tuple(x_all.shape)}")
    theta = _transforms(cfg, int(x_all.shape[-1])) if warps else None
    out = []
    with torch.no_grad():
        for i in range(0, len(x_all), batch):
            x = _prep(x_all[i : i + batch], cfg)
            if theta is None:
                out.append(x.flatten(1))
                continue
            n, k = x.shape[0], theta.shape[0]
            xr = x.repeat_interleave(k, dim=0)
            grid = F.affine_grid(theta.repeat(n, 1, 1), list(xr.shape), align_corners=False)
            warped = F.grid_sample(xr, grid, mode="bilinear", padding_mode="border", align_corners=False)
            out.append(warped.reshape(n, k, -1))
    return torch.cat(out).numpy().astype(np.float32)


def _register(q: torch.Tensor, r: torch.Tensor, cfg: CopySearchConfig, *, batch: int = 512) -> np.ndarray:
    """Distance (robust space) between q[i] and r[i] after warping r[i] onto q[i]: a fitted affine
    map plus a smooth bounded displacement field. q, r: prepared images [P, C, ws, ws] (:func:`_prep`)."""
    out = np.empty(len(q))
    g = cfg.register_grid
    for i0 in range(0, len(q), batch):
        qi, ri = q[i0 : i0 + batch], r[i0 : i0 + batch]
        n = len(qi)
        target = qi.flatten(1)
        theta = torch.zeros((n, 2, 3))
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta.requires_grad_(True)
        field_ = torch.zeros((n, 2, g, g), requires_grad=True)
        opt = torch.optim.Adam([theta, field_], lr=cfg.register_lr)

        def residual() -> torch.Tensor:
            grid = F.affine_grid(theta, list(ri.shape), align_corners=False)
            disp = F.interpolate(cfg.max_displacement * torch.tanh(field_), size=ri.shape[-2:], mode="bilinear",
                                 align_corners=True).permute(0, 2, 3, 1)
            warped = F.grid_sample(ri, grid + disp, mode="bilinear", padding_mode="border", align_corners=False)
            return (warped.flatten(1) - target).square().sum(1)

        for _ in range(cfg.register_steps):
            loss = residual()
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            out[i0 : i0 + n] = residual().clamp_min(0).sqrt().double().numpy()
    return out


def _refine(q_img: torch.Tensor, r_img: torch.Tensor, cand: np.ndarray, d0: np.ndarray, cfg: CopySearchConfig):
    """(distance, real index) per query: the minimum of the rigid distance ``d0`` and the registered
    distance to each of its candidate real images ``cand`` [Nq, k]."""
    nq, k = cand.shape
    qi = np.repeat(np.arange(nq), k)
    d = _register(q_img[qi], r_img[cand.reshape(-1)], cfg).reshape(nq, k)
    d = np.minimum(d, d0[:, None])
    j = d.argmin(1)
    return d[np.arange(nq), j], cand[np.arange(nq), j]


def _candidates(d_warp_idx: np.ndarray, warp_owner: np.ndarray, k: int) -> np.ndarray:
    """The first k distinct real images among each query's nearest transformed references."""
    out = np.empty((len(d_warp_idx), k), dtype=np.int64)
    for i, row in enumerate(warp_owner[d_warp_idx]):
        _, first = np.unique(row, return_index=True)
        picks = row[np.sort(first)][:k]
        out[i] = np.r_[picks, np.full(k - len(picks), picks[0])]
    return out


def find_copies(
    synthetic: np.ndarray,
    real: np.ndarray,
    real_patients: np.ndarray,
    real_sets: np.ndarray,
    *,
    config: CopySearchConfig = CopySearchConfig(),
    device: str = "cpu",
) -> dict:
    """Which synthetic images copy which real images (see module doc).

    ``real_patients`` [M] are patient indices unique across the whole site; ``real_sets`` [M] index
    :data:`SETS` (0 training, 1 held-out, 2 other). Returns counts (JSON-ready) and, under
    ``_pairs``, the flagged (synthetic index, real index, ratio) for the local annex only.
    """
    real = np.asarray(real, dtype=np.float32)
    synthetic = np.asarray(synthetic, dtype=np.float32)
    real_patients = np.asarray(real_patients, dtype=np.int64)
    real_sets = np.asarray(real_sets, dtype=np.int64)
    m = len(real)
    if real_patients.shape != (m,) or real_sets.shape != (m,):
        raise DataError("copy search: patient and set index must have one entry per real image")
    if len(np.unique(real_patients)) < 2:
        raise DataError("copy search: need real images of at least 2 patients to set the threshold")
    kw = {"device": device, "chunk": config.chunk}
    f_real = robust_features(real, config)
    f_warp = robust_features(real, config, warps=True)  # [M, K, D]
    k = f_warp.shape[1]
    f_warp = f_warp.reshape(m * k, -1)
    warp_owner = np.repeat(np.arange(m), k)
    warp_patient = real_patients[warp_owner]
    # Real-to-real scale: nearest image of another patient, under the same transforms.
    kk = min(len(f_warp) - k, max(1, config.candidates) * k)
    d_rr, i_rr = nearest(f_real, f_warp, k=kk, ref_groups=warp_patient, exclude_group=real_patients, **kw)
    f_syn = robust_features(synthetic, config)
    d_sr, i_sr = nearest(f_syn, f_warp, k=min(len(f_warp), max(1, config.candidates) * k), **kw)
    nn_real = warp_owner[i_sr[:, 0]]
    d_sr = d_sr[:, 0]
    d_rr = d_rr[:, 0]
    scale = np.minimum(d_rr, float(np.median(d_rr)))
    ratio = d_sr / np.maximum(scale[nn_real], 1e-12)
    registered = np.zeros(len(synthetic), dtype=bool)
    calibration = None
    if config.candidates > 0:
        # Registration also brings different patients closer: calibrate by how much, on a sample of
        # real images registered to their nearest images of other patients.
        with torch.no_grad():
            prep_real = _prep(torch.as_tensor(real), config)
            prep_syn = _prep(torch.as_tensor(synthetic), config)
        pick = np.linspace(0, m - 1, min(m, config.calibration_images)).astype(np.int64)
        d_cal, _ = _refine(prep_real[pick], prep_real, _candidates(i_rr[pick], warp_owner, config.candidates),
                           d_rr[pick], config)
        calibration = float(np.median(d_cal / np.maximum(d_rr[pick], 1e-12)))
        sel = np.nonzero(ratio <= config.register_below)[0]
        if len(sel):
            d_reg, nn_reg = _refine(prep_syn[sel], prep_real, _candidates(i_sr[sel], warp_owner, config.candidates),
                                    d_sr[sel], config)
            r_reg = d_reg / np.maximum(calibration * scale[nn_reg], 1e-12)
            better = r_reg < ratio[sel]
            ratio[sel[better]] = r_reg[better]
            nn_real[sel[better]] = nn_reg[better]
            registered[sel] = True
    d_px, i_px = nearest(synthetic, real, **kw)
    px_scale = max(float(np.median(nearest(real, real, ref_groups=real_patients, exclude_group=real_patients,
                                           **kw)[0][:, 0])), 1e-12)
    exact = d_px[:, 0] <= 1e-6 * px_scale
    flagged = (ratio <= config.ratio) | exact
    nn_real = np.where(exact, i_px[:, 0], nn_real)
    ratio = np.where(exact, 0.0, ratio)
    idx = np.nonzero(flagged)[0]
    by_set = {}
    for s, name in enumerate(SETS):
        sel = idx[real_sets[nn_real[idx]] == s]
        by_set[name] = {"images": int(len(sel)), "patients": int(len(np.unique(real_patients[nn_real[sel]])))}
    return {
        "space": "standardised, blurred and pooled images; minimum over small rotations, scalings and shifts",
        "transforms": int(k),
        "working_size": int(min(config.working_size, real.shape[-1])),
        "ratio_threshold": config.ratio,
        "n_synthetic": int(len(synthetic)),
        "n_real": int(m),
        "real_patients": int(len(np.unique(real_patients))),
        "real_by_set": {name: int((real_sets == s).sum()) for s, name in enumerate(SETS)},
        "count": int(len(idx)),
        "fraction": float(len(idx) / max(len(synthetic), 1)),
        "exact": int(exact.sum()),
        "patients": int(len(np.unique(real_patients[nn_real[idx]]))),
        "by_set": by_set,
        "real_to_real_median": float(np.median(d_rr)),
        "ratio_median": float(np.median(ratio)),
        "registered": int(registered.sum()),
        "registration_calibration": calibration,
        "ratio_min": float(ratio.min()) if len(ratio) else None,
        "_pairs": [(int(i), int(nn_real[i]), float(ratio[i])) for i in idx[np.argsort(ratio[idx])]],
    }

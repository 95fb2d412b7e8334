"""Several slices per sampled patient, in ONE clipped row (policy ``slices_per_patient``).

A Poisson-sampled patient contributes k of its own slices. In mode ``dpsgd`` their per-sample
gradients are averaged into one row *before* Opacus clips, so one patient is still one clipped row:
adding or removing a patient moves the clipped sum by at most C, the sampled Gaussian mechanism's
sensitivity, and the accounting (q = E / patients, sigma) is unchanged. Plain duplicated rows would
be clipped one by one and silently give a patient k * C of sensitivity (Opacus counts every row as
a sample); ``group_patient_rows`` is the one place where k rows become one.

Layout: real rows are patient-major, ``[patients, k, C, H, W]`` (``patient_rows``; shapes from the
run's ``ImageSpec``: a class condition is ``[K, 1, 1]``, none ``[0, 1, 1]``); the learner
flattens them to ``[patients * k, ...]`` for the forward pass, real rows first, fake rows after.

Augmentation (``slice_augment``): a random horizontal and vertical flip and an integer shift of up
to ``MAX_SHIFT`` pixels per axis (edges replicated, so a one-hot label map stays one-hot), the same
for a slice's label map and its image, drawn from the site's private generator.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from secgan.core.errors import PrivacyError

# largest integer shift per axis of an augmented slice, in pixels
MAX_SHIFT = 2


def _pick(n_slices: int, k: int, generator: np.random.Generator) -> np.ndarray:
    """k slice indices of one patient: distinct while it has that many, else with replacement."""
    if n_slices < 1:
        raise PrivacyError("a sampled patient has no slices")
    if k <= n_slices:
        return generator.choice(n_slices, size=k, replace=False)
    return generator.integers(n_slices, size=k)


def augment(img: np.ndarray, cond: np.ndarray, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random flip/shift, applied identically to one slice's image and label map ``[C, H, W]``."""
    flip_h, flip_v = bool(generator.integers(2)), bool(generator.integers(2))
    dy, dx = (int(v) for v in generator.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2))
    out = []
    for a in (img, cond):
        if flip_h:
            a = a[:, :, ::-1]
        if flip_v:
            a = a[:, ::-1, :]
        h, w = a.shape[1:]
        pad = np.pad(a, ((0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT)), mode="edge")
        y0, x0 = MAX_SHIFT - dy, MAX_SHIFT - dx
        out.append(np.ascontiguousarray(pad[:, y0:y0 + h, x0:x0 + w]))
    return out[0], out[1]


def patient_rows(
    dataset: Any,
    patients: Sequence[int],
    *,
    k: int,
    size: int,
    augmented: bool,
    generator: np.random.Generator,
    image: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(images, conds), ``[len(patients), k, *image_shape]`` and ``[len(patients), k, *cond_shape]``
    float32: k slices of each patient. ``image``: the run's ``ImageSpec`` (None: the brain spec at ``size``).

    k = 1 without augmentation is exactly ``dataset.sample_slices`` (same draws from ``generator``).
    """
    if k < 1:
        raise PrivacyError(f"slices_per_patient must be >= 1, got {k}")
    if not isinstance(generator, np.random.Generator):
        raise TypeError("generator must be a numpy.random.Generator")
    if image is None:
        from secgan.core.spec import ImageSpec

        image = ImageSpec(size=int(size))
    n = len(patients)
    if k == 1 and not augmented:
        img, cond = dataset.sample_slices([int(i) for i in patients], generator=generator)
        return (np.asarray(img, np.float32).reshape((n, 1) + image.image_shape),
                np.asarray(cond, np.float32).reshape((n, 1) + image.cond_shape))
    imgs = np.empty((n, k) + image.image_shape, dtype=np.float32)
    conds = np.empty((n, k) + image.cond_shape, dtype=np.float32)
    for row, p in enumerate(patients):
        p = int(p)
        pimg, pcond = dataset.images(p), dataset.conds(p)
        for j, sl in enumerate(_pick(int(pimg.shape[0]), k, generator)):
            a, c = pimg[int(sl)], pcond[int(sl)]
            if augmented:
                a, c = augment(a, c, generator) if image.spatial else (augment(a, a, generator)[0], c)
            imgs[row, j], conds[row, j] = a, c
    return imgs, conds


def group_patient_rows(params: Sequence[torch.nn.Parameter], *, patients: int, k: int, flat_grad_sample) -> int:
    """Rewrite every parameter's ``grad_sample`` from ``[patients * k + fakes, ...]`` rows to
    ``[patients + fakes, ...]``: the mean of each patient's k rows becomes that patient's one row;
    fake rows stay one row each. Returns the row count Opacus will clip.

    ``flat_grad_sample(p)`` is the optimiser's own reader (``DPOptimizer._get_flat_grad_sample``).
    """
    if k < 1 or patients < 0:
        raise PrivacyError(f"bad grouping: {patients} patients x {k} slices")
    real = patients * k
    rows = None
    for p in params:
        gs = flat_grad_sample(p)
        if gs.shape[0] < real:
            raise PrivacyError(f"per-sample gradients hold {gs.shape[0]} rows, fewer than {patients} patients x {k} slices")
        grouped = gs[:real].reshape(patients, k, *gs.shape[1:]).mean(dim=1)
        p.grad_sample = torch.cat([grouped, gs[real:]], dim=0)
        n = int(p.grad_sample.shape[0])
        if rows is not None and n != rows:
            raise PrivacyError("per-sample gradients disagree on the row count across parameters")
        rows = n
    return int(rows or 0)

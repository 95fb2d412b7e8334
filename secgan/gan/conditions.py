"""Condition sources: where the coordinator's conditions come from.

The condition's form is the run's :class:`~secgan.core.spec.ImageSpec` (``condition``). The brain
default is float32 ``[4, H, W]`` with channels ``brain, ncr, ed, et``: tumour channels disjoint,
tumour inside the brain, values in {0, 1}.

- ``procedural``: conditions drawn from priors alone, no patient data involved, which is why it
  is the default. By kind (:func:`build_condition_source`):

  - brain label maps (the brain spec): shape priors (an elliptical brain outline and a tumour
    made of nested irregular blobs, oedema > enhancing > necrosis), ``ProceduralConditions``;
  - instance/boundary maps (``background, nucleus, boundary``): random non-overlapping discs,
    ``ProceduralInstances``;
  - class labels: drawn from the spec's ``class_prior`` (uniform when empty) as one-hot
    ``[n, K, 1, 1]``, ``ClassConditions``;
  - none: the empty ``[n, 0, 1, 1]``, ``NoConditions``.

  A label map with other channels than the brain's has no procedural prior: use a bank.
- ``bank``: label maps from a folder the coordinator may legitimately hold (a public atlas or a
  consented set), validated on load.
- ``site``: the sites' own label maps; that source is provided by the sites over the protocol, so
  it cannot be built here.

Every random draw comes from the ``torch.Generator`` passed to ``draw``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from secgan.core.errors import ConfigError, DataError
from secgan.core.spec import COND_CHANNELS, INSTANCE_CHANNELS, ImageSpec, encode_condition
from secgan.gan.config import CONDITION_SOURCES

_HARMONICS = 4
# Shape priors, in units of the half field of view, fitted to the label statistics of the phantom's
# population (tumour-bearing 32 px slices of 60 sites x 3 patients; 3000 drawn maps; mean areas in
# pixels, drawn vs phantom): brain 571 vs 571, whole tumour 51.2 vs 49.6 (10th/50th/90th
# percentiles 18/41/102 vs 16/42/95), tumour core 10.7 vs 11.5, oedema 40.5 vs 38.1, slices with
# oedema but no core 32% vs 33%, core/whole-tumour ratio percentiles 0/0.17/0.38 vs 0/0.18/0.42.
# The first priors (brain semi-axes 0.55-0.85, oedema radius 0.08-0.32, enhancing fraction
# 0.45-0.75, always a core) drew 443 px brains and half the oedema; a segmenter trained on pairs
# drawn from them over-segmented healthy tissue. For real data, fit these to a public atlas or use
# a bank.
BRAIN_SEMI_AXES = ((0.72, 0.90), (0.80, 0.95))  # (x range, y range)
OEDEMA_RADIUS = (0.16, 0.44)  # log-uniform; radius of the 3-D oedema shell
ENHANCING_FRACTION = (0.45, 0.70)  # enhancing shell radius / oedema radius
CUT_HEIGHT = (0.0, 0.86)  # where the slice cuts the shells, in units of the oedema radius


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _blob_radius(theta: torch.Tensor, amp: float, g: torch.Generator) -> torch.Tensor:
    """Irregular boundary: 1 + sum of a few random angular harmonics, per sample. theta [n,H,W]."""
    n = theta.shape[0]
    out = torch.ones_like(theta)
    for k in range(2, 2 + _HARMONICS):
        a = (amp / (k - 1)) * torch.rand(n, generator=g)
        ph = 2 * math.pi * torch.rand(n, generator=g)
        out = out + a[:, None, None] * torch.cos(k * theta + ph[:, None, None])
    return out


class ProceduralConditions:
    """Synthetic brain + tumour label maps, no patient data involved."""

    name = "procedural"

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or not 8 <= size <= 1024:
            raise ConfigError(f"condition size must be an int in 8..1024, got {size!r}")
        self.size = size
        c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in (-1, 1)
        self._yy, self._xx = torch.meshgrid(c, c, indexing="ij")

    def draw(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        if not isinstance(generator, torch.Generator):
            raise TypeError("generator must be a torch.Generator")
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        g = generator
        xx, yy = self._xx[None], self._yy[None]
        # Brain: jittered, slightly rotated ellipse with a wobbly outline (also mimics slice level).
        cx, cy = _uniform(n, -0.06, 0.06, g), _uniform(n, -0.06, 0.06, g)
        ax, ay = _uniform(n, *BRAIN_SEMI_AXES[0], g), _uniform(n, *BRAIN_SEMI_AXES[1], g)
        rot = _uniform(n, -0.25, 0.25, g)
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
        cr, sr = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
        u, v = cr * dx + sr * dy, -sr * dx + cr * dy
        rho = torch.sqrt((u / ax[:, None, None]) ** 2 + (v / ay[:, None, None]) ** 2)
        brain = rho < _blob_radius(torch.atan2(v, u), 0.04, g)
        # Tumour centre inside the brain (at most 55% of the way to the edge).
        ang = _uniform(n, 0.0, 2 * math.pi, g)
        frac = 0.55 * torch.sqrt(torch.rand(n, generator=g))
        tx = cx + frac * torch.cos(ang) * ax * torch.cos(rot) - frac * torch.sin(ang) * ay * torch.sin(rot)
        ty = cy + frac * torch.cos(ang) * ax * torch.sin(rot) + frac * torch.sin(ang) * ay * torch.cos(rot)
        r_ed = torch.exp(_uniform(n, math.log(OEDEMA_RADIUS[0]), math.log(OEDEMA_RADIUS[1]), g))
        elong = _uniform(n, 0.75, 1.3, g)
        tdx, tdy = xx - tx[:, None, None], yy - ty[:, None, None]
        d = torch.sqrt((tdx / (r_ed * elong)[:, None, None]) ** 2 + (tdy / (r_ed / elong)[:, None, None]) ** 2)
        theta = torch.atan2(tdy, tdx)
        min_px = 1.5 / self.size  # keep sub-regions at least about a pixel wide
        f_et = torch.maximum(_uniform(n, *ENHANCING_FRACTION, g), (min_px / r_ed).clamp(max=0.9))
        has_ncr = torch.rand(n, generator=g) < 0.75
        f_ncr = f_et * _uniform(n, 0.35, 0.7, g)
        # The slice cuts the nested 3-D shells at height h (in units of the oedema radius): a shell of
        # radius f shows a disc of radius sqrt(f^2 - h^2), so slices near the tumour's top or bottom
        # hold oedema alone, as a third of the phantom's tumour slices do.
        h2 = _uniform(n, *CUT_HEIGHT, g) ** 2

        def shell(f: torch.Tensor) -> torch.Tensor:
            return torch.sqrt((f**2 - h2).clamp(min=0.0))[:, None, None]

        ed = (d < shell(torch.ones(n)) * _blob_radius(theta, 0.25, g)) & brain
        et = (d < shell(f_et) * _blob_radius(theta, 0.15, g)) & ed
        ncr = (d < shell(f_ncr) * _blob_radius(theta, 0.1, g)) & et & has_ncr[:, None, None]
        out = torch.zeros((n, len(COND_CHANNELS), self.size, self.size), dtype=torch.float32)
        out[:, 0] = (brain | ed).float()
        out[:, 1] = ncr.float()
        out[:, 2] = (ed & ~et).float()
        out[:, 3] = (et & ~ncr).float()
        return out


def _check_draw(n: int, generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError("generator must be a torch.Generator")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")


class ClassConditions:
    """Class labels drawn from a prior (the spec's ``prior``), as one-hot ``[n, K, 1, 1]``."""

    name = "procedural"

    def __init__(self, prior: tuple[float, ...]) -> None:
        if len(prior) < 2 or not all(p > 0 for p in prior):
            raise ConfigError(f"a class prior needs at least 2 positive frequencies, got {prior!r}")
        self.prior = torch.tensor(prior, dtype=torch.float64)

    def draw(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        _check_draw(n, generator)
        k = self.prior.numel()
        out = torch.zeros((n, k, 1, 1), dtype=torch.float32)
        if n:
            labels = torch.multinomial(self.prior, n, replacement=True, generator=generator)
            out[torch.arange(n), labels, 0, 0] = 1.0
        return out


class NoConditions:
    """Unconditional runs: the empty condition ``[n, 0, 1, 1]`` (nothing is drawn)."""

    name = "procedural"

    def draw(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        _check_draw(n, generator)
        return torch.zeros((n, 0, 1, 1), dtype=torch.float32)


# nuclei per tile (uniform) and their radius in pixels (uniform), for the procedural instance maps
NUCLEI_PER_TILE = (4, 24)
NUCLEUS_RADIUS = (1.5, 4.0)


class ProceduralInstances:
    """Instance/boundary maps ``[n, 3, H, W]`` (``INSTANCE_CHANNELS``: background, nucleus interior,
    boundary; one-hot per pixel) from random discs that do not overlap (a disc overlapping an
    earlier one is dropped). The boundary is the disc's pixels with a 4-neighbour outside it."""

    name = "procedural"

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or not 8 <= size <= 1024:
            raise ConfigError(f"condition size must be an int in 8..1024, got {size!r}")
        self.size = size
        c = torch.arange(size, dtype=torch.float32) + 0.5
        self._yy, self._xx = torch.meshgrid(c, c, indexing="ij")

    def draw(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        _check_draw(n, generator)
        s = self.size
        out = torch.zeros((n, len(INSTANCE_CHANNELS), s, s), dtype=torch.float32)
        lo, hi = NUCLEI_PER_TILE
        for i in range(n):
            count = int(torch.randint(lo, hi + 1, (1,), generator=generator))
            r = _uniform(count, *NUCLEUS_RADIUS, generator)
            cy, cx = _uniform(count, 0.0, float(s), generator), _uniform(count, 0.0, float(s), generator)
            taken = torch.zeros((s, s), dtype=torch.bool)
            nucleus = torch.zeros((s, s), dtype=torch.bool)
            boundary = torch.zeros((s, s), dtype=torch.bool)
            for j in range(count):
                disc = (self._yy - cy[j]) ** 2 + (self._xx - cx[j]) ** 2 < r[j] ** 2
                if not bool(disc.any()) or bool((disc & taken).any()):
                    continue
                taken |= disc
                pad = torch.nn.functional.pad(disc[None, None].float(), (1, 1, 1, 1))[0, 0] > 0
                inner = disc & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
                nucleus |= inner
                boundary |= disc & ~inner
            out[i, 1] = nucleus.float()
            out[i, 2] = boundary.float()
            out[i, 0] = (~(nucleus | boundary)).float()
        return out


class BankConditions:
    """Label maps from a folder: ``conds.safetensors`` (tensor ``conds`` [N,4,H,W]) or seg NIfTIs.

    For NIfTIs, every ``*_seg.nii.gz`` / ``*_seg.nii`` under the folder is read with the BraTS reader's
    checks; axial slices with tumour are kept. The brain channel comes from a sibling
    ``*_brain.nii[.gz]`` mask when present, else from the brain-bearing voxels of the label map's
    field of view approximated by an ellipse inscribed in it (documented approximation).
    """

    name = "bank"

    def __init__(self, folder: Path, size: int, *, max_conditions: int = 200_000) -> None:
        if not isinstance(size, int) or not 8 <= size <= 1024:
            raise ConfigError(f"condition size must be an int in 8..1024, got {size!r}")
        self.folder = Path(folder)
        self.size = size
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: condition bank folder is missing")
        st = self.folder / "conds.safetensors"
        conds = _load_safetensors_bank(st) if st.is_file() else _load_nifti_bank(self.folder)
        if conds.shape[0] == 0:
            raise DataError(f"{self.folder}: condition bank holds no label map")
        if conds.shape[0] > max_conditions:
            raise DataError(f"{self.folder}: condition bank holds {conds.shape[0]} maps, limit {max_conditions}")
        self._conds = _resize_conds(conds, size)

    def __len__(self) -> int:
        return int(self._conds.shape[0])

    def draw(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        if not isinstance(generator, torch.Generator):
            raise TypeError("generator must be a torch.Generator")
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        idx = torch.randint(len(self), (n,), generator=generator)
        return self._conds[idx].clone()


def validate_conditions(conds: torch.Tensor, *, where: str) -> torch.Tensor:
    """Refuse anything that is not a valid condition batch; returns it as float32."""
    if not isinstance(conds, torch.Tensor) or conds.ndim != 4 or conds.shape[1] != len(COND_CHANNELS):
        raise DataError(f"{where}: conditions must be a tensor [N, 4, H, W], got {getattr(conds, 'shape', type(conds))}")
    if conds.dtype not in (torch.float32, torch.float64, torch.float16, torch.uint8, torch.bool):
        raise DataError(f"{where}: conditions dtype {conds.dtype} not allowed")
    c = conds.to(torch.float32)
    if not torch.all((c == 0) | (c == 1)):
        raise DataError(f"{where}: condition values must be 0 or 1")
    if torch.any(c[:, 1:].sum(dim=1) > 1):
        raise DataError(f"{where}: tumour channels ncr, ed, et overlap")
    if torch.any((c[:, 1:].amax(dim=1) > 0) & (c[:, 0] == 0)):
        raise DataError(f"{where}: tumour outside the brain channel")
    return c


def _load_safetensors_bank(path: Path) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({type(exc).__name__})") from None
    if set(tensors) != {"conds"}:
        raise DataError(f"{path}: expected exactly one tensor named 'conds', found {sorted(tensors)[:5]}")
    conds = validate_conditions(tensors["conds"], where=str(path))
    if conds.shape[2] != conds.shape[3]:
        raise DataError(f"{path}: label maps must be square, got {tuple(conds.shape[2:])}")
    return conds


def _load_nifti_bank(folder: Path) -> torch.Tensor:
    from secgan.data.brats import open_checked, read_labels

    files = sorted(p for p in folder.rglob("*_seg.nii*") if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        raise DataError(f"{folder}: no conds.safetensors and no *_seg.nii.gz label maps")
    out = []
    for path in files:
        seg = read_labels(path, open_checked(path))
        stem = path.name[: path.name.index("_seg.nii")]
        brain_path = next((q for q in (path.with_name(f"{stem}_brain.nii.gz"), path.with_name(f"{stem}_brain.nii")) if q.is_file()), None)
        if brain_path is not None:
            img = open_checked(brain_path)
            if tuple(img.shape) != seg.shape:
                raise DataError(f"{brain_path}: shape {tuple(img.shape)} differs from the label map {seg.shape}")
            brain = np.asarray(img.dataobj)
            if not np.all(np.isin(brain, (0, 1))):
                raise DataError(f"{brain_path}: brain mask values must be 0 or 1")
            brain = brain.astype(bool)
        else:
            brain = np.broadcast_to(_inscribed_ellipse(seg.shape[0], seg.shape[1])[:, :, None], seg.shape)
        side = max(seg.shape[0], seg.shape[1])
        for z in np.flatnonzero((seg > 0).any(axis=(0, 1))):
            s2, b2 = _pad_square(seg[:, :, z], side), _pad_square(brain[:, :, z], side)
            out.append(encode_condition(s2, b2))
    return torch.from_numpy(np.stack(out)) if out else torch.zeros((0, 4, 8, 8))


def procedural_source(image: ImageSpec):
    """The procedural source of ``image``'s condition kind (module doc); ConfigError when none fits."""
    if image.condition == "class":
        return ClassConditions(image.prior)
    if image.condition == "none":
        return NoConditions()
    if image.condition == "instances":
        if image.cond_channels != len(INSTANCE_CHANNELS):
            raise ConfigError(f"procedural instance maps have {len(INSTANCE_CHANNELS)} channels "
                              f"({', '.join(INSTANCE_CHANNELS)}); image.cond_channels is {image.cond_channels}")
        return ProceduralInstances(image.size)
    if image.cond_names != COND_CHANNELS:
        raise ConfigError(f"procedural label maps are brain label maps ({', '.join(COND_CHANNELS)}); "
                          f"image.cond_names is {', '.join(image.cond_names)}: use a bank of label maps")
    return ProceduralConditions(image.size)


def _inscribed_ellipse(h: int, w: int) -> np.ndarray:
    y = (np.arange(h) + 0.5) / h * 2 - 1
    x = (np.arange(w) + 0.5) / w * 2 - 1
    return (y[:, None] / 0.9) ** 2 + (x[None, :] / 0.9) ** 2 < 1.0


def _pad_square(a: np.ndarray, side: int) -> np.ndarray:
    ph, pw = side - a.shape[0], side - a.shape[1]
    return np.pad(a, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))


def _resize_conds(conds: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour resize: every channel is sampled at the same points, so disjointness and
    tumour-inside-brain survive."""
    if conds.shape[-1] == size and conds.shape[-2] == size:
        return conds.contiguous()
    r = torch.nn.functional.interpolate(conds, size=(size, size), mode="nearest-exact")
    return r.contiguous()


def build_condition_source(name: str, *, size: int, bank_dir: Path | None = None, image: ImageSpec | None = None):
    """The condition source called ``name`` ("procedural" or "bank") for ``image``'s condition kind
    (the brain spec when None); "site" is refused here."""
    image = image if image is not None else ImageSpec(size=size)
    if image.size != size:
        raise ConfigError(f"condition size {size} differs from image.size = {image.size}")
    if name == "procedural":
        return procedural_source(image)
    if name == "bank" and image.cond_names != COND_CHANNELS:
        raise ConfigError(f"condition source 'bank' holds brain label maps ({', '.join(COND_CHANNELS)}); "
                          f"image.condition is {image.condition!r} with {image.cond_channels} channels: use 'procedural'")
    if name == "bank":
        if bank_dir is None:
            raise ConfigError("condition source 'bank' needs bank_dir (a folder of label maps)")
        return BankConditions(Path(bank_dir), size)
    if name == "site":
        raise ConfigError(
            "condition source 'site' cannot be built at the coordinator: the sites provide their own "
            "label maps over the protocol (and a site whose policy forbids it refuses)"
        )
    raise ConfigError(f"unknown condition source {name!r}; choose one of {', '.join(CONDITION_SOURCES)}")
